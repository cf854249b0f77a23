import { randomUUID } from 'node:crypto'
import { z } from 'zod'
import type { Topology } from '../config/topology.ts'
import { shardId } from '../config/topology.ts'
import type { Directory } from '../directory/connection.ts'
import type { PlanFill, planMoveStates, planStates, planStrategies } from '../directory/schema.ts'
import { SwitchyardError } from '../errors.ts'
import type { Queries } from '../shard/connection.ts'
import { planDrain } from './drain.ts'
import type { ShardState } from './placement.ts'
import { type PlannedMove, planRebalance, type RebalanceStrategy } from './planner.ts'
import { type ShardFillRow, shardFills, tenantBytes } from './stats.ts'

export const rebalanceStrategy = z.enum(['count', 'size'], { message: 'must be "count" or "size"' })
const uuid = z.uuid({ message: 'must be a UUID' })

export type PlanState = (typeof planStates)[number]

export interface StoredPlanMove {
  position: number
  tenant: string
  from: string
  to: string
  bytes: number
  state: (typeof planMoveStates)[number]
  /** The mover's move (the directory's `moves` row), once it has started. */
  moveId: string | null
  error: string | null
}

/** A plan as the directory keeps it; `rebalance show` and `GET /admin/v1/plans/:id` print this. */
export interface StoredPlan {
  id: string
  strategy: (typeof planStrategies)[number]
  state: PlanState
  /** The shard a drain plan empties; null for a rebalance. */
  shard: string | null
  balanced: boolean
  reason: string | null
  before: PlanFill[]
  after: PlanFill[]
  error: string | null
  createdAt: Date
  updatedAt: Date
  finishedAt: Date | null
  moves: StoredPlanMove[]
}

/** A plan is open while it may still move tenants. */
const OPEN: readonly PlanState[] = ['planned', 'applying']

export function parseShardId(value: unknown): string {
  const parsed = shardId.safeParse(value)
  if (!parsed.success)
    throw new SwitchyardError(
      'invalid_input',
      `shard id ${JSON.stringify(value)} ${parsed.error.issues[0]?.message}`,
    )
  return parsed.data
}

export function parsePlanId(value: unknown): string {
  const parsed = uuid.safeParse(value)
  if (!parsed.success)
    throw new SwitchyardError('invalid_input', `plan id ${JSON.stringify(value)} must be a UUID`)
  return parsed.data.toLowerCase()
}

const unknownShard = (id: string) =>
  new SwitchyardError('shard_unknown', `shard "${id}" is not registered in the directory`)

type ShardRow = { id: string; state: ShardState; capacity: number }
type TenantPlacement = { id: string; shard_id: string }

/**
 * Computes a rebalance plan from the directory (shards, tenants) and the shards (each tenant's bytes)
 * and stores it. Every shard of the topology must answer: a plan built on missing weights would be wrong.
 * Throws `no_capacity` when the active shards cannot hold every tenant; nothing is stored then.
 */
export async function createRebalancePlan(
  directory: Directory,
  topology: Topology,
  strategyInput: unknown,
): Promise<StoredPlan> {
  const parsed = rebalanceStrategy.safeParse(strategyInput)
  if (!parsed.success)
    throw new SwitchyardError(
      'invalid_input',
      `strategy ${JSON.stringify(strategyInput)} must be "count" or "size"`,
    )
  const strategy: RebalanceStrategy = parsed.data
  const { bytes, unreachable } = await tenantBytes(topology)
  if (unreachable.length) {
    const which = unreachable.map((u) => `${u.shard} (${u.error})`).join(', ')
    throw new SwitchyardError('shard_unavailable', `cannot weigh the tenants of ${which}`, { unreachable })
  }
  // One snapshot of shards and tenants: a tenant added between two reads must not be half-seen.
  return directory.sql.begin('isolation level repeatable read', async (sql) => {
    const shards = await sql<ShardRow[]>`select id, state, capacity from shards order by id`
    const tenants = await sql<TenantPlacement[]>`select id, shard_id from tenants`
    const plan = planRebalance(
      {
        shards,
        tenants: tenants.map((t) => ({ id: t.id, shard: t.shard_id, bytes: bytes.get(t.id) ?? 0 })),
      },
      strategy,
    )
    return storePlan(sql, { ...plan, shard: null, reason: plan.reason ?? null })
  })
}

/**
 * Marks a shard draining and stores a plan that moves all its tenants onto the other active shards,
 * in one directory transaction: when they lack room (`no_capacity`) nothing is written, not even the
 * mark. Every shard row is locked in id order, as automatic placement does, so no tenant can be placed
 * on the shard (or take the room the plan counts on) while the plan is made. Draining an already
 * draining shard plans its current tenants again.
 */
export async function drainShard(directory: Directory, topology: Topology, id: unknown): Promise<StoredPlan> {
  const shard = parseShardId(id)
  // Bytes only label the moves and the fill: a shard that does not answer counts as 0, and its
  // tenants can still be planned away (draining is what one does with a failing shard).
  const { bytes } = await tenantBytes(topology)
  return directory.sql.begin(async (sql) => {
    const shards = await sql<ShardRow[]>`select id, state, capacity from shards order by id for update`
    if (!shards.some((s) => s.id === shard)) throw unknownShard(shard)
    const tenants = await sql<TenantPlacement[]>`select id, shard_id from tenants`
    const plan = planDrain(
      {
        shards,
        tenants: tenants.map((t) => ({ id: t.id, shard: t.shard_id, bytes: bytes.get(t.id) ?? 0 })),
      },
      shard,
    )
    await sql`update shards set state = 'draining', updated_at = now() where id = ${shard}`
    return storePlan(sql, { ...plan, reason: null })
  })
}

/** Makes a shard active again; drain plans for it that have not started are cancelled. */
export async function undrainShard(
  directory: Directory,
  id: unknown,
): Promise<{ shard: ShardFillRow; cancelledPlans: string[] }> {
  const shard = parseShardId(id)
  return directory.sql.begin(async (sql) => {
    const [row] = await sql`
      update shards set state = 'active', updated_at = now()
      where id = ${shard} returning id`
    if (!row) throw unknownShard(shard)
    const cancelled = await sql<{ id: string }[]>`
      update rebalance_plans set state = 'cancelled', updated_at = now(), finished_at = now()
      where drain_shard = ${shard} and state = 'planned' returning id`
    const fill = (await shardFills(sql)).find((s) => s.id === shard) as ShardFillRow
    return { shard: fill, cancelledPlans: cancelled.map((c) => c.id) }
  })
}

type NewPlan = {
  strategy: StoredPlan['strategy']
  shard: string | null
  balanced: boolean
  reason: string | null
  before: PlanFill[]
  after: PlanFill[]
  moves: PlannedMove[]
}

/** Rows per insert: 7 parameters each stays far below PostgreSQL's 65,535. */
const MOVES_PER_INSERT = 5000

async function storePlan(sql: Queries, plan: NewPlan): Promise<StoredPlan> {
  const id = randomUUID()
  await sql`
    insert into rebalance_plans (id, strategy, drain_shard, balanced, reason, before, after)
    values (${id}, ${plan.strategy}, ${plan.shard}, ${plan.balanced}, ${plan.reason},
            ${JSON.stringify(plan.before)}::jsonb, ${JSON.stringify(plan.after)}::jsonb)`
  const rows = plan.moves.map((m, position) => ({
    plan_id: id,
    position,
    tenant_id: m.tenant,
    from_shard: m.from,
    to_shard: m.to,
    bytes: m.bytes,
  }))
  for (let i = 0; i < rows.length; i += MOVES_PER_INSERT) {
    await sql`insert into rebalance_plan_moves ${sql(
      rows.slice(i, i + MOVES_PER_INSERT),
      'plan_id',
      'position',
      'tenant_id',
      'from_shard',
      'to_shard',
      'bytes',
    )}`
  }
  return readPlan(sql, id)
}

async function readPlan(sql: Queries, id: string): Promise<StoredPlan> {
  const [plan] = await sql<Omit<StoredPlan, 'moves'>[]>`
    select id, strategy, state, drain_shard as shard, balanced, reason, before, after, error,
           created_at as "createdAt", updated_at as "updatedAt", finished_at as "finishedAt"
    from rebalance_plans where id = ${id}`
  if (!plan) throw new SwitchyardError('plan_unknown', `plan ${id} does not exist`)
  const moves = await sql<(Omit<StoredPlanMove, 'bytes'> & { bytes: string })[]>`
    select position, tenant_id as tenant, from_shard as from, to_shard as to, bytes::text, state,
           move_id as "moveId", error
    from rebalance_plan_moves where plan_id = ${id} order by position`
  return { ...plan, moves: moves.map((m) => ({ ...m, bytes: Number(m.bytes) })) }
}

/** The latest plans first, without their moves (`GET /admin/v1/plans`, the console's list). */
export async function listPlans(
  directory: Directory,
  limit = 50,
): Promise<(Omit<StoredPlan, 'moves'> & { moveCount: number })[]> {
  return directory.sql<(Omit<StoredPlan, 'moves'> & { moveCount: number })[]>`
    select id, strategy, state, drain_shard as shard, balanced, reason, before, after, error,
           created_at as "createdAt", updated_at as "updatedAt", finished_at as "finishedAt",
           (select count(*)::int from rebalance_plan_moves m where m.plan_id = p.id) as "moveCount"
    from rebalance_plans p order by created_at desc, id desc limit ${limit}`
}

/** A plan by id, or the latest one when no id is given. */
export async function findPlan(directory: Directory, id?: unknown): Promise<StoredPlan> {
  if (id !== undefined) return readPlan(directory.sql, parsePlanId(id))
  const [latest] = await directory.sql<{ id: string }[]>`
    select id from rebalance_plans order by created_at desc, id desc limit 1`
  if (!latest) throw new SwitchyardError('plan_unknown', 'no plan yet: `switchyard rebalance plan` makes one')
  return readPlan(directory.sql, latest.id)
}

/**
 * Cancels an open plan: a planned one at once; an applying one stops after its current move (the
 * executor reads the state between moves). Cancelling a cancelled plan changes nothing; a plan that
 * is done or failed cannot be cancelled (`plan_closed`).
 */
export async function cancelPlan(directory: Directory, id: unknown): Promise<StoredPlan> {
  const plan = parsePlanId(id)
  return directory.sql.begin(async (sql) => {
    const [row] = await sql<
      { state: PlanState }[]
    >`select state from rebalance_plans where id = ${plan} for update`
    if (!row) throw new SwitchyardError('plan_unknown', `plan ${plan} does not exist`)
    if (row.state !== 'cancelled' && !OPEN.includes(row.state))
      throw new SwitchyardError('plan_closed', `plan ${plan} is ${row.state}: there is nothing to cancel`)
    if (row.state !== 'cancelled') {
      await sql`
        update rebalance_plans
        set state = 'cancelled', updated_at = now(),
            finished_at = case when state = 'planned' then now() end
        where id = ${plan}`
    }
    return readPlan(sql, plan)
  })
}
