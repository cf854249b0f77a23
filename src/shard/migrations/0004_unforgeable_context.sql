-- Issue 12: isolation is a property of the shard, not of the router's statement list (invariant 3).
-- Before this, RLS trusted `app.current_tenant`, a setting any role can set (SET, set_config, UPDATE
-- pg_settings), and enter() trusted any caller. Now:
--   * enter() requires a capability only routers hold (the directory keeps it; this shard keeps its
--     SHA-256), so SQL run as the router's role cannot enter another tenant;
--   * enter() mints a tenant context that is MAC'd with a key only this shard knows, bound to this
--     backend and this transaction; RLS policies ask switchyard.current_tenant(), which checks the MAC,
--     so setting the context by hand is useless (a forged one raises SY003);
--   * enter() resets what a previous request could have left in the session (settings, listens,
--     held cursors, sequence state) before it enters the tenant;
--   * the catalog functions and views that set session state, take advisory locks (the fence's), signal
--     other backends, or show other sessions' SQL are revoked from PUBLIC.
-- Keys: `capability_sha256` is written by `switchyard migrate` from the directory's capability;
-- `hmac_inner`/`hmac_outer` are HMAC-SHA-256's padded keys (key XOR ipad / opad), made once per shard
-- by `migrate` and never shown to anyone but this schema's owner. Replicas get both by replication.
CREATE TABLE switchyard.router_secret (
  id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1),
  capability_sha256 bytea NOT NULL,
  hmac_inner bytea NOT NULL CHECK (length(hmac_inner) = 64),
  hmac_outer bytea NOT NULL CHECK (length(hmac_outer) = 64)
);
--> statement-breakpoint
REVOKE ALL ON switchyard.router_secret FROM PUBLIC;
--> statement-breakpoint
-- HMAC-SHA-256 of the context: (tenant, this backend, this transaction's start, limits). A plain SQL body,
-- bound when created and inlined where it is called: no search_path, no call overhead. Not granted:
-- without the pads it proves nothing anyway.
CREATE FUNCTION switchyard.context_mac(tenant text, limits text, inner_pad bytea, outer_pad bytea) RETURNS text
LANGUAGE sql STABLE PARALLEL RESTRICTED
RETURN encode(sha256(outer_pad || sha256(inner_pad || convert_to(
  tenant || '/' || pg_backend_pid() || '/' || (extract(epoch FROM transaction_timestamp()) * 1000000)::bigint
  || '/' || limits, 'UTF8'))), 'hex');
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.context_mac(text, text, bytea, bytea) FROM PUBLIC;
--> statement-breakpoint
-- The verified context of this transaction: (tenant, limits) when enter() made it here and now, nulls
-- when there is none, SY003 when one is there but was not made by enter() in this transaction.
-- Bound to the backend and the transaction's start, so a context left in the session (SET without LOCAL)
-- or copied from another transaction never verifies. Parallel restricted: a worker has another pid.
-- Not granted to anyone: current_tenant() and the quota trigger call it as its owner.
CREATE FUNCTION switchyard.verified_context(OUT tenant uuid, OUT limits jsonb)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  context text := current_setting('switchyard.context', true);
  limits_text text := coalesce(current_setting('switchyard.tenant_limits', true), '');
  tenant_text text;
  inner_pad bytea;
  outer_pad bytea;
BEGIN
  IF context IS NULL OR context = '' THEN
    RETURN;
  END IF;
  tenant_text := split_part(context, '/', 1);
  SELECT s.hmac_inner, s.hmac_outer INTO inner_pad, outer_pad FROM switchyard.router_secret s WHERE s.id = 1;
  IF inner_pad IS NULL
     OR split_part(context, '/', 2) <> switchyard.context_mac(tenant_text, limits_text, inner_pad, outer_pad) THEN
    RAISE EXCEPTION 'the tenant context was not set by switchyard.enter() in this transaction'
      USING ERRCODE = 'SY003';
  END IF;
  tenant := tenant_text::uuid;
  limits := nullif(limits_text, '')::jsonb;
END
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.verified_context() FROM PUBLIC;
--> statement-breakpoint
-- What RLS policies compare tenant_id with, as `(select switchyard.current_tenant())` so it runs once
-- per statement (an InitPlan), not once per row. NULL without a context: the router's role sees nothing.
CREATE FUNCTION switchyard.current_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN (switchyard.verified_context()).tenant;
END
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.current_tenant() FROM PUBLIC;
--> statement-breakpoint
DROP FUNCTION switchyard.enter(uuid, integer, boolean, jsonb);
--> statement-breakpoint
-- enter(): the first statement of every router transaction (invariant 2), after BEGIN.
CREATE FUNCTION switchyard.enter(tenant uuid, route_epoch integer, for_write boolean, limits jsonb, capability text)
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
-- Quota turns: one row per (tenant, limit) that every quota'd insert updates, instead of an advisory
-- lock. Under READ COMMITTED a second insert waits for the first and then counts what it committed;
-- under REPEATABLE READ or SERIALIZABLE, whose snapshot predates the wait, updating a row that a
-- transaction committed after that snapshot fails with 40001, so no two inserts can both take the last
-- slot at any isolation level. Unlogged: it holds no data worth a WAL record, and triggers fire only on
-- primaries.
CREATE UNLOGGED TABLE switchyard.quota_turns (
  tenant_id uuid NOT NULL,
  limit_name text NOT NULL,
  turns bigint NOT NULL DEFAULT 1,
  PRIMARY KEY (tenant_id, limit_name)
);
--> statement-breakpoint
REVOKE ALL ON switchyard.quota_turns FROM PUBLIC;
--> statement-breakpoint
-- A BEFORE INSERT trigger on a tenant table: EXECUTE FUNCTION switchyard.enforce_quota('<limit name>'
-- [, '<timestamp column>' for a per-day limit]). The limits are the verified context's (enter() got them
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
--> statement-breakpoint
-- pg_stat_statements shows every session's SQL to every role of the same name: out of the tenant
-- schema it was created in, into a schema only monitoring roles may use.
CREATE SCHEMA IF NOT EXISTS switchyard_stats;
--> statement-breakpoint
REVOKE ALL ON SCHEMA switchyard_stats FROM PUBLIC;
--> statement-breakpoint
GRANT USAGE ON SCHEMA switchyard_stats TO pg_read_all_stats;
--> statement-breakpoint
ALTER EXTENSION pg_stat_statements SET SCHEMA switchyard_stats;
--> statement-breakpoint
-- What no router session may do to the shard's other sessions, whatever SQL reaches it. Revoked from
-- PUBLIC (a grant to PUBLIC cannot be taken from one role); superusers keep them, and monitoring roles
-- (pg_read_all_stats, pg_monitor) get the statistics back.
DO $$
DECLARE
  item record;
BEGIN
  FOR item IN
    SELECT p.oid::regprocedure AS fn,
           -- statistics readers that PUBLIC had: monitoring roles keep them
           has_function_privilege('public', p.oid, 'EXECUTE')
             AND (p.proname LIKE 'pg\_stat\_get\_%' OR p.proname IN ('pg_stat_have_stats', 'pg_lock_status',
               'pg_prepared_statement', 'pg_cursor', 'pg_prepared_xact', 'pg_blocking_pids',
               'pg_safe_snapshot_blocking_pids', 'pg_get_replication_slots', 'pg_get_publication_tables',
               'pg_notification_queue_usage', 'pg_relation_size', 'pg_total_relation_size', 'pg_table_size',
               'pg_indexes_size', 'pg_database_size', 'pg_tablespace_size')) AS statistics
    FROM pg_proc p
    WHERE p.pronamespace = 'pg_catalog'::regnamespace
      AND (p.proname LIKE 'pg\_stat\_%'
           OR p.proname LIKE '%advisory%'
           OR p.proname LIKE 'lo\_%' OR p.proname IN ('loread', 'lowrite')
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
             'pg_get_replication_slots', 'pg_get_publication_tables'))
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', item.fn);
    IF item.statistics THEN
      EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO pg_read_all_stats', item.fn);
    END IF;
  END LOOP;
  FOR item IN
    SELECT c.oid::regclass AS rel, has_table_privilege('public', c.oid, 'SELECT') AS readable
    FROM pg_class c
    WHERE c.relnamespace = 'pg_catalog'::regnamespace AND c.relkind IN ('r', 'v')
      AND (c.relname LIKE 'pg\_stat%' OR c.relname IN (
        'pg_locks', 'pg_prepared_statements', 'pg_cursors', 'pg_prepared_xacts', 'pg_replication_slots',
        'pg_publication', 'pg_publication_rel', 'pg_publication_namespace', 'pg_publication_tables',
        'pg_largeobject_metadata'))
  LOOP
    EXECUTE format('REVOKE SELECT ON TABLE %s FROM PUBLIC', item.rel);
    IF item.readable THEN
      EXECUTE format('GRANT SELECT ON TABLE %s TO pg_read_all_stats', item.rel);
    END IF;
  END LOOP;
  -- UPDATE pg_settings is set_config() for every setting; reading one's own settings stays allowed.
  REVOKE UPDATE ON pg_catalog.pg_settings FROM PUBLIC;
  -- Temporary objects would let a role create functions (and their SET clauses): none for PUBLIC.
  -- (`switchyard migrate` also takes TEMPORARY and CREATE from the router's role and PUBLIC on every
  -- tenant schema.)
  EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;
