-- Issue 12: exactly-once retries. A write sent with an Idempotency-Key claims the key in its own
-- transaction (right after enter()) and stores its results there before COMMIT, so the key exists exactly
-- when the write committed. A retry with the same key finds it and gets the first answer back instead of
-- running again. The table is a tenant table of the shard (tenant_id leads the primary key, RLS forced):
-- the mover copies, verifies and deletes it with the tenant's other rows, so a retry finds its key across
-- a move. Only these functions touch it; the router's role has no privilege on the table itself.
CREATE TABLE switchyard.idempotency_keys (
  tenant_id uuid NOT NULL,
  key text NOT NULL,
  -- SHA-256 of what was asked (protocol, statements, parameters): a key reused for another request is refused.
  request_sha256 text NOT NULL,
  -- The statements' results as the router got them; NULL while the write runs, or when they were too large to keep.
  results jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, key)
);
--> statement-breakpoint
ALTER TABLE switchyard.idempotency_keys ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
ALTER TABLE switchyard.idempotency_keys FORCE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY tenant_isolation ON switchyard.idempotency_keys
  USING (tenant_id = (SELECT switchyard.current_tenant()))
  WITH CHECK (tenant_id = (SELECT switchyard.current_tenant()));
--> statement-breakpoint
REVOKE ALL ON switchyard.idempotency_keys FROM PUBLIC;
--> statement-breakpoint
-- In the write's transaction, after enter(): the key is new (claimed now, by this transaction), or it
-- raises SY004 (a write with this key and request committed: replay its results) or SY005 (the key was
-- used for another request). A concurrent first request with the key is waited for: its commit makes
-- this one a replay, its rollback leaves the key to this one. Keys older than `ttl_seconds` are expired:
-- the request runs again. Now and then a claim forgets the tenant's expired keys.
CREATE FUNCTION switchyard.claim_idempotency_key(idempotency_key text, request_hash text, ttl_seconds integer)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tenant uuid := switchyard.current_tenant();
  earlier record;
  expired timestamptz := now() - make_interval(secs => ttl_seconds);
BEGIN
  IF tenant IS NULL THEN
    RAISE EXCEPTION 'switchyard.claim_idempotency_key needs a tenant: call switchyard.enter() first'
      USING ERRCODE = '42501';
  END IF;
  IF random() < 0.01 THEN
    DELETE FROM switchyard.idempotency_keys k WHERE k.tenant_id = tenant AND k.created_at < expired;
  END IF;
  INSERT INTO switchyard.idempotency_keys AS k (tenant_id, key, request_sha256)
    VALUES (tenant, idempotency_key, request_hash)
    ON CONFLICT ON CONSTRAINT idempotency_keys_pkey DO NOTHING;
  IF FOUND THEN
    RETURN;
  END IF;
  SELECT k.request_sha256, k.created_at INTO earlier
    FROM switchyard.idempotency_keys k WHERE k.tenant_id = tenant AND k.key = idempotency_key;
  IF earlier.created_at < expired THEN
    UPDATE switchyard.idempotency_keys k
      SET request_sha256 = request_hash, results = NULL, created_at = now()
      WHERE k.tenant_id = tenant AND k.key = idempotency_key;
    RETURN;
  END IF;
  IF earlier.request_sha256 <> request_hash THEN
    RAISE EXCEPTION 'Idempotency-Key % was used for another request', idempotency_key
      USING ERRCODE = 'SY005', HINT = 'a key names one request: use a new key for a new request';
  END IF;
  RAISE EXCEPTION 'Idempotency-Key % was used: the write committed once already', idempotency_key
    USING ERRCODE = 'SY004';
END
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.claim_idempotency_key(text, text, integer) FROM PUBLIC;
--> statement-breakpoint
-- The claimed write's results, stored in its own transaction before COMMIT (NULL: too large to keep).
CREATE FUNCTION switchyard.keep_idempotent_results(idempotency_key text, first_answer jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  UPDATE switchyard.idempotency_keys k SET results = first_answer
    WHERE k.tenant_id = switchyard.current_tenant() AND k.key = idempotency_key;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'Idempotency-Key % was not claimed in this transaction', idempotency_key
      USING ERRCODE = '55000';
  END IF;
END
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.keep_idempotent_results(text, jsonb) FROM PUBLIC;
--> statement-breakpoint
-- A replay: the first answer of the key, after claim_idempotency_key() raised SY004.
CREATE FUNCTION switchyard.idempotent_results(idempotency_key text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
RETURN (SELECT k.results FROM switchyard.idempotency_keys k
        WHERE k.tenant_id = switchyard.current_tenant() AND k.key = idempotency_key);
--> statement-breakpoint
REVOKE ALL ON FUNCTION switchyard.idempotent_results(text) FROM PUBLIC;
