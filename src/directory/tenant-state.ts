import { SwitchyardError } from '../errors.ts'
import { constantList, type Queries } from '../shard/connection.ts'

/**
 * A tenant's row in the directory says where it lives and whether routers may send it writes:
 * `active` (yes), `moving` (yes: a move is copying it), `frozen` (no: a move's fence holds them until the
 * cutover or the unfence). Every change of it is one of the functions below, so the row's life can be
 * read in one place. Each takes `sql` so it can run inside the caller's transaction.
 */
export const TENANT_STATES = ['active', 'moving', 'frozen'] as const
export type TenantState = (typeof TENANT_STATES)[number]
/** SQL text: `('active', 'moving', 'frozen')`, for the table's check constraint. */
export const TENANT_STATES_SQL = constantList(TENANT_STATES)

/** A move was recorded for the tenant (in the same transaction as the move's row). */
export async function markMoving(sql: Queries, tenant: string): Promise<void> {
  await sql`update tenants set state = 'moving' where id = ${tenant}`
}

/** The fence begins: routers hold the tenant's writes instead of sending them to `shard`. */
export async function freeze(sql: Queries, tenant: string, shard: string): Promise<void> {
  await sql`update tenants set state = 'frozen' where id = ${tenant} and shard_id = ${shard}`
}

/** The fence is let go, the move goes on: routers send the tenant's writes to `shard` again. */
export async function unfreeze(sql: Queries, tenant: string, shard: string): Promise<void> {
  await sql`update tenants set state = 'moving' where id = ${tenant} and shard_id = ${shard}`
}

/** The move is aborted: the tenant stays on `shard` as if it had never been moved. */
export async function settle(sql: Queries, tenant: string, shard: string): Promise<void> {
  await sql`update tenants set state = 'active' where id = ${tenant} and shard_id = ${shard}`
}

/**
 * The cutover: the fenced tenant lives on `to` from now on, at the next epoch, and takes writes again.
 * Only from the exact row the move fenced (`from`, `epoch - 1`, `frozen`): anything else changed under
 * the move and stops it.
 */
export async function cutOver(
  sql: Queries,
  move: { tenant: string; from: string; to: string; epoch: number },
): Promise<void> {
  const done = await sql`
    update tenants set shard_id = ${move.to}, epoch = ${move.epoch}, state = 'active'
    where id = ${move.tenant} and shard_id = ${move.from} and epoch = ${move.epoch - 1}
      and state = 'frozen'`
  if (done.count !== 1)
    throw new SwitchyardError('move_broken', `tenant ${move.tenant} changed under the move`)
}
