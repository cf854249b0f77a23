import type { Sql } from '../shard/connection.ts'
import type { TenantTable } from '../shard/tables.ts'

/** One table's share of a tenant: how many rows, and a hash of their content. */
export interface TableDigest {
  table: string
  rows: number
  hash: string
}

/** A tenant table with the expression that hashes one of its rows, `t`, for verify. */
export interface HashedTable extends TenantTable {
  rowHash: string
}

/**
 * Chooses each table's row hash, once per move and outside any transaction (a failed probe inside one
 * would abort it): `hash_record_extended`, each column hashed by its type's own hash function (no text
 * output, about 6× faster than hashing `row::text`, and verify runs while the tenant is fenced), or, for
 * a table with a column type that has no extended hash function (`json`, `point`, arrays or domains or
 * composites of them), the hash of the row's text. The probe hashes an all-null row of the table, which
 * looks up every column's hash function as a real row does.
 */
export async function withRowHashes(sql: Sql, tables: TenantTable[]): Promise<HashedTable[]> {
  return Promise.all(
    tables.map(async (table) => {
      try {
        await sql.unsafe(`select hash_record_extended(json_populate_record(null::${table.name}, '{}'), 0)`)
        return { ...table, rowHash: 'hash_record_extended(t, 0)' }
      } catch (error) {
        if ((error as { code?: string }).code !== '42883') throw error
        return { ...table, rowHash: 'hashtextextended(t::text, 0)' }
      }
    }),
  )
}

/**
 * Row count and content hash of the tenant's rows in every tenant table: the sum of the per-row hashes,
 * so it needs no sort and does not depend on the order rows were copied in. Both sides run the same
 * PostgreSQL and schema, so equal rows hash equally. Runs as the admin (a superuser), which RLS does
 * not filter.
 */
export async function digestTenant(sql: Sql, tenant: string, tables: HashedTable[]): Promise<TableDigest[]> {
  if (tables.length === 0) return []
  // One statement for all tables: round trips while fenced are stall too. sum(int8) is exact (it
  // returns numeric) and accumulates in 128-bit integers, faster than a sum over numeric casts.
  const parts = tables.map(
    (table, i) =>
      `select ${i} as i, count(*)::int as rows, coalesce(sum(${table.rowHash}), 0)::text as hash
       from ${table.name} t where tenant_id = $1`,
  )
  const rows = await sql.unsafe<{ i: number; rows: number; hash: string }[]>(parts.join(' union all '), [
    tenant,
  ])
  return tables.map((table, i) => {
    const row = rows.find((r) => r.i === i)
    return { table: table.name, rows: row?.rows ?? 0, hash: row?.hash ?? '0' }
  })
}

/** The tenant's rows per table (for progress and for "the target holds none of them"). */
export async function countTenantRows(sql: Sql, tenant: string, tables: TenantTable[]): Promise<number> {
  if (tables.length === 0) return 0
  const parts = tables.map((t) => `(select count(*) from ${t.name} where tenant_id = $1)`)
  const [row] = await sql.unsafe<{ rows: string }[]>(`select (${parts.join(' + ')})::text as rows`, [tenant])
  return Number(row?.rows ?? 0)
}

/**
 * Deletes every row of the tenant, in batches so no transaction grows large or holds locks for long.
 * Foreign keys are not checked (session_replication_role = replica, as logical replication's apply
 * does): every row of the tenant goes, in whatever table order. Returns the number deleted.
 */
export async function deleteTenantRows(
  sql: Sql,
  tenant: string,
  tables: TenantTable[],
  batchRows: number,
  onBatch?: (deleted: number) => void,
): Promise<number> {
  let deleted = 0
  for (const table of tables) {
    for (;;) {
      const done = await sql.begin(async (tx) => {
        await tx`select set_config('session_replication_role', 'replica', true)`
        return tx.unsafe(
          // tenant_id again outside: a ctid is unique only within one table (not across partitions).
          `delete from ${table.name} where tenant_id = $1 and ctid = any(array(
             select ctid from ${table.name} where tenant_id = $1 limit ${Math.trunc(batchRows)}))`,
          [tenant],
        )
      })
      deleted += done.count
      onBatch?.(deleted)
      if (done.count < batchRows) break
    }
  }
  return deleted
}
