import type { Topology } from '../config/topology.ts'
import type { Directory } from '../directory/connection.ts'
import type { Redis } from '../directory/redis.ts'
import { publishInvalidation } from '../directory/routes.ts'
import { withSessionLock } from '../directory/session-lock.ts'
import { unfreeze } from '../directory/tenant-state.ts'
import { shardPrimary } from '../directory/tenants.ts'
import { SwitchyardError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { openAdmin, type Sql } from '../shard/connection.ts'
import { unfenceTenant } from '../shard/fence.ts'
import { movedTables, tenantTables } from '../shard/tables.ts'
import { artifactName } from './artifacts.ts'
import type { FailpointWhen } from './failpoint.ts'
import type { MoverMetrics } from './metrics.ts'
import { aborting } from './phases/aborting.ts'
import { catchUp, releaseBaselines } from './phases/catch-up.ts'
import { cleanup } from './phases/cleanup.ts'
import type { MoveContext, MoveRun, Step, StepResult } from './phases/context.ts'
import { copy } from './phases/copy.ts'
import { fence } from './phases/fence.ts'
import { finalCatchUp } from './phases/final-catch-up.ts'
import { flip } from './phases/flip.ts'
import { preflight } from './phases/preflight.ts'
import { publication } from './phases/publication.ts'
import { subscription } from './phases/subscription.ts'
import { verify } from './phases/verify.ts'
import {
  FINISHED,
  findMove,
  type Move,
  type MoveState,
  type Phase,
  type Running,
  recordMove,
  runLock,
  saveMove,
} from './record.ts'
import { checkMoveRequest } from './request.ts'
import { type HashedTable, withRowHashes } from './rows.ts'

/**
 * The move as a graph: each state the mover runs, its step (src/migrate-tenant/phases/, one file each,
 * named after the phase), and every state the step may lead to, forward first, then the ways back. Only
 * the runner below (`take`) changes a move's state, and only along these edges. `fenced`: the tenant may
 * be fenced in it (leaving it back before the fence unfences). `pastCutover`: the directory has flipped,
 * an abort refuses. `aside`: not on the way to `done` (progress bars do not count it). Until the cutover
 * a move may also be aborted (`abortMove` alone takes that edge), which leads to `aborting`. A new phase
 * is a file in phases/ and a row here (plus the edge into it from the row before).
 */
export const GRAPH = {
  preflight: { step: preflight, to: ['publication'] },
  publication: { step: publication, to: ['subscription'] },
  subscription: { step: subscription, to: ['copy'] },
  copy: { step: copy, to: ['catch_up'] },
  catch_up: { step: catchUp, to: ['fence'] },
  // Back to catch-up: the writes did not drain (the move waits), or an error while fencing.
  fence: { step: fence, to: ['final_catch_up', 'catch_up'], fenced: true },
  // Back to the fence: the source was found unfenced; to catch-up: the target too slow, or an error.
  final_catch_up: { step: finalCatchUp, to: ['verify', 'fence', 'catch_up'], fenced: true },
  // Back to catch-up: the copies differ (the move waits), or an error.
  verify: { step: verify, to: ['flip', 'fence', 'catch_up'], fenced: true },
  // Back to the fence: the source was found unfenced (the directory not flipped yet).
  flip: { step: flip, to: ['cleanup', 'fence'] },
  cleanup: { step: cleanup, to: ['done'], pastCutover: true },
  aborting: { step: aborting, to: ['aborted'], aside: true },
} as const

interface Row {
  readonly to: readonly MoveState[]
  readonly fenced?: boolean
  readonly pastCutover?: boolean
  readonly aside?: boolean
}
const row = (state: MoveState): Row | undefined =>
  Object.hasOwn(GRAPH, state) ? (GRAPH[state as Running] as Row) : undefined
const RUNNING = Object.keys(GRAPH) as Running[]

/** The phases in the order a move goes through them when nothing stops it (progress bars count them). */
export const PHASES: readonly Phase[] = [
  ...(RUNNING.filter((state) => !row(state)?.aside) as Exclude<Running, 'aborting'>[]),
  'done',
]
const BEFORE_FENCE: readonly MoveState[] = PHASES.slice(
  0,
  PHASES.findIndex((state) => row(state)?.fenced),
)

/** Whether a step may take the move from `from` to `to`: an edge of the graph. */
export const mayGo = (from: MoveState, to: MoveState): boolean => row(from)?.to.includes(to) ?? false

/** Whether a move in `state` may be aborted: it runs, and has not cut over (the directory may have). */
export const mayAbort = (state: MoveState): boolean => {
  const at = row(state)
  return at !== undefined && !at.pastCutover && !at.aside
}

const fenced = (state: MoveState) => row(state)?.fenced === true
const pastCutover = (state: MoveState) => row(state)?.pastCutover === true

/**
 * A move that goes from a phase where the tenant may be fenced back before the fence (a resume, an
 * error, a target too slow, a failed verify) is unfenced by the runner first, so the tenant's writes are
 * never left held behind a move that waits.
 */
const leavesFence = (from: MoveState, to: MoveState) => fenced(from) && BEFORE_FENCE.includes(to)

export type Steps<Ctx> = { readonly [S in Running]: Step<Ctx> }
const STEPS: Steps<MoveContext> = Object.fromEntries(
  Object.entries(GRAPH).map(([state, row]) => [state, row.step]),
) as Steps<MoveContext>

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
    const checked = await checkMoveRequest(deps.topology, deps.directory, shards.get, request)
    return await recordMove(deps.directory, deps.topology, { tenant: checked.tenant, target: checked.target })
  } finally {
    await shards.close()
  }
}

/**
 * Runs (or resumes) a move from its recorded state to a finished one. Each phase's side effect is
 * idempotent and its state was persisted before it started, so a crash anywhere resumes by redoing the
 * phase it was in. One process at a time: a session lock in the directory refuses a second runner.
 */
export async function runMove(deps: MoverDeps, id: string): Promise<Move> {
  return withRunLock(deps, id, (ctx) => drive(ctx, STEPS))
}

/**
 * The runner: steps the move along the graph until it is finished, every edge through `take`. A move
 * resumed while it may be fenced has no baseline in this process (it lives in the
 * mover's memory): verify would hash every row of the tenant while its writes are held, however large
 * it is, and the lag was last looked at before the crash. So it goes back to catch-up first, unfenced.
 */
export async function drive<Ctx extends MoveRun>(ctx: Ctx, steps: Steps<Ctx>): Promise<Move> {
  const resumedAt = ctx.move.state
  if (fenced(resumedAt)) {
    const resumed = { back: 'catch_up', reason: 'resumed at the fence: back to catch-up first' } as const
    await take(ctx, resumedAt, resumed)
  }
  while (!FINISHED.includes(ctx.move.state)) {
    const from = ctx.move.state as Running
    const started = performance.now()
    const result = await runStep(ctx, steps[from], from)
    const stepMs = Math.round(performance.now() - started)
    await take(ctx, from, result, { stepMs, afterStep: () => ctx.deps.failpoint?.(from, 'after') })
    // Measured to here: a step whose side effect commits with its state (the flip) includes that commit.
    const ms = Math.round(performance.now() - started)
    ctx.deps.metrics?.phaseSeconds.observe({ phase: from }, ms / 1000)
    const copied = result.progress?.copiedRows
    const rate =
      from === 'copy' && copied !== undefined
        ? { rowsPerSecond: Math.round(copied / Math.max(ms / 1000, 0.001)) }
        : {}
    ctx.deps.logger.info(
      { move: ctx.move.id, tenant: ctx.move.tenantId, phase: from, ms, ...rate },
      'move phase done',
    )
  }
  ctx.deps.metrics?.moves.inc({ outcome: ctx.move.state })
  if (ctx.move.state === 'aborted')
    ctx.deps.logger.info({ move: ctx.move.id, tenant: ctx.move.tenantId }, 'move aborted')
  return ctx.move
}

/**
 * One step. An error in a phase that may have the tenant fenced must not leave its writes held: the
 * move goes back to catch-up, unfenced, to be resumed. Best effort: a source that does not answer cannot
 * be unfenced, and a router's rescue (or the operator) resumes the move from where it stopped. The flip
 * is never undone here: once it has begun, only going forward (resume) or `move abort` is safe.
 */
async function runStep<Ctx extends MoveRun>(ctx: Ctx, step: Step<Ctx>, from: Running): Promise<StepResult> {
  try {
    // A failpoint that throws (in-process tests) is an error of the step, as a shard's would be.
    await ctx.deps.failpoint?.(from, 'before')
    return await step(ctx)
  } catch (error) {
    if (fenced(from)) {
      const reason = `${error instanceof Error ? error.message : String(error)}; unfencing`
      await take(ctx, from, { back: 'catch_up', reason }).catch((failed: Error) =>
        ctx.deps.logger.error(
          { move: ctx.move.id, error: failed.message },
          'could not unfence after an error',
        ),
      )
    }
    throw error
  }
}

/**
 * Takes the edge a step chose (`abortMove` alone takes `aborting`): checks it is one of the graph's,
 * unfences when it leaves the fenced phases, and saves the new state with what the step learned and the
 * step's time (`stepMs`). `afterStep` (the failpoint after the side effect) runs before the save, or, for
 * a step whose side effect commits with its state (the flip), after that commit and what follows it.
 */
async function take(
  ctx: MoveRun,
  from: MoveState,
  result: StepResult,
  { stepMs, afterStep, abort = false }: TakeOptions = {},
): Promise<void> {
  const { to, learned, commit, afterSave, reason, waits } = edgeOf(result)
  const allowed = abort ? to === 'aborting' && mayAbort(from) : mayGo(from, to)
  if (!allowed)
    throw new SwitchyardError('move_broken', `move ${ctx.move.id}: ${from} does not lead to ${to}`)
  if (leavesFence(from, to)) await ctx.unfence()
  // A step that stops the move (`waits`) ends in an error, as it did when steps threw: no 'after'.
  if (!commit && !waits) await afterStep?.()
  const spent = ctx.move.progress.phases?.[from] ?? 0
  const phases =
    stepMs === undefined ? ctx.move.progress.phases : { ...ctx.move.progress.phases, [from]: spent + stepMs }
  await ctx.save({ ...learned, state: to, progress: { ...learned.progress, phases } }, commit)
  if (reason !== undefined) ctx.deps.logger.warn({ move: ctx.move.id, from, to }, reason)
  await afterSave?.()
  if (commit) await afterStep?.()
  if (waits) throw waits
}

interface TakeOptions {
  stepMs?: number | undefined
  afterStep?: (() => void | Promise<void>) | undefined
  /** The operator's abort: the one edge not in the graph's rows. */
  abort?: boolean
}

function edgeOf(result: StepResult) {
  if (result.next !== undefined) {
    const { next, back: _back, commit, afterSave, ...learned } = result
    return { to: next, learned, commit, afterSave, reason: undefined, waits: undefined }
  }
  const { back, next: _next, reason, waits, ...learned } = result
  return { to: back, learned, commit: undefined, afterSave: undefined, reason, waits }
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
    if (tenant?.shard_id === move.targetShard || pastCutover(move.state)) {
      if (options.moveBack) return { cutOver: move }
      throw new SwitchyardError(
        'move_past_cutover',
        `move ${move.id} has cut over to ${move.targetShard}: resume it (\`switchyard move resume ${move.id}\`), or finish it and move the tenant back to ${move.sourceShard} (\`switchyard move abort ${move.id} --move-back\`)`,
      )
    }
    if (move.state !== 'aborting') await take(ctx, move.state, { next: 'aborting' }, { abort: true })
    return { aborted: await drive(ctx, STEPS) }
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
        withRowHashes(ctx.source, movedTables(found)),
      )
      return tables
    },
    save(change, commit) {
      return serially(async () => {
        ctx.move = commit
          ? await deps.directory.sql.begin(async (sql) => {
              await commit(sql)
              return saveMove(sql, ctx.move, change, runner)
            })
          : await saveMove(deps.directory.sql, ctx.move, change, runner)
        deps.onProgress?.(ctx.move)
        return ctx.move
      })
    },
    async report(progress) {
      await ctx.save({ progress })
    },
    async unfence() {
      // Only the move's runner may unfence: another process may be flipping it (the record write checks).
      await ctx.save({})
      await unfenceTenant(ctx.source, move.tenantId)
      await unfreeze(deps.directory.sql, move.tenantId, move.sourceShard)
      await ctx.report({ frozenAt: null })
      await ctx.invalidate()
    },
    async invalidate() {
      if (deps.redis && !(await publishInvalidation(deps.redis, move.tenantId)))
        deps.logger.warn(
          { tenant: move.tenantId },
          "Redis did not take the read cache bump: routers may serve the tenant's reads cached before the move until their TTL",
        )
    },
  }
  return ctx
}
