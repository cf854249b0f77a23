-- Issue 16: the example's appointments is partitioned by month. A row trigger declared on a partitioned
-- table fires on the partition the row goes to, and TG_RELID names that partition: enforce_quota() counted
-- only the partition. That was right for a UTC day inside one month's partition, but not for partitions of
-- other bounds, nor for the BEFORE UPDATE of a row whose new day lies in another partition (PostgreSQL then
-- fires it on the old one). It now counts the table the trigger was declared on (the partition tree's root),
-- which prunes to the partition of the day.
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
  counted regclass;
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
  -- A trigger on a partitioned table fires on the row's partition: count the whole table.
  counted := coalesce(pg_partition_root(TG_RELID), TG_RELID)::regclass;
  IF day_column IS NULL THEN
    EXECUTE format('select count(*) from %s where tenant_id = $1', counted) INTO used USING NEW.tenant_id;
  ELSE
    EXECUTE format('select date_trunc(''day'', ($1).%I, ''UTC'')', day_column) INTO day USING NEW;
    EXECUTE format('select count(*) from %s where tenant_id = $1 and %I >= $2 and %I < $2 + interval ''1 day''',
                   counted, day_column, day_column)
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
