-- enter() gains the tenant's limits, so row quotas are enforced on the shard inside the tenant's own
-- transaction, whatever the client sends. Limits come from the directory with every route: they travel
-- with the tenant when it moves.
DROP FUNCTION switchyard.enter(uuid, integer, boolean);
--> statement-breakpoint
CREATE FUNCTION switchyard.enter(tenant uuid, route_epoch integer, for_write boolean, limits jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  owned_epoch integer;
  owned_state text;
BEGIN
  IF tenant IS NULL OR route_epoch IS NULL OR for_write IS NULL THEN
    RAISE EXCEPTION 'switchyard.enter needs a tenant, an epoch and a write flag' USING ERRCODE = '22004';
  END IF;
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
    RAISE EXCEPTION 'stale route: shard does not serve tenant % at epoch %', tenant, route_epoch
      USING ERRCODE = 'SY001',
            DETAIL = format('ownership here: state=%s epoch=%s', coalesce(owned_state, 'none'), coalesce(owned_epoch::text, 'none'));
  END IF;
  PERFORM set_config('app.current_tenant', tenant::text, true);
  -- The tenant's limits (config defaults merged with its directory overrides) for the quota triggers.
  PERFORM set_config('switchyard.tenant_limits', coalesce(limits::text, ''), true);
END
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.enter(uuid, integer, boolean, jsonb) FROM PUBLIC;
--> statement-breakpoint
-- A BEFORE INSERT trigger on a tenant table: EXECUTE FUNCTION switchyard.enforce_quota('<limit name>'
-- [, '<timestamp column>' for a per-day limit]). No limit set (e.g. an admin session) means no check.
-- Inserts of one tenant into one quota'd table take turns (an advisory lock), so two concurrent
-- inserts can never both take the last slot. Per-day limits count the UTC day of the new row.
-- Logical replication's apply does not fire triggers, so moving a tenant never trips its quotas.
CREATE FUNCTION switchyard.enforce_quota() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  limit_name text := TG_ARGV[0];
  day_column text := TG_ARGV[1];
  allowed bigint;
  used bigint;
  day timestamptz;
BEGIN
  allowed := (nullif(current_setting('switchyard.tenant_limits', true), '')::jsonb ->> limit_name)::bigint;
  IF allowed IS NULL THEN
    RETURN NEW;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('switchyard.quota:' || NEW.tenant_id::text || ':' || limit_name, 0));
  IF day_column IS NULL THEN
    EXECUTE format('select count(*) from %s where tenant_id = $1', TG_RELID::regclass) INTO used USING NEW.tenant_id;
  ELSE
    EXECUTE format('select date_trunc(''day'', ($1).%I, ''UTC'')', day_column) INTO day USING NEW;
    EXECUTE format('select count(*) from %s where tenant_id = $1 and %I >= $2 and %I < $2 + interval ''1 day''',
                   TG_RELID::regclass, day_column, day_column)
      INTO used USING NEW.tenant_id, day;
  END IF;
  IF used >= allowed THEN
    RAISE EXCEPTION 'quota exceeded: % is % for tenant %', limit_name, allowed, NEW.tenant_id
      USING ERRCODE = 'SY002',
            DETAIL = format('%s rows already%s', used,
                            CASE WHEN day_column IS NULL THEN '' ELSE format(' on %s', day::date) END),
            HINT = 'raise the tenant''s limit with `switchyard tenants set-limits`';
  END IF;
  RETURN NEW;
END
$$;
