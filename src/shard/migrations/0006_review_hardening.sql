-- Issue 12, adversarial review: what SQL run as the router's role (statement policy off) could still do.
--   * libxml2 evaluates XPath without checking for interrupts: one xpath() call can run for minutes through
--     cancel, statement_timeout and pg_terminate_backend. currtid2() follows any row's update chain
--     without RLS (other tenants' TIDs). Revoked from PUBLIC, with every overload.
--   * `seed` survives RESET ALL and a rollback (GUC_NO_RESET_ALL; setseed() takes effect at once): a
--     request's SET seed chose the next request's random(). enter() now reseeds from strong randomness.
--   * max_appointments_per_day counted INSERTs only: an UPDATE moved rows into a full day. enforce_quota()
--     now also works as a BEFORE UPDATE trigger (the tenant schema declares it).

-- The catalog functions no router session may execute: 0004's list and this review's. One list, in the
-- shard: this migration revokes what it returns and `switchyard doctor` checks the router's role against
-- it, so the two cannot drift. A later migration that closes more replaces it and revokes again.
-- Superusers keep them all; monitoring roles got the statistics back in 0004.
CREATE FUNCTION switchyard.revoked_catalog_functions() RETURNS SETOF regprocedure
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT p.oid::regprocedure
  FROM pg_proc p
  WHERE p.pronamespace = 'pg_catalog'::regnamespace
    AND (p.proname LIKE 'pg\_stat\_%'
         OR p.proname LIKE '%advisory%'
         OR p.proname LIKE 'lo\_%' OR p.proname IN ('loread', 'lowrite')
         -- tuple identifiers of rows RLS hides: currtid2(text, tid) follows any row's update chain
         OR p.proname LIKE 'currtid%'
         OR p.proname IN (
           -- session state
           'set_config', 'setseed',
           -- other sessions: their SQL, locks, prepared statements and cursors; signals to them
           'pg_lock_status', 'pg_prepared_statement', 'pg_cursor', 'pg_prepared_xact', 'pg_blocking_pids',
           'pg_safe_snapshot_blocking_pids', 'pg_isolation_test_session_is_blocked',
           'pg_cancel_backend', 'pg_terminate_backend', 'pg_notify', 'pg_notification_queue_usage',
           -- what an earlier request left listening on this pooled session
           'pg_listening_channels',
           -- other tenants' volumes and activity, shard-wide
           'pg_relation_size', 'pg_total_relation_size', 'pg_table_size', 'pg_indexes_size',
           'pg_database_size', 'pg_tablespace_size', 'pg_xact_status', 'txid_status',
           'pg_xact_commit_timestamp', 'pg_xact_commit_timestamp_origin', 'pg_last_committed_xact',
           -- moves in progress name the tenants they move
           'pg_get_replication_slots', 'pg_get_publication_tables',
           -- XPath in libxml2, which never checks for a cancel (XMLEXISTS is a call of xmlexists();
           -- XMLTABLE is an executor node, not a function: the router's policy refuses it)
           'xpath', 'xpath_exists', 'xmlexists'))
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.revoked_catalog_functions() FROM PUBLIC;
--> statement-breakpoint
DO $$
DECLARE
  fn regprocedure;
BEGIN
  FOR fn IN SELECT * FROM switchyard.revoked_catalog_functions() LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
  END LOOP;
END
$$;
--> statement-breakpoint
-- enter() as 0004 made it, and a new seed for random() after the reset (see there).
CREATE OR REPLACE FUNCTION switchyard.enter(tenant uuid, route_epoch integer, for_write boolean, limits jsonb, capability text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  owned_epoch integer;
  owned_state text;
  expected bytea;
  inner_pad bytea;
  outer_pad bytea;
  limits_text text := coalesce(limits::text, '');
BEGIN
  SELECT s.capability_sha256, s.hmac_inner, s.hmac_outer INTO expected, inner_pad, outer_pad
    FROM switchyard.router_secret s WHERE s.id = 1;
  IF capability IS NULL OR expected IS NULL OR sha256(convert_to(capability, 'UTF8')) <> expected THEN
    RAISE EXCEPTION 'switchyard.enter: the router capability is not valid'
      USING ERRCODE = '42501', HINT = 'routers read it from the directory; `switchyard migrate` gives it to every shard';
  END IF;
  IF tenant IS NULL OR route_epoch IS NULL OR for_write IS NULL THEN
    RAISE EXCEPTION 'switchyard.enter needs a tenant, an epoch and a write flag' USING ERRCODE = '22004';
  END IF;
  -- Whatever an earlier request left in this pooled session goes before this tenant sees it: every
  -- setting back to what the session started with (the router's startup parameters), listens, held
  -- cursors, sequence state. (Prepared statements a client made itself cannot be told from the router's
  -- cheaply: the router closes a connection on which anything but DML ran.)
  RESET ALL;
  EXECUTE 'UNLISTEN *';
  EXECUTE 'CLOSE ALL'; -- (plpgsql's own CLOSE takes a cursor variable)
  EXECUTE 'DISCARD SEQUENCES';
  -- RESET ALL leaves `seed` (GUC_NO_RESET_ALL), and a rolled-back SET seed has already reseeded random():
  -- a new seed from 52 bits of a version 4 UUID (pg_strong_random; its 13th hex digit is the version),
  -- as a double in [-1, 1), so no earlier request chose this one's random() sequence.
  PERFORM setseed(('x' || left(u, 12) || substr(u, 14, 1))::bit(52)::bigint::float8 / 2251799813685248 - 1)
    FROM (SELECT replace(gen_random_uuid()::text, '-', '') AS u) AS strong;
  IF for_write THEN
    PERFORM pg_advisory_xact_lock_shared(switchyard.tenant_lock_key(tenant));
  END IF;
  -- In READ COMMITTED this reads the latest committed ownership even after waiting on the fence. Under
  -- REPEATABLE READ the snapshot predates the wait, so lock the row: a cutover that committed meanwhile
  -- then fails the transaction (40001) instead of letting a write land behind the fence.
  IF for_write AND current_setting('transaction_isolation') <> 'read committed' THEN
    SELECT o.epoch, o.state INTO owned_epoch, owned_state
      FROM switchyard.tenant_ownership o WHERE o.tenant_id = enter.tenant FOR SHARE;
  ELSE
    SELECT o.epoch, o.state INTO owned_epoch, owned_state
      FROM switchyard.tenant_ownership o WHERE o.tenant_id = enter.tenant;
  END IF;
  IF owned_state IS NULL
     OR owned_epoch <> route_epoch
     OR owned_state IN ('moved', 'incoming')
     OR (for_write AND owned_state = 'frozen') THEN
    -- No epoch in the message: what this shard holds is the directory's business, not the caller's.
    RAISE EXCEPTION 'stale route: shard does not serve tenant % at epoch %', tenant, route_epoch
      USING ERRCODE = 'SY001';
  END IF;
  -- The context: the tenant and a MAC over (tenant, backend, transaction start, limits). Local to this
  -- transaction; verified by switchyard.verified_context() wherever it is read.
  PERFORM set_config('switchyard.tenant_limits', limits_text, true);
  PERFORM set_config('switchyard.context',
    tenant::text || '/' || switchyard.context_mac(tenant::text, limits_text, inner_pad, outer_pad), true);
END
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.enter(uuid, integer, boolean, jsonb, text) FROM PUBLIC;
--> statement-breakpoint
-- A BEFORE INSERT trigger on a tenant table: EXECUTE FUNCTION switchyard.enforce_quota('<limit name>'
-- [, '<timestamp column>' for a per-day limit]); for a per-day limit also BEFORE UPDATE OF that column
-- (an UPDATE that moves a row to another UTC day counts that day as an insert would; one within its day,
-- or of a limit without a day, changes no count). The limits are the verified context's (enter() got them
-- from the router, which got them from the directory): no context (an admin session, the mover) means no
-- check. SECURITY DEFINER: the router's role may not touch the turn rows itself. Per-day limits count
-- the UTC day of the new row. Logical replication's apply does not fire triggers: moves never trip quotas.
CREATE OR REPLACE FUNCTION switchyard.enforce_quota() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  quota text := TG_ARGV[0];
  day_column text := TG_ARGV[1];
  context record;
  allowed bigint;
  used bigint;
  day timestamptz;
  same_day boolean;
BEGIN
  SELECT * INTO context FROM switchyard.verified_context();
  -- A row of another tenant is refused by RLS's WITH CHECK right after this trigger.
  IF context.tenant IS NULL OR NEW.tenant_id IS DISTINCT FROM context.tenant THEN
    RETURN NEW;
  END IF;
  allowed := (context.limits ->> quota)::bigint;
  IF allowed IS NULL THEN
    RETURN NEW;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    IF day_column IS NULL THEN
      RETURN NEW;
    END IF;
    EXECUTE format('select date_trunc(''day'', ($1).%1$I, ''UTC'') is not distinct from date_trunc(''day'', ($2).%1$I, ''UTC'')',
                   day_column)
      INTO same_day USING NEW, OLD;
    IF same_day THEN
      RETURN NEW;
    END IF;
  END IF;
  -- Every insert (and move to another day) takes this turn first, so concurrent ones count in turn.
  INSERT INTO switchyard.quota_turns AS q (tenant_id, limit_name) VALUES (NEW.tenant_id, quota)
    ON CONFLICT (tenant_id, limit_name) DO UPDATE SET turns = q.turns + 1;
  IF day_column IS NULL THEN
    EXECUTE format('select count(*) from %s where tenant_id = $1', TG_RELID::regclass) INTO used USING NEW.tenant_id;
  ELSE
    EXECUTE format('select date_trunc(''day'', ($1).%I, ''UTC'')', day_column) INTO day USING NEW;
    EXECUTE format('select count(*) from %s where tenant_id = $1 and %I >= $2 and %I < $2 + interval ''1 day''',
                   TG_RELID::regclass, day_column, day_column)
      INTO used USING NEW.tenant_id, day;
  END IF;
  IF used >= allowed THEN
    RAISE EXCEPTION 'quota exceeded: % is % for tenant %', quota, allowed, NEW.tenant_id
      USING ERRCODE = 'SY002',
            DETAIL = format('%s rows already%s', used,
                            CASE WHEN day_column IS NULL THEN '' ELSE format(' on %s', day::date) END),
            HINT = 'raise the tenant''s limit with `switchyard tenants set-limits`';
  END IF;
  RETURN NEW;
END
$$;
