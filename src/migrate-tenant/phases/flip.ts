import { stillHeld } from '../../directory/session-lock.ts'
import { cutOver } from '../../directory/tenant-state.ts'
import { currentLsn } from '../../shard/fence.ts'
import { formatLsn } from '../../shard/lsn.ts'
import { setOwnership } from '../../shard/ownership.ts'
import { disableSubscription, enableSubscription } from '../artifacts.ts'
import { runLock, runLockLost } from '../record.ts'
import { fromEpoch, type MoveContext, type StepResult, stillFenced } from './context.ts'

/**
 * The cutover: the target owns the tenant at the next epoch, the source says `moved`, then one directory
 * transaction moves the tenant there (epoch + 1, active) and records `cleanup` (the step's `commit`: the
 * runner commits it with the new state), so the flip and its record cannot disagree. Idempotent: a
 * resumed flip finds the directory already flipped.
 */
export async function flip(ctx: MoveContext): Promise<StepResult> {
  const { move, deps } = ctx
  const epoch = fromEpoch(move) + 1
  // Each step's ms, logged with the cutover: the flip is all stall, and which step was slow matters.
  const steps: Record<string, number> = {}
  let lapped = performance.now()
  const lap = (step: string) => {
    steps[step] = Math.round(performance.now() - lapped)
    lapped = performance.now()
  }
  // The run lock is checked in the same round trip: the shard steps below are not directory writes, and
  // a runner whose lock session ended must not hand the tenant to the target while another one aborts.
  const [tenant] = await deps.directory.sql<{ shard_id: string; epoch: number; held: boolean }[]>`
    select shard_id, epoch, ${stillHeld(deps.directory.sql, runLock(move.id), ctx.runner)} as held
    from tenants where id = ${move.tenantId}`
  if (tenant && !tenant.held) throw runLockLost(move.id)
  const flipped = tenant?.shard_id === move.targetShard && tenant.epoch === epoch
  if (!flipped && !(await stillFenced(ctx))) {
    await enableSubscription(ctx.target, ctx.name)
    return { back: 'fence', reason: 'the source is not fenced (any more)' }
  }
  lap('check')
  // The target is about to take writes: nothing from the source may be applied over them any more.
  await disableSubscription(ctx.target, ctx.name)
  lap('disableSubscription')
  await setOwnership(ctx.target, move.tenantId, epoch, 'owner')
  const cutoverLsn = formatLsn(await currentLsn(ctx.target))
  lap('targetOwner')
  await deps.failpoint?.('flip', 'midway')
  // Reads too stop on the source now (they would be stale); routers hold them for the few ms to the flip.
  await setOwnership(ctx.source, move.tenantId, epoch - 1, 'moved')
  lap('sourceMoved')
  const told = async () => {
    lap('directory')
    // Routers holding the tenant's writes wake on this and resolve the new route.
    await ctx.invalidate()
    lap('invalidate')
    // The stall as clients see it: from the fence until routers are told where the tenant is now.
    const stallMs = move.progress.frozenAt ? Date.now() - move.progress.frozenAt : undefined
    if (stallMs !== undefined) deps.metrics?.stallSeconds.observe(stallMs / 1000)
    deps.logger.info({ move: move.id, tenant: move.tenantId, stallMs, cutoverLsn, steps }, 'move cut over')
    await ctx.report({ ...(stallMs === undefined ? {} : { stallMs }), frozenAt: null })
  }
  const to = { tenant: move.tenantId, from: move.sourceShard, to: move.targetShard, epoch }
  return {
    next: 'cleanup',
    cutoverLsn: move.cutoverLsn ?? cutoverLsn,
    progress: { flippedAt: Date.now() },
    commit: flipped ? undefined : (sql) => cutOver(sql, to),
    afterSave: told,
  }
}
