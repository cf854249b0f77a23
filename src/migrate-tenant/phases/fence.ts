import { freeze } from '../../directory/tenant-state.ts'
import { SwitchyardError } from '../../errors.ts'
import { cutShortFenceBlockers, fenceTenant, LOCK_TIMEOUT_SQLSTATE } from '../../shard/fence.ts'
import { formatLsn } from '../../shard/lsn.ts'
import { type MoveContext, type StepResult, sleep } from './context.ts'

/**
 * The fence (invariant 6): the directory says `frozen` first, so routers hold the tenant's writes
 * instead of sending them; then the source's exclusive lock drains in-flight writes and freezes the
 * tenant there. When writes do not drain within `lockTimeoutMs`, everything is undone, the tenant's
 * clients go on, and the fence is tried again a little later. A tenant's transaction that outlasts every
 * try (a long write, an interactive transaction left open) would keep the move out for ever: once the
 * fence has failed for `cancelBlockersAfterMs`, each further try (`fenceAttempts` of them) comes after
 * cutting short the tenant's transactions that have been open at least that long. An error here goes
 * back to catch-up, unfenced (the runner does it).
 */
export async function fence(ctx: MoveContext): Promise<StepResult> {
  const { move, deps } = ctx
  const { lockTimeoutMs, fenceAttempts, cancelBlockersAfterMs: grace } = deps.topology.mover
  const started = Date.now()
  let triesAfterGrace = 0
  for (let attempt = 1; ; attempt++) {
    const frozenAt = Date.now()
    // The directory's `frozen` makes routers hold the tenant's writes before they reach the source;
    // routers that have not heard of it hit the shard's fence and hold them all the same. It commits
    // before the shard is fenced: a source fenced behind a directory that does not say so (the mover
    // dying, the directory failing in between) would be found by no rescue, and its writes held for good.
    await freeze(deps.directory.sql, move.tenantId, move.sourceShard)
    const [told, fenced] = await Promise.allSettled([
      ctx.invalidate(),
      fenceTenant(ctx.source, move.tenantId, lockTimeoutMs),
    ])
    // Routers not told would go on sending writes to the source until their route cache expires.
    if (told.status === 'rejected') throw told.reason
    if (fenced.status === 'fulfilled') {
      return {
        next: 'final_catch_up',
        fenceLsn: formatLsn(fenced.value),
        progress: { frozenAt, fenceAttempts: attempt },
      }
    }
    if ((fenced.reason as { code?: string }).code !== LOCK_TIMEOUT_SQLSTATE) throw fenced.reason
    deps.logger.warn({ move: move.id, attempt }, 'fence: in-flight writes did not drain in time; unfencing')
    // Unfenced at once, even after the last try (the runner's unfence on the way back is then a no-op
    // repeat): the tenant's writes must not wait on the decision below.
    await ctx.unfence()
    const blockedMs = Date.now() - started
    if (grace === 0) {
      if (attempt === fenceAttempts) break
    } else if (blockedMs >= grace) {
      // Past the grace: `fenceAttempts` more tries, each after cutting the long transactions short.
      if (triesAfterGrace === fenceAttempts) break
      triesAfterGrace++
      // What was cut short has let go of the lock: try again at once.
      if ((await cutShortBlockers(ctx, grace, blockedMs)) > 0) continue
    }
    await sleep(Math.min(100 * attempt, 1_000))
  }
  // Back to catch-up: a resume then looks at the lag again before it fences.
  const tries =
    grace > 0
      ? `for ${Date.now() - started} ms (cutting short its transactions open longer than ${grace} ms)`
      : `in ${fenceAttempts} attempts`
  const message = `the tenant's writes did not drain within ${lockTimeoutMs} ms ${tries}; the move waits (resume it)`
  return { back: 'catch_up', reason: message, waits: new SwitchyardError('fence_timeout', message) }
}

/**
 * Cuts short the tenant's transactions that have held the fence's lock (shared, from `enter()`) for at
 * least `olderThanMs`: their queries are cancelled, or their sessions ended when idle in transaction,
 * and they roll back, so their clients get an error and nothing acknowledged is lost. Each is logged
 * and counted; the move's record keeps the tally (`move status`). Returns how many were cut short.
 */
async function cutShortBlockers(ctx: MoveContext, olderThanMs: number, blockedMs: number): Promise<number> {
  const { move, deps } = ctx
  const cut = await cutShortFenceBlockers(ctx.source, move.tenantId, olderThanMs)
  for (const blocker of cut) {
    deps.logger.warn(
      { move: move.id, tenant: move.tenantId, ...blocker, fenceBlockedMs: blockedMs },
      'fence: cut short a transaction of the tenant that kept it out',
    )
    deps.metrics?.fenceBlockers.inc({ action: blocker.action })
  }
  if (cut.length > 0) {
    const before = ctx.move.progress.cutShort
    await ctx.report({
      cutShort: {
        transactions: (before?.transactions ?? 0) + cut.length,
        terminated: (before?.terminated ?? 0) + cut.filter((b) => b.action === 'terminate').length,
        fenceBlockedMs: blockedMs,
        longestMs: Math.max(before?.longestMs ?? 0, ...cut.map((b) => b.transactionMs)),
      },
    })
  }
  return cut.length
}
