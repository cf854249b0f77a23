-- Issue 16, the seed's §1: `appointments` partitioned by month on start_time, for a shard of an existing
-- deployment as for a new one. One transaction (drizzle's migrator runs every pending migration in one):
-- the old table is renamed, a partitioned one made in its place, every row copied, the old one dropped.
-- appointments is locked from the rename to the commit (docs/PARTITIONS.md, "Upgrading a shard that
-- holds rows", gives the time measured for it).
--
-- Partitions: one per UTC month, `appointments_pYYYY_MM`, from the month of the oldest row (at most 36
-- months back; at least 12, for history imported later) to 12 months ahead, and `appointments_default` for
-- dates beyond (a booking years ahead, one back-dated before that, ±infinity): `switchyard partitions ensure` (and every router, hourly) adds the coming months and moves
-- their rows out of the DEFAULT partition. PostgreSQL applies only the partition's own policies to a
-- query naming a partition, so every partition gets the parent's RLS, forced, and its policy.
-- The primary key must hold the partition key: (tenant_id, id, start_time); tenant_id still leads it
-- and the seed's indexes, so a tenant's rows stay one index range and a move's row filter still works.
ALTER TABLE "appointments" RENAME TO "appointments_unpartitioned";
--> statement-breakpoint
CREATE TABLE "appointments" (
  LIKE "appointments_unpartitioned" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE INCLUDING COMPRESSION
) PARTITION BY RANGE ("start_time");
--> statement-breakpoint
DO $$
DECLARE
  -- Months are stepped as UTC wall-clock timestamps (no time zone): the session's own zone (a DST change,
  -- a short month) cannot shift a bound.
  this_month timestamp := date_trunc('month', now() AT TIME ZONE 'UTC');
  oldest timestamp;
  month timestamp;
  partition text;
  policy text := '"tenant_id" = (select switchyard.current_tenant())';
BEGIN
  -- Finite dates only, and at most 36 months back: a tenant's row dated -infinity, in 1500 or BC stays in
  -- the DEFAULT partition instead of asking for centuries of partitions.
  SELECT date_trunc('month', min("start_time") AT TIME ZONE 'UTC') INTO oldest FROM "appointments_unpartitioned"
    WHERE "start_time" >= (this_month - interval '36 months') AT TIME ZONE 'UTC' AND isfinite("start_time");
  month := least(coalesce(oldest, this_month), this_month - interval '12 months');
  WHILE month <= this_month + interval '12 months' LOOP
    partition := format('%I', 'appointments_p' || to_char(month, 'YYYY_MM'));
    EXECUTE format('CREATE TABLE %s PARTITION OF "appointments" FOR VALUES FROM (%L) TO (%L)', partition,
                   to_char(month, 'YYYY-MM-DD "00:00:00+00"'),
                   to_char(month + interval '1 month', 'YYYY-MM-DD "00:00:00+00"'));
    month := month + interval '1 month';
  END LOOP;
  CREATE TABLE "appointments_default" PARTITION OF "appointments" DEFAULT;
  FOR partition IN
    SELECT format('%I.%I', n.nspname, c.relname) FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE i.inhparent = '"appointments"'::regclass
  LOOP
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', partition);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', partition);
    EXECUTE format('CREATE POLICY "tenant_isolation" ON %s AS PERMISSIVE FOR ALL TO public USING (%s) WITH CHECK (%s)',
                   partition, policy, policy);
  END LOOP;
END
$$;
--> statement-breakpoint
-- Before the quota triggers exist: copied rows count nothing (and no tenant context is entered here anyway).
INSERT INTO "appointments" SELECT * FROM "appointments_unpartitioned";
--> statement-breakpoint
DROP TABLE "appointments_unpartitioned";
--> statement-breakpoint
ALTER TABLE "appointments" ADD CONSTRAINT "appointments_tenant_id_id_start_time_pk" PRIMARY KEY("tenant_id","id","start_time");
--> statement-breakpoint
ALTER TABLE "appointments" ADD CONSTRAINT "appointments_tenant_id_business_id_businesses_tenant_id_id_fk" FOREIGN KEY ("tenant_id","business_id") REFERENCES "businesses"("tenant_id","id") ON DELETE no action ON UPDATE no action;
--> statement-breakpoint
ALTER TABLE "appointments" ADD CONSTRAINT "appointments_tenant_id_service_id_services_tenant_id_id_fk" FOREIGN KEY ("tenant_id","service_id") REFERENCES "services"("tenant_id","id") ON DELETE no action ON UPDATE no action;
--> statement-breakpoint
ALTER TABLE "appointments" ADD CONSTRAINT "appointments_tenant_id_staff_id_staff_tenant_id_id_fk" FOREIGN KEY ("tenant_id","staff_id") REFERENCES "staff"("tenant_id","id") ON DELETE no action ON UPDATE no action;
--> statement-breakpoint
ALTER TABLE "appointments" ADD CONSTRAINT "appointments_tenant_id_customer_id_customers_tenant_id_id_fk" FOREIGN KEY ("tenant_id","customer_id") REFERENCES "customers"("tenant_id","id") ON DELETE no action ON UPDATE no action;
--> statement-breakpoint
CREATE INDEX "idx_appointments_tenant_status_date" ON "appointments" USING btree ("tenant_id","status","start_time");
--> statement-breakpoint
CREATE INDEX "idx_appointments_tenant_business_date" ON "appointments" USING btree ("tenant_id","business_id","start_time");
--> statement-breakpoint
CREATE INDEX "idx_appointments_tenant_start" ON "appointments" USING btree ("tenant_id","start_time");
--> statement-breakpoint
ALTER TABLE "appointments" ENABLE ROW LEVEL SECURITY;
--> statement-breakpoint
ALTER TABLE "appointments" FORCE ROW LEVEL SECURITY;
--> statement-breakpoint
CREATE POLICY "tenant_isolation" ON "appointments" AS PERMISSIVE FOR ALL TO public USING ("appointments"."tenant_id" = (select switchyard.current_tenant())) WITH CHECK ("appointments"."tenant_id" = (select switchyard.current_tenant()));
--> statement-breakpoint
CREATE TRIGGER appointments_quota BEFORE INSERT ON "appointments" FOR EACH ROW EXECUTE FUNCTION switchyard.enforce_quota('max_appointments_per_day', 'start_time');
--> statement-breakpoint
CREATE TRIGGER appointments_quota_update BEFORE UPDATE OF start_time ON "appointments" FOR EACH ROW EXECUTE FUNCTION switchyard.enforce_quota('max_appointments_per_day', 'start_time');
