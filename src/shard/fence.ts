import type { Sql } from './connection.ts'
import { parseLsn } from './lsn.ts'

/** The lock_timeout error: in-flight writes did not drain in time. */
export const LOCK_TIMEOUT_SQLSTATE = '55P03'

/**
 * The cutover fence on the source primary (invariant 6). The exclusive per-tenant advisory lock waits
 * for every write transaction that already entered the tenant (they hold it shared until they end);
 * writes arriving meanwhile queue behind it and, once it is released, read `frozen` and fail with the
 * stale-route SQLSTATE, which the router answers by holding them. `lock_timeout` bounds how long new
 * writes can queue: when in-flight writes do not drain in time it throws 55P03 and nothing changed.
 *
 * Returns the fence LSN, read after the fence committed: every write the tenant ever had on this shard
 * is before it. The fence commits synchronously whatever the shard's default: with
 * `synchronous_commit=off`, writes acknowledged before it may not be written out yet, and the write
 * position read next (what the target's apply can reach) would be short of them; flushing the fence's
 * commit flushes everything before it.
 */
export async function fenceTenant(sql: Sql, tenant: string, lockTimeoutMs: number): Promise<bigint> {
  if (!UUID.test(tenant) || !Number.isInteger(lockTimeoutMs)) throw new Error('fence needs a tenant UUID')
  // One message, one implicit transaction, one round trip: every millisecond here is a write stall.
  // Simple protocol takes no parameters; the tenant id was checked to be a UUID just above.
  const results = (await sql
    .unsafe(
      `select set_config('lock_timeout', '${lockTimeoutMs}ms', true);
       select set_config('synchronous_commit', 'local', true);
       select pg_advisory_xact_lock(switchyard.tenant_lock_key('${tenant}'::uuid));
       update switchyard.tenant_ownership set state = 'frozen', updated_at = now()
        where tenant_id = '${tenant}'::uuid and state in ('owner', 'frozen') returning 1 as fenced`,
    )
    .simple()) as unknown as unknown[][]
  if (results.at(-1)?.length !== 1)
    throw new Error(`the source does not own tenant ${tenant}: nothing to fence`)
  return currentLsn(sql)
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * Undoes a fence that did not lead to a cutover: the source serves the tenant's writes again. Also
 * undoes `moved` from a flip that stopped before the directory changed (an abort after a crash there).
 */
export async function unfenceTenant(sql: Sql, tenant: string): Promise<void> {
  await sql`
    update switchyard.tenant_ownership set state = 'owner', updated_at = now()
    where tenant_id = ${tenant} and state in ('frozen', 'moved')`
}

export async function currentLsn(sql: Sql): Promise<bigint> {
  const [row] = await sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`
  if (!row) throw new Error('pg_current_wal_lsn() answered nothing')
  return parseLsn(row.lsn)
}

/** A transaction of the tenant that held the fence's lock for too long, and what was done to it. */
export interface FenceBlocker {
  pid: number
  /** How long its transaction had run when it was signalled. */
  transactionMs: number
  /** `cancel`: its query was cancelled; `terminate`: its session was ended (idle in transaction). */
  action: 'cancel' | 'terminate'
}

/** How long a cancelled holder has to let go of the lock before its session is terminated. */
const TERMINATE_AFTER_MS = 1_000

/**
 * Cuts short the tenant's transactions that hold its fence lock (shared, taken by `enter()` for writes)
 * and have been open for at least `olderThanMs`, so that a tenant's long transaction cannot keep its
 * move from fencing for ever. Their query is cancelled (`pg_cancel_backend`): the transaction rolls back
 * and its client gets an error (SQLSTATE 57014), so nothing it wrote was acknowledged. A holder that is
 * idle in transaction ignores a cancel: one that still holds the lock after `TERMINATE_AFTER_MS` has its
 * session terminated. Runs as a superuser (the router's role may signal no one).
 *
 * Only this tenant's lock holders are signalled, never another tenant's sessions: each signal is sent by
 * the statement that finds the backend holding this tenant's key in this database (the only window is
 * inside it), in a transaction that began at least `olderThanMs` ago (short writes in flight are left
 * alone). An advisory lock on a bigint
 * key is shown in `pg_locks` as classid = its high 32 bits, objid = its low 32 bits, objsubid = 1. Of
 * those, only the ones that no other of them blocks: a write queued behind the long one (its row, its
 * quota turn) holds the lock too, but goes on and ends once the long one is gone.
 */
export async function cutShortFenceBlockers(
  sql: Sql,
  tenant: string,
  olderThanMs: number,
): Promise<FenceBlocker[]> {
  const holders = (pids?: number[]) => sql`
    select l.pid, round(extract(epoch from clock_timestamp() - a.xact_start) * 1000)::float8 as "transactionMs"
    from (select switchyard.tenant_lock_key(${tenant}::uuid) as k) key,
         pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and l.objsubid = 1
      and l.database = (select oid from pg_database where datname = current_database())
      and l.classid = (key.k >> 32 & 4294967295)::oid and l.objid = (key.k & 4294967295)::oid
      and l.pid <> pg_backend_pid()
      and a.xact_start <= clock_timestamp() - ${olderThanMs}::int * interval '1 millisecond'
      ${pids ? sql`and l.pid = any(${pids}::int[])` : sql``}`
  // The roots, chosen before any is signalled: a root cancelled first would free the writes queued
  // behind it, and they would look like roots to the rest of the same statement.
  const roots = await sql<{ pid: number }[]>`
    with h as materialized (${holders()})
    select h.pid from h where not exists (select 1 from h o where o.pid = any(pg_blocking_pids(h.pid)))`
  if (roots.length === 0) return []
  // Materialized: the signal goes only to rows the whole condition selected, never tried on the way.
  const cancelled = await sql<{ pid: number; transactionMs: number }[]>`
    with h as materialized (${holders(roots.map((r) => r.pid))})
    select h.pid, h."transactionMs", pg_cancel_backend(h.pid) as signalled from h`
  if (cancelled.length === 0) return []
  let left = cancelled.map((h) => h.pid)
  const deadline = Date.now() + TERMINATE_AFTER_MS
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    left = (await sql<{ pid: number }[]>`${holders(left)}`).map((h) => h.pid)
  }
  const terminated =
    left.length === 0
      ? []
      : await sql<{ pid: number }[]>`
          with h as materialized (${holders(left)})
          select h.pid, pg_terminate_backend(h.pid, ${TERMINATE_AFTER_MS}::bigint) as ended from h`
  const ended = new Set(terminated.map((h) => h.pid))
  return cancelled.map(({ pid, transactionMs }) => ({
    pid,
    transactionMs,
    action: ended.has(pid) ? 'terminate' : 'cancel',
  }))
}
