import { slotProgress, subscriptionState } from '../artifacts.ts'
import { releaseBaseline, takeBaseline } from '../baseline.ts'
import {
  applyStopped,
  type MoveContext,
  POLL_MS,
  REPORT_EVERY_MS,
  type StepResult,
  sleep,
  timeout,
} from './context.ts'

/**
 * Waits until the target's replication lag is small enough to fence (`mover.catchUpBytes`), taking
 * verify's baselines on the way: hashed before the fence, so that verify, while fenced, only hashes
 * what changed since (baseline.ts).
 */
export async function catchUp(ctx: MoveContext): Promise<StepResult> {
  const deadline = Date.now() + ctx.deps.topology.mover.catchUpTimeoutMs
  let reported = 0
  for (;;) {
    // A baseline kept through fence attempts that gave up holds back vacuum: past its age, take it anew.
    const taken = ctx.baselines?.source.takenAt ?? Date.now()
    if (Date.now() - taken > BASELINE_MAX_AGE_MS) await releaseBaselines(ctx, undefined)
    const lag = await lagBytes(ctx)
    // Lag is polled every few ms; the record (a directory write, with its run-lock check) a few times a second.
    if (Date.now() - reported >= REPORT_EVERY_MS) {
      await ctx.report({ lagBytes: lag })
      reported = Date.now()
    }
    if (lag <= ctx.deps.topology.mover.catchUpBytes) {
      // Then lag is looked at again, as the hashing took a while.
      if (ctx.baselines !== undefined) return { next: 'fence', progress: { lagBytes: lag } }
      ctx.baselines = await takeBaselines(ctx)
      continue
    }
    if (Date.now() > deadline) throw timeout(ctx, 'catch-up')
    await sleep(POLL_MS * 4)
  }
}

async function takeBaselines(ctx: MoveContext): Promise<MoveContext['baselines']> {
  const tables = await ctx.tables()
  const [source, target] = await Promise.allSettled([
    takeBaseline(ctx.sourceUrl, ctx.source, ctx.move.tenantId, tables),
    takeBaseline(ctx.targetUrl, ctx.target, ctx.move.tenantId, tables),
  ])
  if (source.status === 'fulfilled' && target.status === 'fulfilled') {
    const baselines = { source: source.value, target: target.value }
    const worth = ctx.deps.topology.mover.verifyFromBaselineAboveMs
    if (Math.max(baselines.source.ms, baselines.target.ms) >= worth) return baselines
  } else {
    const failed = [source, target].find((side) => side.status === 'rejected') as PromiseRejectedResult
    ctx.deps.logger.warn({ move: ctx.move.id, error: String(failed.reason) }, 'verify baseline not taken')
  }
  // Verify hashes everything, as a resumed move does.
  for (const side of [source, target]) if (side.status === 'fulfilled') await releaseBaseline(side.value)
  return null
}

/**
 * A baseline kept through fence attempts that gave up (each back to catch-up) is taken again after this:
 * its snapshot holds back vacuum on the shard.
 */
const BASELINE_MAX_AGE_MS = 60_000

/** Ends the baselines' snapshots; `then` null: verify hashes in full from here; undefined: take anew. */
export async function releaseBaselines(ctx: MoveContext, then: null | undefined = null): Promise<void> {
  const baselines = ctx.baselines
  ctx.baselines = then
  await Promise.all([releaseBaseline(baselines?.source), releaseBaseline(baselines?.target)])
}

async function lagBytes(ctx: MoveContext): Promise<number> {
  const sub = await subscriptionState(ctx.target, ctx.name)
  if (!sub.enabled) throw applyStopped(ctx)
  const { confirmed, current } = await slotProgress(ctx.source, ctx.name)
  return Number(current > confirmed ? current - confirmed : 0n)
}
