import { settle } from '../../directory/tenant-state.ts'
import { unfenceTenant } from '../../shard/fence.ts'
import { releaseOwnership } from '../../shard/ownership.ts'
import { dropMoveSlots, dropPublication, dropSubscription } from '../artifacts.ts'
import { deleteTenantRows } from '../rows.ts'
import { type MoveContext, type StepResult, subscriptionId } from './context.ts'

/**
 * The abort of a move that has not cut over (`abortMove` checked): the source serves the tenant again
 * (unfenced), the subscription, its slots and the publication are dropped, and the target loses every
 * row of the tenant and its ownership claim.
 */
export async function aborting(ctx: MoveContext): Promise<StepResult> {
  const { move, source, target, name, deps } = ctx
  // Frozen by the fence, or already `moved` by a flip that stopped before the directory changed.
  await unfenceTenant(source, move.tenantId)
  await settle(deps.directory.sql, move.tenantId, move.sourceShard)
  await ctx.invalidate()
  await dropSubscription(target, name)
  await dropMoveSlots(source, name, subscriptionId(move))
  await dropPublication(source, name)
  await deleteTenantRows(target, move.tenantId, await ctx.tables(), deps.topology.mover.deleteBatchRows)
  // The directory does not place the tenant on the target: whatever the target's row says (`incoming`,
  // or `owner` from a flip cut short), it goes.
  await releaseOwnership(target, move.tenantId)
  return { next: 'aborted' }
}
