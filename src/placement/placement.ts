import { createHash } from 'node:crypto'
import ConsistentHash from 'consistent-hash'
import type { ShardFill } from '../directory/tenants.ts'
import { SwitchyardError } from '../errors.ts'

// The directory hands the fill to `placeTenant` when it adds a tenant, so the shape is defined there.
export type { ShardFill }
export type ShardState = ShardFill['state']

/**
 * Hash ring size. Tenant positions are the package's `(pjw(name) << 5) % range`; 10,000,019 (prime)
 * keeps that spread uniform (χ² checked at 1,000 buckets) while leaving room for 1,000 shards × 40
 * points with few collisions. Much larger ranges skew the positions: the PJW state is only 24 bits.
 */
const RING_RANGE = 10_000_019
/** The package's default weight. Bounded loads absorb what unevenness 40 arcs per shard leave. */
const POINTS_PER_SHARD = 40
/**
 * ε = 1/4, as an exact fraction so no float rounding enters the choice: no shard is chosen while it
 * holds ⌈1.25 × average⌉ tenants or more (average over active shards, counting the tenant being
 * placed), so the fullest shard stays within 25% of the mean. A smaller ε spreads more evenly but
 * sends more tenants past their hash position (longer walks, and more of them change when a shard is
 * added or removed: the trade-off of Mirrokni et al., "Consistent Hashing with Bounded Loads").
 */
const LOAD_SLACK_NUMERATOR = 5
const LOAD_SLACK_DENOMINATOR = 4

/** Code-unit order: locale-independent, so every process sorts ids the same way. */
export const byId = (a: { id: string }, b: { id: string }): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** `shard-1 100/100, shard-2 37/100, shard-3 12/100 (draining)`, in id order. */
export function fillTable(shards: readonly ShardFill[]): string {
  if (shards.length === 0) return 'no shards'
  return [...shards]
    .sort(byId)
    .map((s) => `${s.id} ${s.tenants}/${s.capacity}${s.state === 'draining' ? ' (draining)' : ''}`)
    .join(', ')
}

/**
 * Picks the shard for a new tenant: bounded-load consistent hashing over the active shards. Walks the
 * ring clockwise from the tenant's hash and takes the first shard below its bound, min(capacity,
 * ⌈(1 + ε) × (tenants on active shards + 1) / active shards⌉); if every shard is at its bound, the
 * first with room.
 * Depends only on the tenant id and the set of shards, not on their order or the process.
 */
export function placeTenant(tenantId: string, shards: readonly ShardFill[]): string {
  checkShards(shards)
  const sorted = [...shards].sort(byId)
  const active = sorted.filter((s) => s.state === 'active')
  if (!active.some((s) => s.tenants < s.capacity)) {
    const why = active.length === 0 ? 'no active shard' : 'every active shard is full'
    const message = `no room for tenant ${tenantId}: ${why} (${fillTable(sorted)})`
    throw new SwitchyardError('no_capacity', message, { shards: sorted })
  }
  const byShard = new Map(active.map((s) => [s.id, s]))
  const held = active.reduce((sum, s) => sum + s.tenants, 0)
  const scale = LOAD_SLACK_DENOMINATOR * active.length
  const bound = Math.floor((LOAD_SLACK_NUMERATOR * (held + 1) + scale - 1) / scale)
  const order = walk(ringFor(active.map((s) => s.id)), ringKey(tenantId), active.length)
  let firstWithRoom: string | undefined
  for (const id of order) {
    const shard = byShard.get(id) as ShardFill
    if (shard.tenants < Math.min(shard.capacity, bound)) return id
    if (firstWithRoom === undefined && shard.tenants < shard.capacity) firstWithRoom = id
  }
  // Unreachable while every active shard is on the ring; the check above guarantees one has room.
  if (firstWithRoom === undefined) throw new Error('placement ring lost a shard')
  return firstWithRoom
}

function checkShards(shards: readonly ShardFill[]): void {
  const seen = new Set<string>()
  for (const s of shards) {
    if (seen.has(s.id)) throw new SwitchyardError('invalid_input', `shard "${s.id}" is listed twice`)
    seen.add(s.id)
    if (!Number.isInteger(s.capacity) || s.capacity < 1)
      throw new SwitchyardError('invalid_input', `shard "${s.id}": capacity must be a positive integer`)
    if (!Number.isInteger(s.tenants) || s.tenants < 0)
      throw new SwitchyardError('invalid_input', `shard "${s.id}": tenants must be a non-negative integer`)
  }
}

/**
 * The package's PJW hash is skewed for correlated names ('tenant-1', 'tenant-2', time-ordered UUIDs):
 * the ring is given a SHA-256 prefix of the id instead, which is uniform for any id.
 */
const ringKey = (tenantId: string): string => createHash('sha256').update(tenantId).digest('hex').slice(0, 16)

/**
 * Control points from SHA-256 of `<shard id>#<block>`: the same in every process, and a shard's
 * points do not depend on which other shards exist. Shards are added in id order and a point already
 * taken moves to the next free position, so collisions resolve the same way whatever the input order.
 */
function controlPoints(shardId: string, taken: Set<number>): number[] {
  const points: number[] = []
  for (let block = 0; points.length < POINTS_PER_SHARD; block++) {
    const digest = createHash('sha256').update(`${shardId}#${block}`).digest()
    for (let offset = 0; offset + 4 <= digest.length && points.length < POINTS_PER_SHARD; offset += 4) {
      let point = digest.readUInt32BE(offset) % RING_RANGE
      while (taken.has(point)) point = (point + 1) % RING_RANGE
      taken.add(point)
      points.push(point)
    }
  }
  return points
}

/** Rings by shard set; building one for 1,000 shards costs milliseconds, placing a tenant microseconds. */
const rings = new Map<string, ConsistentHash<string>>()
const RINGS_KEPT = 16

function ringFor(sortedIds: readonly string[]): ConsistentHash<string> {
  const key = sortedIds.join('\n')
  const cached = rings.get(key)
  if (cached) return cached
  const ring = new ConsistentHash<string>({ range: RING_RANGE, weight: POINTS_PER_SHARD })
  const taken = new Set<number>()
  for (const id of sortedIds) ring.add(id, POINTS_PER_SHARD, controlPoints(id, taken))
  if (rings.size >= RINGS_KEPT) rings.delete(rings.keys().next().value as string)
  rings.set(key, ring)
  return ring
}

/**
 * Distinct shards clockwise from the key's position. The package's multi-node lookup is linear in
 * the ring's size, so ask for a few first and widen only when the nearest shards are all at their bound.
 */
function* walk(ring: ConsistentHash<string>, key: string, shardCount: number): Generator<string> {
  let seen = 0
  for (let count = Math.min(shardCount, 4); ; count = Math.min(shardCount, count * 4)) {
    const nodes = ring.get(key, count) ?? []
    for (let i = seen; i < nodes.length; i++) yield nodes[i] as string
    seen = nodes.length
    if (count >= shardCount) return
  }
}
