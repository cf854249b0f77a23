import { setOwnership } from '../../shard/ownership.ts'
import { createSubscription, subscriptionState, systemIdentifier } from '../artifacts.ts'
import { fromEpoch, type MoveContext, type StepResult } from './context.ts'

/**
 * The target claims the tenant as `incoming` at the next epoch (so nothing routes there yet) and
 * subscribes to the source's publication, which starts the copy.
 */
export async function subscription(ctx: MoveContext): Promise<StepResult> {
  const { move } = ctx
  await setOwnership(ctx.target, move.tenantId, fromEpoch(move) + 1, 'incoming')
  await createSubscription(ctx.target, ctx.source, ctx.name, ctx.sourceUrl)
  const sub = await subscriptionState(ctx.target, ctx.name)
  const targetSystemId = await systemIdentifier(ctx.target)
  return { next: 'copy', progress: { subscriptionOid: sub.oid, targetSystemId } }
}
