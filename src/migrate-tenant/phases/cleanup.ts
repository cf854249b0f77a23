import { releaseOwnership, setOwnership } from '../../shard/ownership.ts'
import { dropMoveSlots, dropPublication, dropSubscription } from '../artifacts.ts'
import { deleteTenantRows } from '../rows.ts'
import { fromEpoch, type MoveContext, type StepResult, sleep, subscriptionId } from './context.ts'

/**
 * After the cutover: the source stops serving the tenant (`moved`) and routers forget the old route.
 * The tenant's last-write LSN in Redis is left alone: it is in the source's WAL, and lowering it could
 * let a read skip a write made on the target meanwhile; a higher one only sends reads to the primary
 * until the key expires or a later write passes it. The subscription (and with it its slot on
 * the source), any sync slot and the publication are dropped; after a grace period longer than the
 * route cache TTL, the source's copy is deleted in batches.
 */
export async function cleanup(ctx: MoveContext): Promise<StepResult> {
  const { move, deps } = ctx
  await setOwnership(ctx.source, move.tenantId, fromEpoch(move), 'moved')
  await ctx.invalidate()
  await dropSubscription(ctx.target, ctx.name)
  await dropMoveSlots(ctx.source, ctx.name, subscriptionId(move))
  await dropPublication(ctx.source, ctx.name)
  const grace = deps.topology.mover.cleanupGraceMs ?? deps.topology.router.routeCacheTtlMs + 5_000
  const wait = (move.progress.flippedAt ?? 0) + grace - Date.now()
  if (wait > 0) await sleep(wait)
  const deletedRows = await deleteTenantRows(
    ctx.source,
    move.tenantId,
    await ctx.tables(),
    deps.topology.mover.deleteBatchRows,
    // A report that fails (the run lock lost) must not crash the process: the next save stops the run.
    (deleted) => void ctx.report({ deletedRows: deleted }).catch(() => {}),
  )
  await releaseOwnership(ctx.source, move.tenantId)
  return { next: 'done', error: null, progress: { deletedRows } }
}
