import { SwitchyardError } from '../errors.ts'
import { byId, fillTable, placeTenant, type ShardFill } from './placement.ts'
import type { PlanInput, PlannedMove, ShardSummary } from './planner.ts'

export type DrainPlan = {
  strategy: 'drain'
  /** The shard being emptied. */
  shard: string
  /** Every tenant of the shard exactly once, in tenant id order. */
  moves: PlannedMove[]
  before: ShardSummary[]
  /** The drained shard ends empty; no other shard past its capacity. */
  after: ShardSummary[]
  balanced: true
}

/**
 * Plans every tenant of `shard` away and nothing else (a rebalance is `planRebalance`'s job): each
 * goes where placement would put a new tenant (`placeTenant`: bounded-load consistent hashing over the
 * active shards, skipping `shard` and other draining ones), counting the ones already planned, so the
 * receivers fill evenly and never past capacity. Pure and deterministic.
 *
 * Throws `no_capacity` with the fill table when the other active shards lack room for them all.
 */
export function planDrain(input: PlanInput, shard: string): DrainPlan {
  if (!input.shards.some((s) => s.id === shard))
    throw new SwitchyardError('shard_unknown', `shard "${shard}" is not listed`)
  const fills = new Map<string, ShardFill & { bytes: number }>(
    input.shards.map((s) => [
      s.id,
      { id: s.id, state: s.id === shard ? 'draining' : s.state, capacity: s.capacity, tenants: 0, bytes: 0 },
    ]),
  )
  const leaving = []
  for (const t of input.tenants) {
    const fill = fills.get(t.shard)
    if (!fill)
      throw new SwitchyardError(
        'shard_unknown',
        `tenant ${t.id} is on shard "${t.shard}", which is not listed`,
      )
    fill.tenants += 1
    fill.bytes += t.bytes
    if (t.shard === shard) leaving.push(t)
  }
  // The states as they were: the drained shard only becomes draining with the plan.
  const states = new Map(input.shards.map((s) => [s.id, s.state]))
  const before = summaries(fills).map((s) => ({ ...s, state: states.get(s.id) ?? s.state }))
  const room = [...fills.values()]
    .filter((s) => s.state === 'active')
    .reduce((sum, s) => sum + Math.max(0, s.capacity - s.tenants), 0)
  if (leaving.length > room) {
    throw new SwitchyardError(
      'no_capacity',
      `the ${leaving.length} tenants of ${shard} do not fit on the other active shards (room for ${room}): ${fillTable(before)}`,
      { shards: before, tenants: leaving.length, room },
    )
  }
  leaving.sort(byId)
  const moves: PlannedMove[] = []
  const source = fills.get(shard) as ShardFill & { bytes: number }
  for (const t of leaving) {
    const to = fills.get(placeTenant(t.id, [...fills.values()])) as ShardFill & { bytes: number }
    moves.push({ tenant: t.id, from: shard, to: to.id, bytes: t.bytes })
    to.tenants += 1
    to.bytes += t.bytes
    source.tenants -= 1
    source.bytes -= t.bytes
  }
  return { strategy: 'drain', shard, moves, before, after: summaries(fills), balanced: true }
}

function summaries(fills: Map<string, ShardFill & { bytes: number }>): ShardSummary[] {
  return [...fills.values()]
    .map((s) => ({ id: s.id, state: s.state, capacity: s.capacity, tenants: s.tenants, bytes: s.bytes }))
    .sort(byId)
}
