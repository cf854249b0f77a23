import type { Sql } from './connection.ts'

/** The SQLSTATE `switchyard.enter()` raises when a route is stale (invariant 2). */
export const STALE_ROUTE_SQLSTATE = 'SY001'

/** The SQLSTATE `switchyard.enforce_quota()` raises when an insert would pass a tenant's limit. */
export const QUOTA_SQLSTATE = 'SY002'

export type OwnershipState = 'owner' | 'frozen' | 'moved' | 'incoming'

/**
 * Records on the shard that it owns `tenant` at `epoch`. An existing row is overwritten: it can only be
 * the leftover of an add that failed before the directory committed, never a tenant the directory knows.
 */
export async function claimOwnership(sql: Sql, tenant: string, epoch: number): Promise<void> {
  await setOwnership(sql, tenant, epoch, 'owner')
}

export async function releaseOwnership(sql: Sql, tenant: string): Promise<void> {
  await sql`delete from switchyard.tenant_ownership where tenant_id = ${tenant}`
}

export async function readOwnership(
  sql: Sql,
  tenant: string,
): Promise<{ epoch: number; state: OwnershipState } | undefined> {
  const [row] = await sql<{ epoch: number; state: OwnershipState }[]>`
    select epoch, state from switchyard.tenant_ownership where tenant_id = ${tenant}`
  return row
}

/**
 * Sets a tenant's ownership row on a shard to `state` at `epoch` (insert or overwrite): the mover's
 * incoming claim on a target, the target's takeover at cutover, the source's `moved`.
 */
export async function setOwnership(sql: Sql, tenant: string, epoch: number, state: OwnershipState) {
  await sql`
    insert into switchyard.tenant_ownership (tenant_id, epoch, state)
    values (${tenant}, ${epoch}, ${state})
    on conflict (tenant_id) do update set epoch = excluded.epoch, state = excluded.state, updated_at = now()`
}
