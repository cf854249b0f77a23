import { z } from 'zod'
import type { Directory } from '../directory/connection.ts'
import { openMove } from '../directory/move-states.ts'
import { withSessionLock } from '../directory/session-lock.ts'
import { SwitchyardError } from '../errors.ts'
import { createMove, type MoverDeps, runMove } from '../migrate-tenant/mover.ts'
import { findMove, type Move } from '../migrate-tenant/record.ts'
import { findPlan, type PlanState, type StoredPlan, type StoredPlanMove } from './plans.ts'

/** Moves at once, overall or out of one shard: what `rebalance apply` and `POST /plans/:id/apply` accept. */
export const moveCount = z.number().int().min(1).max(16)
export const applyOptionsSchema = z.strictObject({
  concurrency: moveCount.optional(),
  maxPerSource: moveCount.optional(),
})

/** How far a plan is: its moves done, of all its moves. */
export interface PlanTally {
  done: number
  total: number
}

export interface ApplyOptions {
  /** Moves running at once (default 1). */
  concurrency?: number
  /** Moves out of one source shard running at once (default 1; the mover's own cap still applies). */
  maxPerSource?: number
  /** A plan move started, progressed or finished; `tally` counts it once it is done. */
  onMove?: (planMove: StoredPlanMove, move: Move | undefined, tally: PlanTally) => void
}

/**
 * Starts applying a stored plan (the latest without an id): marks it `applying`, refusing a closed one,
 * and runs it. `plan` is the plan as it starts (the admin API answers with it at once and lets it run
 * on), `finished` the plan as it ends (the CLI waits for it).
 */
export async function applyPlan(
  deps: MoverDeps,
  id: unknown,
  options: ApplyOptions = {},
): Promise<{ plan: StoredPlan; finished: Promise<StoredPlan> }> {
  const plan = await startApplying(deps.directory, id)
  return { plan, finished: executePlan(deps, plan, options) }
}

/**
 * `rebalance apply`: runs the moves of a plan `applyPlan` marked applying through the mover, in plan
 * order, `concurrency` at a time and at most `maxPerSource` out of one shard. The plan lives in the directory, so a crashed
 * executor is resumed by applying the plan again: moves already done are skipped, a move that was
 * running is resumed from its recorded phase. `rebalance cancel` is honoured between moves. A move that
 * fails is marked failed (its own record says why and can still be resumed or aborted) and the others
 * go on; the plan ends `done`, `failed` (some move failed) or `cancelled`.
 */
async function executePlan(
  deps: MoverDeps,
  plan: StoredPlan,
  options: ApplyOptions = {},
): Promise<StoredPlan> {
  const { directory } = deps
  const concurrency = Math.max(1, options.concurrency ?? 1)
  const maxPerSource = Math.max(1, options.maxPerSource ?? 1)
  const busy = () => new SwitchyardError('plan_busy', `plan ${plan.id} is being applied by another process`)
  return withSessionLock(
    deps.topology.directory,
    { scope: 'switchyard.plan', id: plan.id },
    busy,
    async () => {
      const queue = plan.moves.filter((m) => m.state !== 'done' && m.state !== 'failed')
      const tally = { done: plan.moves.filter((m) => m.state === 'done').length, total: plan.moves.length }
      const running = new Map<string, number>()
      const take = (): StoredPlanMove | undefined => {
        const index = queue.findIndex((m) => (running.get(m.from) ?? 0) < maxPerSource)
        return index === -1 ? undefined : queue.splice(index, 1)[0]
      }
      const worker = async () => {
        for (;;) {
          if ((await planState(directory, plan.id)) === 'cancelled') return
          const next = take()
          if (!next) return
          running.set(next.from, (running.get(next.from) ?? 0) + 1)
          try {
            await applyOne(deps, plan.id, next, { ...options, tally })
          } finally {
            running.set(next.from, (running.get(next.from) ?? 1) - 1)
          }
        }
      }
      await Promise.all(Array.from({ length: concurrency }, worker))
      return finishPlan(directory, plan.id)
    },
  )
}

/** Marks an open plan `applying`, refusing a closed one. */
async function startApplying(directory: Directory, id: unknown): Promise<StoredPlan> {
  const plan = await findPlan(directory, id)
  if (plan.state !== 'planned' && plan.state !== 'applying')
    throw new SwitchyardError('plan_closed', `plan ${plan.id} is ${plan.state}: it cannot be applied`)
  await directory.sql`
    update rebalance_plans set state = 'applying', updated_at = now() where id = ${plan.id} and state = 'planned'`
  return findPlan(directory, plan.id)
}

async function planState(directory: Directory, id: string): Promise<PlanState | undefined> {
  const [row] = await directory.sql<
    { state: PlanState }[]
  >`select state from rebalance_plans where id = ${id}`
  return row?.state
}

/** One plan move: resume the move it started, or start it; record how it ended. */
async function applyOne(
  deps: MoverDeps,
  planId: string,
  planMove: StoredPlanMove,
  options: ApplyOptions & { tally: PlanTally },
) {
  const { tally } = options
  const { directory } = deps
  const mark = async (change: { state: StoredPlanMove['state']; moveId?: string; error?: string | null }) => {
    await directory.sql`
      update rebalance_plan_moves set state = ${change.state}, move_id = coalesce(${change.moveId ?? null}, move_id),
        error = ${change.error ?? null}, updated_at = now()
      where plan_id = ${planId} and position = ${planMove.position}`
    Object.assign(planMove, change)
  }
  try {
    let move = planMove.moveId ? await findMove(directory, planMove.moveId) : undefined
    if (!move || move.state === 'aborted' || move.state === 'failed') {
      // An executor that died between recording a move and marking the plan left it open: take it up.
      move =
        (await openMoveOf(directory, planMove)) ??
        (await createMove(deps, { tenant: planMove.tenant, target: planMove.to }))
      await mark({ state: 'moving', moveId: move.id })
    }
    options.onMove?.(planMove, move, tally)
    const done = await runMove(
      {
        ...deps,
        onProgress: (m) => {
          deps.onProgress?.(m)
          options.onMove?.(planMove, m, tally)
        },
      },
      move.id,
    )
    await mark({ state: done.state === 'done' ? 'done' : 'failed', error: done.error })
    if (planMove.state === 'done') tally.done += 1
    options.onMove?.(planMove, done, tally)
  } catch (error) {
    await mark({ state: 'failed', error: (error as Error).message })
    deps.logger.warn(
      { plan: planId, tenant: planMove.tenant, error: (error as Error).message },
      'plan move failed',
    )
    options.onMove?.(planMove, undefined, tally)
  }
}

async function openMoveOf(directory: Directory, planMove: StoredPlanMove): Promise<Move | undefined> {
  const [row] = await directory.sql<{ id: string }[]>`
    select id from moves where tenant_id = ${planMove.tenant} and target_shard = ${planMove.to}
      and ${directory.sql.unsafe(openMove())}`
  return row ? findMove(directory, row.id) : undefined
}

async function finishPlan(directory: Directory, id: string): Promise<StoredPlan> {
  const plan = await findPlan(directory, id)
  if (plan.state === 'cancelled') {
    await directory.sql`update rebalance_plans set finished_at = now(), updated_at = now() where id = ${id}`
    return findPlan(directory, id)
  }
  const failed = plan.moves.filter((m) => m.state === 'failed')
  const unfinished = plan.moves.some((m) => m.state === 'pending' || m.state === 'moving')
  if (unfinished) return plan
  const error = failed.length
    ? `${failed.length} move(s) failed: ${failed.map((m) => `${m.tenant}: ${m.error}`).join('; ')}`
    : null
  await directory.sql`
    update rebalance_plans set state = ${failed.length ? 'failed' : 'done'}, error = ${error},
      finished_at = now(), updated_at = now()
    where id = ${id}`
  return findPlan(directory, id)
}
