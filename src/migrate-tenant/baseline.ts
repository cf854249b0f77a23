import { openSession, type Sql } from '../shard/connection.ts'
import type { TenantTable } from '../shard/tables.ts'
import { digestTenant, type HashedTable, type TableDigest } from './rows.ts'

/**
 * Verify's reference point, taken on one side before the fence: a snapshot S exported by a
 * `REPEATABLE READ` transaction that stays open (on a connection of its own, reading nothing, so it
 * holds no lock on any table), and the tenant's digest in S. Verify reads S again by importing it
 * (`SET TRANSACTION SNAPSHOT`); when the exporting session is gone (cut, killed, timed out), the import
 * fails and verify hashes in full: a baseline can be missing, never silently wrong.
 *
 * While fenced, verify then hashes only the rows that may have changed since, instead of every row of
 * the tenant (the full hash of 100,000 rows is most of the cutover stall). A row changed since S has
 * either a version visible now whose `xmin` is at or past S's xmin horizon (an insert or the new version
 * of an update: every transaction that committed after S has an xid at or past the horizon,
 * subtransactions included), or a version visible in S whose `xmax` is at or past it (a delete or the
 * old version of an update). The keys of both make a set T that holds every changed row (and maybe some
 * unchanged ones, which cancel out), so
 *
 *   digest now = digest(S) − digest(S's rows with a key in T) + digest(current rows with a key in T)
 *
 * for the count and for the hash sum alike. The keys of new versions alone cover inserts and updates
 * (an update keeps its key); a deleted row they miss leaves the computed count one above the real one,
 * which is read directly, so the `xmax` scan runs only when the counts do not add up. An `xmax` that is
 * a multixact id cannot be compared with xids, so a delete behind one could still be missed; the count
 * catches that too, and the side is hashed in full. So is any table whose
 * primary key is not `tenant_id` plus one column (plus the partition key, for a partitioned table), and a whole side whose baseline is gone (a resumed
 * move has none). A difference between the sides is confirmed by a full hash before verify fails.
 */
export interface Baseline {
  /** The session exporting S: open, idle in transaction, until the baseline is released. */
  exporter: Sql
  snapshot: string
  /** xmin of S: every transaction that committed after S has an xid at or past this (32-bit). */
  horizon: string
  digests: TableDigest[]
  /** How long the baseline's full hash took. */
  ms: number
  /** When S was taken (Date.now()): an old one holds back vacuum for nothing and is taken again. */
  takenAt: number
  /** Per table: the primary-key column besides `tenant_id` and its type, when there is exactly one. */
  keys: Map<string, { column: string; type: string } | undefined>
}

export async function takeBaseline(
  url: string,
  pool: Sql,
  tenant: string,
  tables: HashedTable[],
): Promise<Baseline> {
  const exporter = openSession(url)
  try {
    await exporter.unsafe('begin isolation level repeatable read read only')
    await exporter.unsafe("set local idle_in_transaction_session_timeout = '0'")
    const [exported] = await exporter<{ snapshot: string; horizon: string }[]>`
      select pg_export_snapshot() as snapshot, pg_snapshot_xmin(pg_current_snapshot())::text as horizon`
    if (!exported || !/^[0-9A-F-]+$/i.test(exported.snapshot)) throw new Error('no snapshot exported')
    // An xid8 (epoch and xid); xmin and xmax on rows are 32-bit xids.
    const horizon = String(BigInt(exported.horizon) % 2n ** 32n)
    const partial = { exporter, snapshot: exported.snapshot, horizon, takenAt: Date.now() }
    // The hash alone is timed: it is what verify would spend hashing in full while fenced.
    let ms = 0
    const digests = await inSnapshot(partial, pool, async (tx) => {
      const started = performance.now()
      const hashed = await digestTenant(tx, tenant, tables)
      ms = performance.now() - started
      return hashed
    })
    const keys = new Map<string, { column: string; type: string } | undefined>()
    for (const table of tables) keys.set(table.name, await singleKey(pool, table))
    return { ...partial, digests, ms, keys }
  } catch (error) {
    await exporter.end({ timeout: 1 })
    throw error
  }
}

export async function releaseBaseline(baseline: Baseline | undefined): Promise<void> {
  await baseline?.exporter.end({ timeout: 1 }).catch(() => {})
}

/** Runs `use` in a transaction that sees the baseline's snapshot S (fails if its exporter is gone). */
async function inSnapshot<T>(baseline: Pick<Baseline, 'snapshot'>, pool: Sql, use: (tx: Sql) => Promise<T>) {
  return (await pool.begin('isolation level repeatable read read only', async (tx) => {
    // Not prepared: every snapshot id is new text, and named statements would pile up on the connection.
    await tx.unsafe(`set transaction snapshot '${baseline.snapshot}'`, [], { prepare: false })
    return use(tx as unknown as Sql)
  })) as T
}

/**
 * The column that picks a table's changed rows: the primary key's one column besides `tenant_id`. A
 * partitioned table's key must hold its partition key too (PostgreSQL requires it), so there it is the
 * first of two: a key that is not unique only brings unchanged rows along, which cancel out of the sum,
 * and an UPDATE that moves a row to another partition keeps it.
 */
async function singleKey(sql: Sql, table: TenantTable) {
  const rest = table.pk.filter((column) => column !== 'tenant_id')
  const others = table.pk.length - 1
  if (rest.length !== others || !(others === 1 || (table.partitioned && others === 2))) return undefined
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
  tables: HashedTable[],
): Promise<TableDigest[] | undefined> {
  const inS = <T>(use: (tx: Sql) => Promise<T>) => inSnapshot(baseline, current, use)
  const keyed = tables.flatMap((table) => {
    const key = baseline.keys.get(table.name)
    const base = baseline.digests.find((d) => d.table === table.name)
    return key && base
      ? [{ table: table.name, column: quote(key.column), type: key.type, rowHash: table.rowHash, base }]
      : []
  })
  const others = tables.filter((table) => !keyed.some((k) => k.table === table.name))
  const at = 'age($2::text::xid)'
  const union = (part: (k: (typeof keyed)[number], i: number) => string) =>
    keyed.map(part).join(' union all ')
  const byIndex = <T extends { i: number }>(rows: T[]) => new Map(rows.map((row) => [row.i, row]))
  if (keyed.length === 0) return digestTenant(current, tenant, tables)

  // Round 1: every row's count now, and the keys of rows written since S (age(): no text conversion
  // per row). That covers inserts and both versions of updates (an update keeps its key).
  const now = byIndex(
    await current.unsafe<{ i: number; rows: number; keys: string[] }[]>(
      union(
        (k, i) => `select ${i} as i, count(*)::int as rows,
           coalesce(array_agg(${k.column}::text) filter (where age(xmin) <= ${at}), '{}') as keys
         from ${k.table} where tenant_id = $1`,
      ),
      [tenant, baseline.horizon],
    ),
  )
  let touched = keyed.map((_, i) => now.get(i)?.keys ?? [])
  let digests = await tally(touched)
  if (!digests) {
    // The counts do not add up: rows were deleted since S. Round 3: the keys of S's rows deleted or
    // updated since (their xmax, in S; rows only locked since come along and cancel out), then again.
    const gone = byIndex(
      await inS((tx) =>
        tx.unsafe<{ i: number; keys: string[] }[]>(
          union(
            (k, i) => `select ${i} as i, coalesce(array_agg(${k.column}::text), '{}') as keys
             from ${k.table} where tenant_id = $1 and xmax <> '0'::xid and age(xmax) <= ${at}`,
          ),
          [tenant, baseline.horizon],
        ),
      ),
    )
    touched = touched.map((keys, i) => [...new Set([...keys, ...(gone.get(i)?.keys ?? [])])])
    // Still not adding up (a delete behind a multixact xmax): the caller hashes in full.
    digests = await tally(touched)
    if (!digests) return undefined
  }

  /** Round 2: count and hash of the touched rows in S and now; undefined when a count is off. */
  async function tally(keysOf: string[][]): Promise<TableDigest[] | undefined> {
    type Touched = { i: number; rows: number; hash: string; fresh: number }
    const digestTouched = async (sql: Sql) => {
      const params: unknown[] = [tenant, baseline.horizon]
      const parts = keyed.flatMap((k, i) => {
        const keys = keysOf[i] ?? []
        if (keys.length === 0) return []
        params.push(keys)
        return [
          `select ${i} as i, count(*)::int as rows, coalesce(sum(${k.rowHash}), 0)::text as hash,
             (count(*) filter (where age(xmin) <= ${at}))::int as fresh
           from ${k.table} t where tenant_id = $1 and ${k.column} = any($${params.length}::text[]::${k.type}[])`,
        ]
      })
      return byIndex(
        parts.length ? await sql.unsafe<Touched[]>(parts.join(' union all '), params as never[]) : [],
      )
    }
    // Nothing written since S (no keys at all): S's digest is the digest now, no round trip needed.
    const nothing = keysOf.every((keys) => keys.length === 0)
    const [before, after] = nothing
      ? [new Map<number, Touched>(), new Map<number, Touched>()]
      : await Promise.all([inS(digestTouched), digestTouched(current)])
    const tallied: TableDigest[] = []
    for (const [i, k] of keyed.entries()) {
      // Every row written since S must be found again by its key (a key whose text does not cast back
      // to an equal value would hide a change from both reads).
      if ((after.get(i)?.fresh ?? 0) !== (now.get(i)?.keys.length ?? 0)) return undefined
      const rows = k.base.rows - (before.get(i)?.rows ?? 0) + (after.get(i)?.rows ?? 0)
      if (rows !== now.get(i)?.rows) return undefined
      const hash =
        BigInt(k.base.hash) - BigInt(before.get(i)?.hash ?? '0') + BigInt(after.get(i)?.hash ?? '0')
      tallied.push({ table: k.table, rows, hash: String(hash) })
    }
    return tallied
  }

  const rest = others.length ? await digestTenant(current, tenant, others) : []
  return tables.map(
    (table) =>
      digests?.find((d) => d.table === table.name) ??
      (rest.find((d) => d.table === table.name) as TableDigest),
  )
}

const quote = (name: string) => `"${name.replaceAll('"', '""')}"`
