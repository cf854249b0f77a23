-- The per-tenant advisory lock key, shared by enter() (shared, for writes) and the mover's fence (exclusive).
CREATE FUNCTION switchyard.tenant_lock_key(tenant uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog
RETURN hashtextextended('switchyard.tenant:' || tenant::text, 0);
--> statement-breakpoint
-- enter(): the first statement of every router transaction (invariant 2). It checks that this shard owns
-- the tenant at the router's epoch, takes the shared per-tenant lock for writes (the fence waits for those
-- to drain), and only then sets the RLS context, local to the transaction. A stale route raises SY001.
CREATE FUNCTION switchyard.enter(tenant uuid, route_epoch integer, for_write boolean) RETURNS void
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
END
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.enter(uuid, integer, boolean) FROM PUBLIC;
