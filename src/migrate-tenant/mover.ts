import type { Topology } from '../config/topology.ts'
import type { Directory } from '../directory/connection.ts'
import type { Redis } from '../directory/redis.ts'
import { publishInvalidation } from '../directory/routes.ts'
import { stillHeld, withSessionLock } from '../directory/session-lock.ts'
import { shardPrimary } from '../directory/tenants.ts'
import { SwitchyardError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { openAdmin, type Sql } from '../shard/connection.ts'
import {
  currentLsn,
  cutShortFenceBlockers,
  fenceTenant,
  LOCK_TIMEOUT_SQLSTATE,
  unfenceTenant,
} from '../shard/fence.ts'
import { formatLsn, parseLsn } from '../shard/lsn.ts'
import { readOwnership, releaseOwnership, setOwnership } from '../shard/ownership.ts'
import { tenantTables } from '../shard/tables.ts'
import {
  artifactName,
  createPublication,
  createSubscription,
  disableSubscription,
  dropMoveSlots,
  dropPublication,
  dropSubscription,
  enableSubscription,
  slotProgress,
  subscriptionState,
  systemIdentifier,
} from './artifacts.ts'
import { type Baseline, digestSince, releaseBaseline, takeBaseline } from './baseline.ts'
import type { FailpointWhen } from './failpoint.ts'
import type { MoverMetrics } from './metrics.ts'
import { preflight } from './preflight.ts'
import {
  FINISHED,
  findMove,
  type Move,
  type MoveState,
  type Phase,
  recordMove,
  runLock,
  runLockLost,
  saveMove,
} from './record.ts'
import {
  countTenantRows,
  deleteTenantRows,
  digestTenant,
  type HashedTable,
  type TableDigest,
  withRowHashes,
} from './rows.ts'

export interface MoverDeps {
  topology: Topology
  directory: Directory
  redis?: Redis | undefined
  logger: Logger
  metrics?: MoverMetrics | undefined
  /** Called on every phase change and while copying or catching up. */
  onProgress?: ((move: Move) => void) | undefined
  /**
   * Crash tests: called before and after each phase's side effect. `SWITCHYARD_FAILPOINT` in the CLI
   * kills the process (SIGKILL) there.
   */
  failpoint?: ((state: MoveState, when: FailpointWhen) => void | Promise<void>) | undefined
}

/** How often progress is written to the move's record while polling (the progress bar reads it). */
const REPORT_EVERY_MS = 200
/** How often the mover looks at copy and replication progress. */
const POLL_MS = 2
const SLOW_POLL_MS = 200

/** Checks the request, records the move and runs it to the end: the `switchyard move` entry point. */
export async function startMove(
  deps: MoverDeps,
  request: { tenant: unknown; target: unknown },
): Promise<Move> {
  const move = await createMove(deps, request)
  return runMove(deps, move.id)
}

/** Checks and records a move without running it (the admin API runs it in the background). */
export async function createMove(
  deps: MoverDeps,
  request: { tenant: unknown; target: unknown },
): Promise<Move> {
  const shards = shardConnections(deps.topology)
  try {
    const checked = await preflight(deps.topology, deps.directory, shards.get, request)
    return await recordMove(deps.directory, deps.topology, { tenant: checked.tenant, target: checked.target })
  } finally {
    await shards.close()
  }
}

/**
 * Runs (or resumes) a move from its recorded state to `done`. Each phase's side effect is idempotent
 * and its state was persisted before it started, so a crash anywhere resumes by redoing the phase it
 * was in. One process at a time: a session lock in the directory refuses a second runner.
 */
export async function runMove(deps: MoverDeps, id: string): Promise<Move> {
  return withRunLock(deps, id, async (ctx) => {
    let move = ctx.move
    if (move.state === 'aborting') return finishAbort(deps, ctx)
    if (FENCED_PHASES.includes(move.state)) move = await ctx.save(await resumedFenced(ctx))
    while (!FINISHED.includes(move.state)) {
      const state = move.state as Phase
      const started = performance.now()
      // A failpoint that throws (in-process tests) is an error of the step, as a shard's would be.
      const step = async () => {
        await deps.failpoint?.(state, 'before')
        return STEPS[state](ctx)
      }
      const next = await step().catch((error) => leaveFence(ctx, state, error))
      await deps.failpoint?.(state, 'after')
      const ms = Math.round(performance.now() - started)
      deps.metrics?.phaseSeconds.observe({ phase: state }, ms / 1000)
      const rate =
        state === 'copy' && next.progress?.copiedRows !== undefined
          ? { rowsPerSecond: Math.round(next.progress.copiedRows / Math.max(ms / 1000, 0.001)) }
          : {}
      deps.logger.info({ move: move.id, tenant: move.tenantId, phase: state, ms, ...rate }, 'move phase done')
      move = ctx.move
      const phases = { ...move.progress.phases, [state]: (move.progress.phases?.[state] ?? 0) + ms }
      move = await ctx.save({ ...next, progress: { ...next.progress, phases } })
    }
    deps.metrics?.moves.inc({ outcome: move.state })
    return move
  })
}

/**
 * Aborts a move that has not cut over: the source serves the tenant again (unfenced), the
 * subscription, its slots and the publication are dropped, and the target loses every row of the
 * tenant and its ownership claim. After the cutover the tenant's writes have landed on the target, so
 * nothing can be undone: abort refuses, unless `moveBack`, which finishes the move and then moves the
 * tenant back to its source with a move of its own (what Vitess calls ReverseTraffic), and returns that
 * move.
 */
export async function abortMove(
  deps: MoverDeps,
  id: string,
  options: { moveBack?: boolean } = {},
): Promise<Move> {
  const outcome = await withRunLock<{ aborted: Move } | { cutOver: Move }>(deps, id, async (ctx) => {
    const move = ctx.move
    if (move.state === 'aborted') return { aborted: move }
    if (FINISHED.includes(move.state))
      throw new SwitchyardError('move_finished', `move ${move.id} is ${move.state}: nothing to abort`)
    const [tenant] = await deps.directory.sql<{ shard_id: string }[]>`
      select shard_id from tenants where id = ${move.tenantId}`
    if (tenant?.shard_id === move.targetShard || move.state === 'cleanup') {
      if (options.moveBack) return { cutOver: move }
      throw new SwitchyardError(
        'move_past_cutover',
        `move ${move.id} has cut over to ${move.targetShard}: resume it (\`switchyard move resume ${move.id}\`), or finish it and move the tenant back to ${move.sourceShard} (\`switchyard move abort ${move.id} --move-back\`)`,
      )
    }
    await ctx.save({ state: 'aborting' })
    return { aborted: await finishAbort(deps, ctx) }
  })
  return 'aborted' in outcome ? outcome.aborted : moveBack(deps, outcome.cutOver)
}

/** The abort of a move past its cutover: it runs to the end, then a new move takes the tenant back. */
async function moveBack(deps: MoverDeps, move: Move): Promise<Move> {
  const finished = await runMove(deps, move.id).catch((error) => {
    throw inContext(error, `move ${move.id} could not be finished before moving the tenant back`)
  })
  deps.logger.info(
    { move: move.id, tenant: move.tenantId, from: finished.targetShard, to: finished.sourceShard },
    'move aborted past its cutover: moving the tenant back',
  )
  // Whatever stops the way back, the operator learns where the tenant is now.
  const where = `move ${move.id} finished (tenant ${move.tenantId} is on ${finished.targetShard})`
  const back = await createMove(deps, { tenant: move.tenantId, target: move.sourceShard }).catch((error) => {
    throw inContext(error, `${where}, but moving it back to ${move.sourceShard} was refused`)
  })
  return runMove(deps, back.id).catch((error) => {
    throw inContext(error, `${where}; move ${back.id} taking it back stopped (resume or abort it)`)
  })
}

function inContext(error: unknown, context: string): SwitchyardError {
  const message = error instanceof Error ? error.message : String(error)
  const code = error instanceof SwitchyardError ? error.code : 'move_back_failed'
  return new SwitchyardError(code, `${context}: ${message}`)
}

async function finishAbort(deps: MoverDeps, ctx: MoveContext): Promise<Move> {
  const { move, source, target, name } = ctx
  await deps.failpoint?.('aborting', 'before')
  // Frozen by the fence, or already `moved` by a flip that stopped before the directory changed.
  await unfenceTenant(source, move.tenantId)
  await deps.directory.sql`
    update tenants set state = 'active' where id = ${move.tenantId} and shard_id = ${move.sourceShard}`
  await ctx.invalidate()
  await dropSubscription(target, name)
  await dropMoveSlots(source, name, subscriptionId(move))
  await dropPublication(source, name)
  await deleteTenantRows(target, move.tenantId, await ctx.tables(), deps.topology.mover.deleteBatchRows)
  // The directory does not place the tenant on the target (abortMove checked): whatever the target's
  // row says (`incoming`, or `owner` from a flip cut short), it goes.
  await releaseOwnership(target, move.tenantId)
  await deps.failpoint?.('aborting', 'after')
  const done = await ctx.save({ state: 'aborted' })
  deps.metrics?.moves.inc({ outcome: 'aborted' })
  deps.logger.info({ move: move.id, tenant: move.tenantId }, 'move aborted')
  return done
}

/** A phase's result: the next state and what to persist with it. */
type Next = Partial<Pick<Move, 'fenceLsn' | 'cutoverLsn' | 'error'>> & {
  state: MoveState
  progress?: Move['progress']
}

interface MoveContext {
  deps: MoverDeps
  /** The move as last persisted. */
  move: Move
  /** Backend pid of the directory session holding the move's run lock: every record write checks it. */
  runner: number
  /**
   * Verify's reference points, in this process's memory only (a move resumed at or past the fence goes
   * back to catch-up to take them). Undefined: not taken yet (catch-up takes them); null: verify hashes
   * every row (not worth it for a small tenant, not taken, or already used).
   */
  baselines?: { source: Baseline; target: Baseline } | null | undefined
  name: string
  source: Sql
  target: Sql
  sourceUrl: string
  targetUrl: string
  tables(): Promise<HashedTable[]>
  save(change: Parameters<typeof saveMove>[2]): Promise<Move>
  /** Persists progress without changing state (for the progress bar in other processes). */
  report(progress: Move['progress']): Promise<void>
  invalidate(): Promise<void>
}

const STEPS: Record<Phase, (ctx: MoveContext) => Promise<Next>> = {
  preflight: removeLeftovers,
  publication: async (ctx) => {
    await createPublication(ctx.source, ctx.name, ctx.move.tenantId, await ctx.tables())
    return { state: 'subscription' }
  },
  subscription: async (ctx) => {
    const { move } = ctx
    await setOwnership(ctx.target, move.tenantId, fromEpoch(move) + 1, 'incoming')
    await createSubscription(ctx.target, ctx.source, ctx.name, ctx.sourceUrl)
    const sub = await subscriptionState(ctx.target, ctx.name)
    const targetSystemId = await systemIdentifier(ctx.target)
    return { state: 'copy', progress: { subscriptionOid: sub.oid, targetSystemId } }
  },
  copy: waitForCopy,
  catch_up: waitForCatchUp,
  fence,
  final_catch_up: waitPastFence,
  verify,
  flip,
  cleanup,
  done: async () => ({ state: 'done' }),
}

/**
 * Rows of the tenant on the target can only be an earlier move's leftovers (an abort that crashed, a
 * source copy not yet cleaned): preflight refused a target that owns the tenant. They go, or the copy
 * would collide with them.
 */
async function removeLeftovers(ctx: MoveContext): Promise<Next> {
  const tables = await ctx.tables()
  const left = await countTenantRows(ctx.target, ctx.move.tenantId, tables)
  if (left > 0) {
    ctx.deps.logger.warn(
      { move: ctx.move.id, rows: left },
      'removing leftover rows of the tenant on the target',
    )
    await deleteTenantRows(ctx.target, ctx.move.tenantId, tables, ctx.deps.topology.mover.deleteBatchRows)
  }
  return { state: 'publication' }
}

async function waitForCopy(ctx: MoveContext): Promise<Next> {
  const { move, deps } = ctx
  const tables = await ctx.tables()
  const totalRows = await countTenantRows(ctx.source, move.tenantId, tables)
  const deadline = Date.now() + deps.topology.mover.catchUpTimeoutMs
  for (;;) {
    const sub = await subscriptionState(ctx.target, ctx.name)
    if (!sub.exists)
      throw new SwitchyardError('move_broken', `subscription ${ctx.name} is missing on the target`)
    if (!sub.enabled) throw applyStopped(ctx)
    const copiedRows = await countTenantRows(ctx.target, move.tenantId, tables)
    await ctx.report({ totalRows, copiedRows })
    if (sub.tablesPending === 0) {
      // The target's planner statistics predate the copy: the tenant's first queries there (the quota
      // triggers' counts among them) must not be planned as if its rows were not there.
      await ctx.target.unsafe(`analyze ${tables.map((t) => t.name).join(', ')}`)
      deps.metrics?.rowsCopied.inc(copiedRows)
      return { state: 'catch_up', progress: { totalRows, copiedRows } }
    }
    if (Date.now() > deadline) throw timeout(ctx, 'copy')
    await sleep(SLOW_POLL_MS)
  }
}

async function waitForCatchUp(ctx: MoveContext): Promise<Next> {
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
      // Verify's reference point, hashed before the fence so that verify, while fenced, only hashes
      // what changed since (baseline.ts); then lag is looked at again, as the hashing took a while.
      if (ctx.baselines !== undefined) return { state: 'fence', progress: { lagBytes: lag } }
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
async function releaseBaselines(ctx: MoveContext, then: null | undefined = null): Promise<void> {
  const baselines = ctx.baselines
  ctx.baselines = then
  await Promise.all([releaseBaseline(baselines?.source), releaseBaseline(baselines?.target)])
}

/**
 * Both sides' digests: from the baselines when there are (and `full` is not asked), else in full (a
 * baseline that fails, e.g. its snapshot's session is gone, means a full hash of that side).
 */
async function digestBothSides(ctx: MoveContext, tables: HashedTable[], full: boolean) {
  const tenant = ctx.move.tenantId
  let sidesFromBaseline = 0
  const side = async (sql: Sql, baseline: Baseline | undefined) => {
    const since =
      baseline && !full
        ? await digestSince(baseline, sql, tenant, tables).catch((error: Error) => {
            ctx.deps.logger.warn(
              { move: ctx.move.id, error: error.message },
              'verify: baseline unusable; hashing in full',
            )
            return undefined
          })
        : undefined
    if (since) sidesFromBaseline += 1
    return since ?? digestTenant(sql, tenant, tables)
  }
  const [before, after] = await Promise.all([
    side(ctx.source, ctx.baselines?.source),
    side(ctx.target, ctx.baselines?.target),
  ])
  return { before, after, sidesFromBaseline }
}

async function lagBytes(ctx: MoveContext): Promise<number> {
  const sub = await subscriptionState(ctx.target, ctx.name)
  if (!sub.enabled) throw applyStopped(ctx)
  const { confirmed, current } = await slotProgress(ctx.source, ctx.name)
  return Number(current > confirmed ? current - confirmed : 0n)
}

/**
 * The fence (invariant 6): the directory says `frozen` first, so routers hold the tenant's writes
 * instead of sending them; then the source's exclusive lock drains in-flight writes and freezes the
 * tenant there. When writes do not drain within `lockTimeoutMs`, everything is undone, the tenant's
 * clients go on, and the fence is tried again a little later. A tenant's transaction that outlasts every
 * try (a long write, an interactive transaction left open) would keep the move out for ever: once the
 * fence has failed for `cancelBlockersAfterMs`, each further try (`fenceAttempts` of them) comes after
 * cutting short the tenant's transactions that have been open at least that long.
 */
async function fence(ctx: MoveContext): Promise<Next> {
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
    await deps.directory.sql`
      update tenants set state = 'frozen' where id = ${move.tenantId} and shard_id = ${move.sourceShard}`
    const [told, fenced] = await Promise.allSettled([
      ctx.invalidate(),
      fenceTenant(ctx.source, move.tenantId, lockTimeoutMs),
    ])
    if (told.status === 'rejected') {
      // Routers would go on sending writes to the source until their route cache expires.
      await unfence(ctx)
      throw told.reason
    }
    if (fenced.status === 'fulfilled') {
      return {
        state: 'final_catch_up',
        fenceLsn: formatLsn(fenced.value),
        progress: { frozenAt, fenceAttempts: attempt },
      }
    }
    if ((fenced.reason as { code?: string }).code !== LOCK_TIMEOUT_SQLSTATE) {
      await unfence(ctx)
      throw fenced.reason
    }
    deps.logger.warn({ move: move.id, attempt }, 'fence: in-flight writes did not drain in time; unfencing')
    await unfence(ctx)
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
  await ctx.save({ state: 'catch_up' })
  const tries =
    grace > 0
      ? `for ${Date.now() - started} ms (cutting short its transactions open longer than ${grace} ms)`
      : `in ${fenceAttempts} attempts`
  throw new SwitchyardError(
    'fence_timeout',
    `the tenant's writes did not drain within ${lockTimeoutMs} ms ${tries}; the move waits (resume it)`,
  )
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

async function unfence(ctx: MoveContext): Promise<void> {
  // Only the move's runner may unfence: another process may be flipping it (the record write checks).
  await ctx.save({})
  await unfenceTenant(ctx.source, ctx.move.tenantId)
  await ctx.deps.directory.sql`
    update tenants set state = 'moving' where id = ${ctx.move.tenantId} and shard_id = ${ctx.move.sourceShard}`
  await ctx.report({ frozenAt: null })
  await ctx.invalidate()
}

/**
 * An error between the fence and the flip (a shard or the directory not answering) must not leave the
 * tenant's writes held: the move unfences, as when the target is too slow, and waits in catch-up to be
 * resumed. Best effort: a source that does not answer cannot be unfenced, and a router's rescue (or the
 * operator) resumes the move from where it stopped. The flip itself is never undone here: once it has
 * begun, only going forward (resume) or `move abort` is safe.
 */
async function leaveFence(ctx: MoveContext, state: Phase, error: unknown): Promise<never> {
  if (state === 'final_catch_up' || state === 'verify') {
    await unfence(ctx)
      .then(() => ctx.save({ state: 'catch_up' }))
      .catch((failed: Error) =>
        ctx.deps.logger.error(
          { move: ctx.move.id, error: failed.message },
          'could not unfence after an error',
        ),
      )
  }
  throw error
}

/** The phases from the fence to verify: a move resumed in one of them goes back to catch-up first. */
const FENCED_PHASES: readonly MoveState[] = ['fence', 'final_catch_up', 'verify']

/**
 * A move resumed at the fence or while fenced has no baseline in this process (it lives in the
 * mover's memory): verify would hash every row of the tenant while its writes are held, however large
 * it is, and the lag was last looked at before the crash. So the tenant is let go, and the move goes
 * back to catch-up, which looks at the lag, takes the baselines and fences again.
 */
async function resumedFenced(ctx: MoveContext): Promise<Next> {
  ctx.deps.logger.info({ move: ctx.move.id }, 'resumed at the fence: back to catch-up first')
  // Whatever the crash left: the directory's `frozen` without the shard's fence holds writes too.
  await unfence(ctx)
  return { state: 'catch_up' }
}

/**
 * After a crash between fence and flip the source may have been unfenced (a fence retry, a final
 * catch-up that timed out). `moved` is a flip that stopped before the directory changed: still fenced.
 */
async function stillFenced(ctx: MoveContext): Promise<boolean> {
  const owned = await readOwnership(ctx.source, ctx.move.tenantId)
  return owned?.state === 'frozen' || owned?.state === 'moved'
}

/** Waits until the target has applied (and made durable) everything up to the fence LSN. */
async function waitPastFence(ctx: MoveContext): Promise<Next> {
  if (!ctx.move.fenceLsn || !(await stillFenced(ctx))) return { state: 'fence' }
  const fenceLsn = parseLsn(ctx.move.fenceLsn)
  const deadline = Date.now() + ctx.deps.topology.mover.cutoverTimeoutMs
  for (;;) {
    const { confirmed } = await slotProgress(ctx.source, ctx.name)
    if (confirmed >= fenceLsn) return { state: 'verify' }
    if (Date.now() > deadline) {
      ctx.deps.logger.warn({ move: ctx.move.id }, 'target did not reach the fence LSN in time; unfencing')
      await unfence(ctx)
      return { state: 'catch_up' }
    }
    await sleep(POLL_MS)
  }
}

/**
 * Row count and content hash of every tenant table, equal on both sides, read while the tenant is
 * fenced. A difference unfences and stops the move: it is a bug or a divergence to look at, never
 * something to cut over.
 */
async function verify(ctx: MoveContext): Promise<Next> {
  if (!(await stillFenced(ctx))) return { state: 'fence' }
  const tables = await ctx.tables()
  const differing = (a: TableDigest[], b: TableDigest[]) =>
    a.filter((d, i) => d.rows !== b[i]?.rows || d.hash !== b[i]?.hash)
  const started = performance.now()
  let { before, after, sidesFromBaseline } = await digestBothSides(ctx, tables, false)
  let differ = differing(before, after)
  ctx.deps.logger.info(
    {
      move: ctx.move.id,
      sidesFromBaseline,
      ms: Math.round(performance.now() - started),
      equal: differ.length === 0,
    },
    'verify hashed both sides',
  )
  if (differ.length > 0 && sidesFromBaseline > 0) {
    // Never fail a move on the shortcut alone: a difference is confirmed by hashing every row.
    ctx.deps.logger.warn(
      { move: ctx.move.id },
      'verify: the sides differ since the baseline; hashing in full',
    )
    ;({ before, after } = await digestBothSides(ctx, tables, true))
    differ = differing(before, after)
  }
  await releaseBaselines(ctx)
  if (differ.length > 0) {
    await unfence(ctx)
    const detail = differ
      .map((d) => {
        const other = after.find((a) => a.table === d.table)
        return `${d.table}: ${d.rows} rows on the source, ${other?.rows} on the target${d.rows === other?.rows ? ' (content differs)' : ''}`
      })
      .join('; ')
    await ctx.save({ state: 'catch_up', error: `verify failed: ${detail}` })
    throw new SwitchyardError('verify_failed', `the target's copy differs from the source: ${detail}`)
  }
  return { state: 'flip', progress: { copiedRows: before.reduce((sum, d) => sum + d.rows, 0) } }
}

/**
 * The cutover: the target owns the tenant at the next epoch, then one directory transaction moves the
 * tenant there (epoch + 1, active) and records the move's next state, so the flip and its record
 * cannot disagree. Idempotent: a resumed flip finds the directory already flipped.
 */
async function flip(ctx: MoveContext): Promise<Next> {
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
    return { state: 'fence' }
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
  const flippedAt = Date.now()
  if (!flipped) {
    await deps.directory.sql.begin(async (sql) => {
      const done = await sql`
        update tenants set shard_id = ${move.targetShard}, epoch = ${epoch}, state = 'active'
        where id = ${move.tenantId} and shard_id = ${move.sourceShard} and epoch = ${epoch - 1}
          and state = 'frozen'`
      if (done.count !== 1)
        throw new SwitchyardError('move_broken', `tenant ${move.tenantId} changed under the move`)
      ctx.move = await saveMove(
        sql,
        ctx.move,
        { state: 'cleanup', cutoverLsn, progress: { flippedAt } },
        ctx.runner,
      )
    })
  }
  lap('directory')
  // Routers holding the tenant's writes wake on this and resolve the new route.
  await ctx.invalidate()
  lap('invalidate')
  // The stall as clients see it: from the fence until routers are told where the tenant is now.
  const stall = move.progress.frozenAt ? { stallMs: Date.now() - move.progress.frozenAt } : {}
  if (stall.stallMs !== undefined) deps.metrics?.stallSeconds.observe(stall.stallMs / 1000)
  deps.logger.info({ move: move.id, tenant: move.tenantId, ...stall, cutoverLsn, steps }, 'move cut over')
  return {
    state: 'cleanup',
    cutoverLsn: ctx.move.cutoverLsn ?? cutoverLsn,
    progress: { ...stall, frozenAt: null },
  }
}

/**
 * After the cutover: the source stops serving the tenant (`moved`) and routers forget the old route.
 * The tenant's last-write LSN in Redis is left alone: it is in the source's WAL, and lowering it could
 * let a read skip a write made on the target meanwhile; a higher one only sends reads to the primary
 * until the key expires or a later write passes it. The subscription (and with it its slot on
 * the source), any sync slot and the publication are dropped; after a grace period longer than the
 * route cache TTL, the source's copy is deleted in batches.
 */
async function cleanup(ctx: MoveContext): Promise<Next> {
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
  return { state: 'done', error: null, progress: { deletedRows } }
}

const subscriptionId = (move: Move) =>
  move.progress.subscriptionOid && move.progress.targetSystemId
    ? { oid: move.progress.subscriptionOid, systemId: move.progress.targetSystemId }
    : null

const fromEpoch = (move: Move) => {
  if (move.progress.fromEpoch === undefined) throw new Error(`move ${move.id} has no starting epoch`)
  return move.progress.fromEpoch
}

const applyStopped = (ctx: MoveContext) =>
  new SwitchyardError(
    'apply_failed',
    `subscription ${ctx.name} on ${ctx.move.targetShard} disabled itself after an apply error (see that server's log); abort the move`,
  )

const timeout = (ctx: MoveContext, what: string) =>
  new SwitchyardError('move_timeout', `the ${what} of move ${ctx.move.id} did not finish in time; resume it`)

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Admin connections to shard primaries, opened on demand, closed together. */
export function shardConnections(topology: Topology) {
  const open = new Map<string, Sql>()
  return {
    get(id: string): Sql {
      let sql = open.get(id)
      if (!sql) {
        sql = openAdmin(shardPrimary(topology, id), { max: 2, idle_timeout: 0 })
        open.set(id, sql)
      }
      return sql
    },
    async close() {
      await Promise.all([...open.values()].map((sql) => sql.end({ timeout: 5 })))
      open.clear()
    },
  }
}

/**
 * Runs `use` holding the move's run lock (a session advisory lock in the directory: a crashed runner's
 * lock goes with its connection), with the move loaded and shard connections open. Every record the
 * run writes checks the lock is still this session's (`saveMove`'s runner), so a runner whose session
 * was cut stops at its next write while another process may take the move over.
 */
async function withRunLock<T>(
  deps: MoverDeps,
  id: string,
  use: (ctx: MoveContext) => Promise<T>,
): Promise<T> {
  const initial = await findMove(deps.directory, id)
  const busy = () => new SwitchyardError('move_busy', `move ${initial.id} is being run by another process`)
  return withSessionLock(deps.topology.directory, runLock(initial.id), busy, async (session) => {
    const shards = shardConnections(deps.topology)
    const ctx = moveContext(deps, await findMove(deps.directory, id), shards.get, session.pid)
    try {
      return await use(ctx)
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      deps.logger.error({ move: initial.id, state: ctx.move.state, error: message }, 'move stopped')
      await ctx.save({ error: message }).catch(() => {})
      throw error
    } finally {
      await releaseBaselines(ctx)
      await shards.close()
    }
  })
}

function moveContext(deps: MoverDeps, move: Move, shard: (id: string) => Sql, runner: number): MoveContext {
  let tables: Promise<HashedTable[]> | undefined
  // Writes of the move's record go out one after another: a progress report still in flight must never
  // land after (and undo) the state that follows it.
  let queue: Promise<unknown> = Promise.resolve()
  const serially = <T>(write: () => Promise<T>): Promise<T> => {
    const next = queue.then(write, write)
    queue = next.catch(() => {})
    return next
  }
  const ctx: MoveContext = {
    deps,
    move,
    runner,
    name: artifactName(move.id),
    source: shard(move.sourceShard),
    target: shard(move.targetShard),
    sourceUrl: shardPrimary(deps.topology, move.sourceShard),
    targetUrl: shardPrimary(deps.topology, move.targetShard),
    tables: () => {
      tables ??= tenantTables(ctx.source, deps.topology.tenantSchema.schemas).then((found) =>
        withRowHashes(ctx.source, found),
      )
      return tables
    },
    save(change) {
      return serially(async () => {
        ctx.move = await saveMove(deps.directory.sql, ctx.move, change, runner)
        deps.onProgress?.(ctx.move)
        return ctx.move
      })
    },
    async report(progress) {
      await ctx.save({ progress })
    },
    async invalidate() {
      if (deps.redis) await publishInvalidation(deps.redis, move.tenantId)
    },
  }
  return ctx
}
