import { SwitchyardError } from '../errors.ts'
import { byId, fillTable, type ShardState } from './placement.ts'

export type RebalanceStrategy = 'count' | 'size'
export type PlanShard = { id: string; state: ShardState; capacity: number }
export type PlanTenant = { id: string; shard: string; bytes: number }
export type PlanInput = { shards: readonly PlanShard[]; tenants: readonly PlanTenant[] }
export type PlanOptions = {
  /** `size`: how far from the mean a shard's bytes may end, as a fraction of the mean. Default 0.1. */
  sizeTolerance?: number
}
export type PlannedMove = { tenant: string; from: string; to: string; bytes: number }
export type ShardSummary = PlanShard & { tenants: number; bytes: number }
export type RebalancePlan = {
  strategy: RebalanceStrategy
  /** Each tenant at most once, ordered by source shard then tenant id. */
  moves: PlannedMove[]
  before: ShardSummary[]
  after: ShardSummary[]
  /** Whether `after` meets the strategy's goal; when not, `reason` says why no plan could. */
  balanced: boolean
  reason?: string
}

type Tenant = { id: string; bytes: number; shard: number }
type Shard = PlanShard & {
  /** Its tenants, smallest first (ties by id): the order in which it gives them up. */
  tenants: Tenant[]
  bytes: number
}

const byBytesThenId = (a: Tenant, b: Tenant): number => a.bytes - b.bytes || byId(a, b)

/**
 * Plans the moves that even out the active shards and empty the draining ones. Pure and
 * deterministic: the same shards and tenants, in any order, give the same plan.
 *
 * - `count`: every active shard within capacity and tenant counts within one of each other, with the
 *   fewest moves possible and, among those, the fewest bytes (see `countTargets`).
 * - `size`: bytes within `sizeTolerance` of the mean on every active shard, by a greedy (see `planBySize`).
 *
 * Throws `no_capacity` (with the fill table) when the active shards cannot hold every tenant.
 */
export function planRebalance(
  input: PlanInput,
  strategy: RebalanceStrategy,
  options: PlanOptions = {},
): RebalancePlan {
  const tolerance = options.sizeTolerance ?? 0.1
  if (!Number.isFinite(tolerance) || tolerance < 0)
    throw new SwitchyardError('invalid_input', 'sizeTolerance must be a non-negative number')
  const shards = indexShards(input)
  const before = summarise(shards)
  const active = shards.filter((s) => s.state === 'active')
  const room = active.reduce((sum, s) => sum + s.capacity, 0)
  if (input.tenants.length > room) {
    throw new SwitchyardError(
      'no_capacity',
      `${input.tenants.length} tenants do not fit on the active shards (room for ${room}): ${fillTable(before)}`,
      { shards: before, tenants: input.tenants.length, room },
    )
  }
  const planned = strategy === 'count' ? planByCount(shards, active) : planBySize(shards, active, tolerance)
  const moves = planned.moves.sort(
    (a, b) => (a.from < b.from ? -1 : a.from > b.from ? 1 : 0) || byTenant(a, b),
  )
  return { strategy, moves, before, after: applyMoves(before, moves), ...planned.verdict }
}

const byTenant = (a: PlannedMove, b: PlannedMove): number =>
  a.tenant < b.tenant ? -1 : a.tenant > b.tenant ? 1 : 0

type Verdict = { balanced: boolean; reason?: string }

function indexShards(input: PlanInput): Shard[] {
  const shards: Shard[] = input.shards
    .map((s) => ({ id: s.id, state: s.state, capacity: s.capacity, tenants: [], bytes: 0 }))
    .sort(byId)
  const index = new Map<string, number>()
  shards.forEach((s, i) => {
    if (index.has(s.id)) throw new SwitchyardError('invalid_input', `shard "${s.id}" is listed twice`)
    if (s.state !== 'active' && s.state !== 'draining')
      throw new SwitchyardError('invalid_input', `shard "${s.id}": unknown state "${s.state}"`)
    if (!Number.isInteger(s.capacity) || s.capacity < 1)
      throw new SwitchyardError('invalid_input', `shard "${s.id}": capacity must be a positive integer`)
    index.set(s.id, i)
  })
  const seen = new Set<string>()
  for (const t of input.tenants) {
    if (seen.has(t.id)) throw new SwitchyardError('invalid_input', `tenant ${t.id} is listed twice`)
    seen.add(t.id)
    const at = index.get(t.shard)
    if (at === undefined)
      throw new SwitchyardError(
        'shard_unknown',
        `tenant ${t.id} is on shard "${t.shard}", which is not listed`,
      )
    if (!Number.isFinite(t.bytes) || t.bytes < 0)
      throw new SwitchyardError('invalid_input', `tenant ${t.id}: bytes must be a non-negative number`)
    const shard = shards[at] as Shard
    shard.tenants.push({ id: t.id, bytes: t.bytes, shard: at })
  }
  for (const s of shards) s.tenants.sort(byBytesThenId)
  // Summed in the sorted order: float addition depends on order, and the plan must not.
  for (const s of shards) s.bytes = s.tenants.reduce((sum, t) => sum + t.bytes, 0)
  return shards
}

function summarise(shards: readonly Shard[]): ShardSummary[] {
  return shards.map((s) => ({
    id: s.id,
    state: s.state,
    capacity: s.capacity,
    tenants: s.tenants.length,
    bytes: s.bytes,
  }))
}

function applyMoves(before: readonly ShardSummary[], moves: readonly PlannedMove[]): ShardSummary[] {
  const after = new Map(before.map((s) => [s.id, { ...s }]))
  for (const m of moves) {
    const from = after.get(m.from) as ShardSummary
    const to = after.get(m.to) as ShardSummary
    from.tenants -= 1
    from.bytes -= m.bytes
    to.tenants += 1
    to.bytes += m.bytes
  }
  return [...after.values()]
}

/**
 * Target tenant counts for the active shards: the fewest moves, then the fewest bytes moved.
 *
 * Shapes. With n active shards and T tenants in all, "max − min ≤ 1" means every shard ends with L
 * or L + 1 tenants where L = ⌊T/n⌋, and exactly R = T − nL of them with L + 1. When capacities rule
 * that out (some shard holds fewer than L), the closest thing is water-filling: the largest level L
 * with Σ min(capacity, L) ≤ T, every shard at min(capacity, L), and R = T − Σ min(capacity, L) of
 * the shards with capacity > L at L + 1 (R is below their number, or L would not be the largest).
 * Both are the same rule; the second reduces to the first when every capacity is at least L. So
 * the only freedom is which R eligible shards get the extra tenant.
 *
 * Moves. A plan moves every tenant at most once. With final counts f, each active shard with c > f
 * tenants must send at least c − f, and each draining shard all its d; so moves ≥ Σd + Σ max(0, c − f).
 * That many suffice: the shortfalls Σ max(0, f − c) add up to exactly the same number (Σf = T), so
 * sending the surplus straight to the shortfalls is a plan. The count is separable over shards:
 * giving shard i the extra (f = L + 1 instead of L) lowers its surplus by one when c_i ≥ L + 1 and
 * changes nothing otherwise. So the minimum is reached by handing the R extras to eligible shards
 * with c ≥ L + 1 first: moves = Σd + Σ max(0, c − min(capacity, L)) − min(R, #{eligible, c ≥ L + 1}).
 *
 * Bytes. Which tenants move follows from the targets: each shard sends its smallest ones (no cheaper
 * choice sends the same number), draining shards send all. An extra on an over-full shard saves
 * exactly the bytes of the largest tenant it would otherwise send, so when there are more candidates
 * than extras, the extras go to the candidates that save most (ties by id). This is optimal for
 * (moves, bytes) in that order: move count is fixed by the rule above, and bytes = fixed − Σ saved.
 *
 * Only shards above their target (and draining ones) send, only shards below it receive. So when
 * shards are added to a balanced set, the old shards only send and the new ones receive everything:
 * 3 × 100 tenants plus an empty fourth shard is 75 moves, all to the fourth.
 */
function countTargets(
  active: readonly Shard[],
  total: number,
): { targets: Map<Shard, number>; level: number } {
  let low = 0
  let high = active.reduce((max, s) => Math.max(max, s.capacity), 0)
  const filled = (level: number) => active.reduce((sum, s) => sum + Math.min(s.capacity, level), 0)
  while (low < high) {
    const mid = Math.ceil((low + high) / 2)
    if (filled(mid) <= total) low = mid
    else high = mid - 1
  }
  const level = low
  const targets = new Map(active.map((s) => [s, Math.min(s.capacity, level)]))
  let extras = total - filled(level)
  const eligible = active.filter((s) => s.capacity > level)
  const saving = eligible
    .filter((s) => s.tenants.length > level)
    .map((s) => ({ shard: s, saved: (s.tenants[s.tenants.length - level - 1] as Tenant).bytes }))
    .sort((a, b) => b.saved - a.saved || byId(a.shard, b.shard))
  // Extras left over go to shards that receive anyway, emptiest first: no move count or bytes change,
  // but a shard already at the level is not made to receive one tenant (a new shard takes it instead).
  const rest = eligible
    .filter((s) => s.tenants.length <= level)
    .sort((a, b) => a.tenants.length - b.tenants.length || byId(a, b))
  for (const shard of [...saving.map((c) => c.shard), ...rest]) {
    if (extras === 0) break
    targets.set(shard, level + 1)
    extras -= 1
  }
  return { targets, level }
}

function planByCount(
  shards: readonly Shard[],
  active: readonly Shard[],
): { moves: PlannedMove[]; verdict: Verdict } {
  const total = shards.reduce((sum, s) => sum + s.tenants.length, 0)
  const { targets, level } = countTargets(active, total)
  const leaving: Tenant[] = []
  for (const s of shards) {
    const keep = targets.get(s) ?? 0
    if (s.tenants.length > keep) leaving.push(...s.tenants.slice(0, s.tenants.length - keep))
  }
  // Where each one goes does not change counts or bytes moved; largest first onto the receiver with
  // the fewest bytes keeps bytes even as a side effect.
  leaving.sort((a, b) => b.bytes - a.bytes || byId(a, b))
  const receivers = new Heap<{ shard: Shard; room: number; bytes: number }>(
    (a, b) => a.bytes - b.bytes || byId(a.shard, b.shard),
  )
  for (const s of active) {
    const room = (targets.get(s) ?? 0) - s.tenants.length
    if (room > 0) receivers.push({ shard: s, room, bytes: s.bytes })
  }
  const moves: PlannedMove[] = []
  for (const t of leaving) {
    const to = receivers.pop() as { shard: Shard; room: number; bytes: number }
    moves.push({ tenant: t.id, from: (shards[t.shard] as Shard).id, to: to.shard.id, bytes: t.bytes })
    to.room -= 1
    to.bytes += t.bytes
    if (to.room > 0) receivers.push(to)
  }
  const counts = active.map((s) => targets.get(s) ?? 0)
  const spread = counts.length ? Math.max(...counts) - Math.min(...counts) : 0
  if (spread <= 1) return { moves, verdict: { balanced: true } }
  const capped = active
    .filter((s) => s.capacity < level)
    .map((s) => `${s.id} (capacity ${s.capacity})`)
    .join(', ')
  return {
    moves,
    verdict: {
      balanced: false,
      reason: `capacities rule out counts within one of each other: ${capped} cannot reach ${level}; they end full and the rest within one of each other`,
    },
  }
}

/**
 * `size`, greedy. Forced moves first: draining shards' tenants and the smallest tenants over an
 * active shard's capacity go, largest first, to the active shard with the fewest bytes that has room.
 * Then, until every active shard is within tolerance of the mean (or no move helps): take the
 * heaviest shard above the mean that has not received (H) and the lightest below it that has not
 * sent and has room (L), and move the tenant of H whose size is closest to the largest transfer that
 * overshoots neither, min(H − mean, mean − L) (ties: the smaller, then by id). Only tenants smaller
 * than H − L qualify, so each move strictly lowers Σ (bytes − mean)² and the loop ends; a heaviest
 * shard with no qualifying tenant is left as it is. The biggest useful transfer per move keeps the
 * number of moves low; ties and the closeness rule keep bytes low, but neither is minimal in general
 * (minimal moves for byte balance is bin-packing, NP-hard). A shard only sends or only receives, and
 * no tenant moves twice.
 *
 * When it reaches the band: whenever every tenant is at most half the band (tolerance × mean / 2) and
 * receivers do not run out of room. Sketch: a move overshoots the mean only when the goal is below the
 * tenant's size, so whoever crosses the mean ends within half the band of it and, having changed
 * side, never moves again; a shard is given up on only when H − L is at most one tenant, so H and all
 * later lights are within half the band. Then a shard left above the band would still be H (and a
 * lighter receiver below the mean would exist), and a shard left below it would still be L (with a
 * heavier H): the loop would not have stopped.
 */
/** A shard's bytes and tenants as the size plan goes; a shard that has sent never receives, and back. */
type Load = { bytes: number; count: number; role: 'none' | 'sent' | 'received' }

function planBySize(
  shards: readonly Shard[],
  active: readonly Shard[],
  tolerance: number,
): { moves: PlannedMove[]; verdict: Verdict } {
  const moves: PlannedMove[] = []
  const state = new Map<Shard, Load>()
  for (const s of shards) state.set(s, { bytes: s.bytes, count: s.tenants.length, role: 'none' })
  const load = (s: Shard) => state.get(s) as Load
  /** Tenants each active shard may still send: its own, smallest first, never one it received. */
  const movable = new Map<Shard, Tenant[]>()
  const forced: Tenant[] = []
  for (const s of shards) {
    if (s.state === 'draining') forced.push(...s.tenants)
    else {
      const over = Math.max(0, s.tenants.length - s.capacity)
      forced.push(...s.tenants.slice(0, over))
      movable.set(s, s.tenants.slice(over))
    }
  }
  const send = (t: Tenant, to: Shard) => {
    const from = shards[t.shard] as Shard
    const source = load(from)
    const target = load(to)
    source.bytes -= t.bytes
    source.count -= 1
    source.role = 'sent'
    target.bytes += t.bytes
    target.count += 1
    target.role = 'received'
    moves.push({ tenant: t.id, from: from.id, to: to.id, bytes: t.bytes })
  }

  forced.sort((a, b) => b.bytes - a.bytes || byId(a, b))
  const lightest = new Heap<Shard>((a, b) => load(a).bytes - load(b).bytes || byId(a, b))
  for (const s of active) if (load(s).count < s.capacity) lightest.push(s)
  for (const t of forced) {
    const to = lightest.pop() as Shard // the capacity check in planRebalance guarantees room
    send(t, to)
    if (load(to).count < to.capacity) lightest.push(to)
  }

  const total = active.reduce((sum, s) => sum + load(s).bytes, 0)
  const mean = active.length ? total / active.length : 0
  const band = tolerance * mean
  const stuck = new Set<Shard>()
  for (;;) {
    let heavy: Shard | undefined
    let light: Shard | undefined
    let within = true
    let heavyBytes = Number.NEGATIVE_INFINITY
    let lightBytes = Number.POSITIVE_INFINITY
    for (const s of active) {
      const st = load(s)
      if (Math.abs(st.bytes - mean) > band) within = false
      if (st.role !== 'received' && st.bytes > mean && st.bytes > heavyBytes && !stuck.has(s)) {
        heavy = s
        heavyBytes = st.bytes
      }
      if (st.role !== 'sent' && st.bytes < mean && st.count < s.capacity && st.bytes < lightBytes) {
        light = s
        lightBytes = st.bytes
      }
    }
    if (within || !heavy || !light) break
    const candidates = movable.get(heavy) as Tenant[]
    const pick = closestTenant(
      candidates,
      Math.min(heavyBytes - mean, mean - lightBytes),
      heavyBytes - lightBytes,
    )
    if (pick < 0) {
      stuck.add(heavy)
      continue
    }
    send(candidates.splice(pick, 1)[0] as Tenant, light)
  }

  const outside = active.filter((s) => Math.abs(load(s).bytes - mean) > band)
  if (outside.length === 0) return { moves, verdict: { balanced: true } }
  const pct = `${Math.round(tolerance * 1000) / 10}%`
  return {
    moves,
    verdict: {
      balanced: false,
      reason: `no move brings ${outside.map((s) => s.id).join(', ')} within ${pct} of the mean (${Math.round(mean)} bytes): their tenants are too large for the gaps left, or the lighter shards are full`,
    },
  }
}

/**
 * Index of the tenant (sorted by bytes, then id) whose size is closest to `goal`, among those with
 * 0 < bytes < `limit`; ties go to the smaller size, equal sizes to the smaller id. −1 if none.
 */
function closestTenant(sorted: readonly Tenant[], goal: number, limit: number): number {
  let low = 0
  let high = sorted.length
  while (low < high) {
    const mid = (low + high) >>> 1
    if ((sorted[mid] as Tenant).bytes < goal) low = mid + 1
    else high = mid
  }
  // `low`: first at or above the goal. Below it: the first of the run of equal sizes just under.
  let under = low - 1
  while (under > 0 && (sorted[under - 1] as Tenant).bytes === (sorted[under] as Tenant).bytes) under -= 1
  const above = low < sorted.length && (sorted[low] as Tenant).bytes < limit ? low : -1
  const below = under >= 0 && (sorted[under] as Tenant).bytes > 0 ? under : -1
  if (above < 0) return below
  if (below < 0) return above
  const a = (sorted[above] as Tenant).bytes - goal
  const b = goal - (sorted[below] as Tenant).bytes
  return a < b ? above : below
}

/** A binary min-heap; `before(a, b) < 0` puts a first. */
class Heap<T> {
  private readonly items: T[] = []
  constructor(private readonly before: (a: T, b: T) => number) {}

  push(item: T): void {
    const items = this.items
    items.push(item)
    let i = items.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (this.before(items[i] as T, items[parent] as T) >= 0) break
      ;[items[i], items[parent]] = [items[parent] as T, items[i] as T]
      i = parent
    }
  }

  pop(): T | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (items.length === 0 || last === undefined) return top
    items[0] = last
    for (let i = 0; ; ) {
      const left = 2 * i + 1
      const right = left + 1
      let first = i
      if (left < items.length && this.before(items[left] as T, items[first] as T) < 0) first = left
      if (right < items.length && this.before(items[right] as T, items[first] as T) < 0) first = right
      if (first === i) break
      ;[items[i], items[first]] = [items[first] as T, items[i] as T]
      i = first
    }
    return top
  }
}
