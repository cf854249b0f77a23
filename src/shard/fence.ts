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
