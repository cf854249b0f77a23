import type { Queries } from './connection.ts'

/** A table in the tenant schemas, as the doctor checks it and the mover publishes, copies and verifies it. */
export interface TenantTable {
  /** Schema-qualified and quoted, ready for SQL text. */
  name: string
  rls: boolean
  forced: boolean
  policies: number
  /** Primary-key columns in key order. */
  pk: string[]
  /** Columns of the replica identity (all columns for FULL, none for NOTHING). */
  identity: string[]
  /** A partitioned table or one of its partitions. */
  partitioned: boolean
  /** One of a partitioned table's partitions: moved, copied and verified through its root. */
  partition: boolean
  /** A partitioned table that is itself a partition (partitions of partitions). */
  subpartitioned: boolean
}

/**
 * The tables a move publishes, copies, counts, verifies and deletes from: every tenant table but the
 * partitions, which are reached through their root (each row once; a publication publishes them as the
 * root with `publish_via_partition_root`).
 */
export const movedTables = <T extends TenantTable>(tables: T[]): T[] =>
  tables.filter((table) => !table.partition)

/**
 * The shard's own tenant tables, which move with the tenant like the schema's: the first answers of its
 * writes' Idempotency-Keys, so a retry after a move still finds them.
 */
export const SHARD_TENANT_TABLES = ['switchyard.idempotency_keys']

/** Every table (and partition) in the tenant schemas, and the shard's own: each must be a tenant table. */
export async function tenantTables(sql: Queries, schemas: string[]): Promise<TenantTable[]> {
  return sql<TenantTable[]>`
    select format('%I.%I', n.nspname, c.relname) as name,
           c.relrowsecurity as rls, c.relforcerowsecurity as forced,
           (select count(*)::int from pg_policy p where p.polrelid = c.oid) as policies,
           coalesce((select array_agg(a.attname::text order by k.ord)
                     from pg_index i
                     cross join unnest(i.indkey) with ordinality as k(attnum, ord)
                     join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
                     where i.indrelid = c.oid and i.indisprimary), '{}') as pk,
           coalesce(case c.relreplident
             when 'f' then (select array_agg(a.attname::text) from pg_attribute a
                            where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped)
             when 'n' then '{}'::text[]
             else (select array_agg(a.attname::text order by k.ord)
                   from pg_index i
                   cross join unnest(i.indkey) with ordinality as k(attnum, ord)
                   join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
                   where i.indrelid = c.oid
                     and (case c.relreplident when 'i' then i.indisreplident else i.indisprimary end))
           end, '{}') as identity,
           c.relkind = 'p' or c.relispartition as partitioned,
           c.relispartition as partition,
           c.relkind = 'p' and c.relispartition as subpartitioned
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p')
      and (n.nspname = any(${schemas}) or format('%I.%I', n.nspname, c.relname) = any(${SHARD_TENANT_TABLES}))
    order by 1`
}
