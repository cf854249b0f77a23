import { openAdmin, type Sql } from '../shard/connection.ts'
import type { TenantTable } from '../shard/tables.ts'
import { digestTenant, type TableDigest } from './rows.ts'

/**
 * Verify's reference point, taken on one side before the fence: the tenant's digest in a REPEATABLE
 * READ transaction that stays open (on a connection of its own) until verify, so verify can look at the
 * rows as they were then.
 *
 * While fenced, verify then hashes only the rows that may have changed since, instead of every row of
 * the tenant (the full hash of 100,000 rows is most of the cutover stall). A row changed since the
 * baseline snapshot S has either a version visible now whose `xmin` is at or past S's xmin horizon (an
 * insert or the new version of an update: every transaction that committed after S has an xid at or
 * past the horizon, subtransactions included), or a version visible in S whose `xmax` is at or past it
 * (a delete or the old version of an update). The keys of both make a set T that holds every changed
 * row (and maybe some unchanged ones, which cancel out), so
 *
 *   digest now = digest(S) − digest(S's rows with a key in T) + digest(current rows with a key in T)
 *
 * for the count and for the hash sum alike. An `xmax` that is a multixact id cannot be compared with
 * xids, so a delete behind one could be missed; the count catches it: the current count is read
 * directly, and when it differs from the computed one the side is hashed in full. So is any table whose
 * primary key is not `tenant_id` plus one column, and a whole side whose baseline is gone (a resumed
 * move has none). A difference between the sides is confirmed by a full hash before verify fails.
 */
export interface Baseline {
  sql: Sql
  /** xmin of the baseline snapshot: every transaction that committed after it has an xid ≥ this. */
  horizon: string
  digests: TableDigest[]
  /** How long the baseline's full hash took. */
  ms: number
  /** Per table: the primary-key column besides `tenant_id` and its type, when there is exactly one. */
  keys: Map<string, { column: string; type: string } | undefined>
}

export async function takeBaseline(url: string, tenant: string, tables: TenantTable[]): Promise<Baseline> {
  const sql = openAdmin(url, { max: 1, idle_timeout: 0, max_lifetime: 0 })
  try {
    await sql.unsafe('begin isolation level repeatable read read only')
    const [snapshot] = await sql<{ horizon: string }[]>`
      select pg_snapshot_xmin(pg_current_snapshot())::text as horizon`
    const started = performance.now()
    const digests = await digestTenant(sql, tenant, tables)
    const ms = performance.now() - started
    const keys = new Map<string, { column: string; type: string } | undefined>()
    for (const table of tables) keys.set(table.name, await singleKey(sql, table))
    // An xid8 (epoch and xid); xmin and xmax on rows are 32-bit xids.
    const horizon = String(BigInt(snapshot?.horizon ?? '0') % 2n ** 32n)
    return { sql, horizon, digests, ms, keys }
  } catch (error) {
    await sql.end({ timeout: 1 })
    throw error
  }
}

export async function releaseBaseline(baseline: Baseline | undefined): Promise<void> {
  await baseline?.sql.end({ timeout: 1 }).catch(() => {})
}

async function singleKey(sql: Sql, table: TenantTable) {
  const rest = table.pk.filter((column) => column !== 'tenant_id')
  if (rest.length !== 1 || table.pk.length > 2) return undefined
  const column = rest[0] as string
  const [row] = await sql<{ type: string }[]>`
    select format_type(atttypid, atttypmod) as type from pg_attribute
    where attrelid = ${table.name}::regclass and attname = ${column}`
  return row ? { column, type: row.type } : undefined
}

/**
 * The tenant's digest now on `current` (the same side as the baseline), computed from the baseline
 * and the rows changed since, or `undefined` when the counts do not add up (then hash in full). Two
 * rounds of one statement per connection, whatever the number of tables: round trips while fenced are
 * stall too.
 */
export async function digestSince(
  baseline: Baseline,
  current: Sql,
  tenant: string,
  tables: TenantTable[],
): Promise<TableDigest[] | undefined> {
  const keyed = tables.flatMap((table) => {
    const key = baseline.keys.get(table.name)
    const base = baseline.digests.find((d) => d.table === table.name)
    return key && base ? [{ table: table.name, column: quote(key.column), type: key.type, base }] : []
  })
  const others = tables.filter((table) => !keyed.some((k) => k.table === table.name))
  const at = 'age($2::text::xid)'
  const union = (part: (k: (typeof keyed)[number], i: number) => string) =>
    keyed.map(part).join(' union all ')
  const byIndex = <T extends { i: number }>(rows: T[]) => new Map(rows.map((row) => [row.i, row]))
  if (keyed.length === 0) return digestTenant(current, tenant, tables)

  // Round 1. Now: every row's count, and the keys of rows written since the baseline (age(): no text
  // conversion per row). Baseline: keys of rows deleted or updated since (or only locked: they cancel).
  const [now, gone] = await Promise.all([
    current.unsafe<{ i: number; rows: number; keys: string[] }[]>(
      union(
        (k, i) => `select ${i} as i, count(*)::int as rows,
           coalesce(array_agg(${k.column}::text) filter (where age(xmin) <= ${at}), '{}') as keys
         from ${k.table} where tenant_id = $1`,
      ),
      [tenant, baseline.horizon],
    ),
    baseline.sql.unsafe<{ i: number; keys: string[] }[]>(
      union(
        (k, i) => `select ${i} as i, coalesce(array_agg(${k.column}::text), '{}') as keys
         from ${k.table} where tenant_id = $1 and xmax <> '0'::xid and age(xmax) <= ${at}`,
      ),
      [tenant, baseline.horizon],
    ),
  ])
  const nowBy = byIndex(now)
  const goneBy = byIndex(gone)
  const touched = keyed.map((_, i) => [
    ...new Set([...(nowBy.get(i)?.keys ?? []), ...(goneBy.get(i)?.keys ?? [])]),
  ])

  // Round 2: count and hash of the touched rows, as they were and as they are.
  const digestTouched = async (sql: Sql) => {
    const params: unknown[] = [tenant]
    const parts = keyed.flatMap((k, i) => {
      const keys = touched[i] ?? []
      if (keys.length === 0) return []
      params.push(keys)
      return [
        `select ${i} as i, count(*)::int as rows, coalesce(sum(hash_record_extended(t, 0)), 0)::text as hash
         from ${k.table} t where tenant_id = $1 and ${k.column} = any($${params.length}::text[]::${k.type}[])`,
      ]
    })
    if (parts.length === 0) return new Map<number, { i: number; rows: number; hash: string }>()
    return byIndex(
      await sql.unsafe<{ i: number; rows: number; hash: string }[]>(
        parts.join(' union all '),
        params as never[],
      ),
    )
  }
  const [before, after] = await Promise.all([digestTouched(baseline.sql), digestTouched(current)])

  const digests: TableDigest[] = []
  for (const [i, k] of keyed.entries()) {
    const rows = k.base.rows - (before.get(i)?.rows ?? 0) + (after.get(i)?.rows ?? 0)
    // A change the keys missed (a delete behind a multixact xmax) shows in the count.
    if (rows !== nowBy.get(i)?.rows) return undefined
    const hash = BigInt(k.base.hash) - BigInt(before.get(i)?.hash ?? '0') + BigInt(after.get(i)?.hash ?? '0')
    digests.push({ table: k.table, rows, hash: String(hash) })
  }
  const rest = others.length ? await digestTenant(current, tenant, others) : []
  return tables.map(
    (table) =>
      digests.find((d) => d.table === table.name) ??
      (rest.find((d) => d.table === table.name) as TableDigest),
  )
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`
