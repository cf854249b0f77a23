import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { isSwitchyardError, type SwitchyardError } from '../../src/errors.ts'
import { placeTenant, type ShardFill } from '../../src/placement/placement.ts'
import {
  type PlanInput,
  type PlanShard,
  type PlanTenant,
  planRebalance,
  type RebalancePlan,
} from '../../src/placement/planner.ts'

const root = path.dirname(path.dirname(path.dirname(fileURLToPath(import.meta.url))))

/** mulberry32: a seeded stream, so generated sizes and orders are reproducible from a fast-check seed. */
function random(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function shuffle<T>(items: readonly T[], seed: number): T[] {
  const next = random(seed)
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1))
    ;[out[i], out[j]] = [out[j] as T, out[i] as T]
  }
  return out
}

/** A UUID-shaped id derived from a label: stable across runs, unrelated between labels. */
const uuidFrom = (label: string): string => {
  const h = createHash('sha256').update(label).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`
}

function caught(run: () => unknown): SwitchyardError {
  try {
    run()
  } catch (error) {
    if (isSwitchyardError(error)) return error
    throw error
  }
  throw new Error('expected a SwitchyardError')
}

const shardIdArb = fc.stringMatching(/^[a-z][a-z0-9-]{0,8}$/)
const stateArb = fc.constantFrom<'active' | 'draining'>('active', 'active', 'active', 'draining')

/** 1–20 shards, capacities 1–150, fills anywhere from empty to full (full often), some draining. */
const fillsArb: fc.Arbitrary<ShardFill[]> = fc.uniqueArray(
  fc.integer({ min: 1, max: 150 }).chain((capacity) =>
    fc.record({
      id: shardIdArb,
      state: stateArb,
      capacity: fc.constant(capacity),
      tenants: fc.oneof(fc.constant(capacity), fc.integer({ min: 0, max: capacity })),
    }),
  ),
  { minLength: 1, maxLength: 20, selector: (s) => s.id },
)
const tenantIdArb = fc.oneof(fc.uuid(), fc.string({ minLength: 1, maxLength: 40 }))

/** The bounded-load bound, ⌈1.25 × (tenants on active shards + 1) / active shards⌉. */
const loadBound = (active: readonly ShardFill[]) =>
  Math.ceil((5 * (active.reduce((sum, s) => sum + s.tenants, 0) + 1)) / (4 * active.length))

describe('placeTenant', () => {
  it('picks an active shard with room, below its load bound when one is, and says no_capacity exactly when none has room', () => {
    fc.assert(
      fc.property(fillsArb, tenantIdArb, (shards, tenant) => {
        const active = shards.filter((s) => s.state === 'active')
        const withRoom = active.filter((s) => s.tenants < s.capacity)
        if (withRoom.length === 0) {
          const error = caught(() => placeTenant(tenant, shards))
          expect(error.code).toBe('no_capacity')
          for (const s of shards) expect(error.message).toContain(`${s.id} ${s.tenants}/${s.capacity}`)
          expect(error.details).toEqual({ shards: [...shards].sort((a, b) => (a.id < b.id ? -1 : 1)) })
          return
        }
        const chosen = shards.find((s) => s.id === placeTenant(tenant, shards)) as ShardFill
        expect(chosen.state).toBe('active')
        expect(chosen.tenants).toBeLessThan(chosen.capacity)
        const bound = loadBound(active)
        if (active.some((s) => s.tenants < Math.min(s.capacity, bound)))
          expect(chosen.tenants).toBeLessThan(Math.min(chosen.capacity, bound))
      }),
      { numRuns: 300 },
    )
  })

  it('gives the same answer for the same shards in any order', () => {
    fc.assert(
      fc.property(fillsArb, tenantIdArb, fc.integer(), (shards, tenant, seed) => {
        const place = (list: ShardFill[]) => {
          try {
            return placeTenant(tenant, list)
          } catch (error) {
            return isSwitchyardError(error) ? error.code : 'thrown'
          }
        }
        const first = place(shards)
        expect(place(shuffle(shards, seed).map((s) => ({ ...s })))).toBe(first)
        expect(place(shards)).toBe(first)
      }),
      { numRuns: 300 },
    )
  })

  it('gives the same answers in another process', () => {
    const cases = fc
      .sample(fc.tuple(tenantIdArb, fillsArb), { numRuns: 200, seed: 4 })
      .filter(([, shards]) => shards.some((s) => s.state === 'active' && s.tenants < s.capacity))
      .map(([tenant, shards]) => ({ tenant, shards }))
    const here = cases.map((c) => placeTenant(c.tenant, c.shards))
    const script = `
      import { placeTenant } from ${JSON.stringify(path.join(root, 'src/placement/placement.ts'))}
      let input = ''
      for await (const chunk of process.stdin) input += chunk
      console.log(JSON.stringify(JSON.parse(input).map((c) => placeTenant(c.tenant, c.shards))))`
    const there = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: root,
      input: JSON.stringify(cases),
      encoding: 'utf8',
    })
    expect(cases.length).toBeGreaterThan(100)
    expect(JSON.parse(there)).toEqual(here)
  })

  it('placing tenants one by one never exceeds the load bound, and fills every shard exactly to capacity', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ id: shardIdArb, capacity: fc.integer({ min: 1, max: 60 }) }), {
          minLength: 1,
          maxLength: 20,
          selector: (s) => s.id,
        }),
        fc.integer(),
        (specs, seed) => {
          const shards: ShardFill[] = specs.map((s) => ({ ...s, state: 'active', tenants: 0 }))
          const room = shards.reduce((sum, s) => sum + s.capacity, 0)
          const minCapacity = Math.min(...shards.map((s) => s.capacity))
          for (let k = 0; k < room; k++) {
            const chosen = shards.find((s) => s.id === placeTenant(`${seed}-${k}`, shards)) as ShardFill
            chosen.tenants += 1
            // While every shard still has room under the bound, the bound holds for all of them.
            const placed = k + 1
            if (Math.ceil((5 * placed) / (4 * shards.length)) <= minCapacity)
              expect(Math.max(...shards.map((s) => s.tenants))).toBeLessThanOrEqual(
                Math.ceil((5 * placed) / (4 * shards.length)),
              )
          }
          for (const s of shards) expect(s.tenants).toBe(s.capacity)
          expect(caught(() => placeTenant(`${seed}-full`, shards)).code).toBe('no_capacity')
        },
      ),
      { numRuns: 60 },
    )
  })

  it.each([
    [3, 100],
    [10, 100],
    [20, 100],
    [50, 100],
  ])(
    'spreads tenants evenly by hash: %i shards × %i tenants each, fullest ≤ ⌈1.25 × mean⌉, emptiest ≥ mean / 2',
    (count, each) => {
      // Fixed ids, so this cannot flake; the spread comes from the hash, not from capacity (10,000).
      const shards: ShardFill[] = Array.from({ length: count }, (_, i) => ({
        id: `shard-${i + 1}`,
        state: 'active',
        capacity: 10_000,
        tenants: 0,
      }))
      for (let k = 0; k < count * each; k++) {
        const chosen = shards.find((s) => s.id === placeTenant(uuidFrom(`spread-${k}`), shards)) as ShardFill
        chosen.tenants += 1
      }
      const fills = shards.map((s) => s.tenants)
      expect(Math.max(...fills)).toBeLessThanOrEqual(Math.ceil(1.25 * each))
      expect(Math.min(...fills)).toBeGreaterThanOrEqual(each / 2)
    },
  )

  it('300 tenants on 3 × 100 fill each shard to 100; the 301st gets no_capacity with the fill table', () => {
    const shards: ShardFill[] = [1, 2, 3].map((i) => ({
      id: `shard-${i}`,
      state: 'active',
      capacity: 100,
      tenants: 0,
    }))
    for (let k = 0; k < 300; k++) {
      const chosen = shards.find((s) => s.id === placeTenant(uuidFrom(`fill-${k}`), shards)) as ShardFill
      chosen.tenants += 1
    }
    expect(shards.map((s) => s.tenants)).toEqual([100, 100, 100])
    const error = caught(() => placeTenant(uuidFrom('fill-300'), shards))
    expect(error.code).toBe('no_capacity')
    expect(error.message).toContain('shard-1 100/100, shard-2 100/100, shard-3 100/100')
    expect(error.details).toEqual({ shards })
  })

  it('skips draining shards, and says no_capacity when only draining shards have room', () => {
    const shards: ShardFill[] = [
      { id: 'shard-1', state: 'active', capacity: 100, tenants: 100 },
      { id: 'shard-2', state: 'draining', capacity: 100, tenants: 3 },
    ]
    const error = caught(() => placeTenant(uuidFrom('x'), shards))
    expect(error.code).toBe('no_capacity')
    expect(error.message).toContain('shard-1 100/100, shard-2 3/100 (draining)')
    expect(caught(() => placeTenant(uuidFrom('x'), [])).code).toBe('no_capacity')
    const third: ShardFill = { id: 'shard-3', state: 'active', capacity: 100, tenants: 99 }
    expect(placeTenant(uuidFrom('x'), [...shards, third])).toBe('shard-3')
  })
})

// ── planner ──────────────────────────────────────────────────────────────────────────────────────────

type ShardSpec = PlanShard & { count: number }

/** Shards with tenant counts (active ones sometimes over capacity), sizes drawn from a seeded stream. */
const planArb: fc.Arbitrary<PlanInput> = fc
  .record({
    shards: fc.uniqueArray(
      fc.integer({ min: 1, max: 120 }).chain((capacity) =>
        fc.record({
          id: shardIdArb,
          state: stateArb,
          capacity: fc.constant(capacity),
          count: fc.oneof(
            { weight: 6, arbitrary: fc.integer({ min: 0, max: capacity }) },
            { weight: 2, arbitrary: fc.constant(0) },
            { weight: 1, arbitrary: fc.integer({ min: capacity, max: capacity + 5 }) },
          ),
        }),
      ),
      { minLength: 1, maxLength: 20, selector: (s) => s.id },
    ),
    // Small ranges give many equal sizes (ties); large ones give distinct sizes.
    maxBytes: fc.constantFrom(0, 3, 1000, 1_000_000_000),
    seed: fc.integer(),
  })
  .map(({ shards, maxBytes, seed }) => buildInput(shards, maxBytes, seed))

function buildInput(specs: readonly ShardSpec[], maxBytes: number, seed: number): PlanInput {
  const next = random(seed)
  const tenants: PlanTenant[] = []
  for (const s of specs)
    for (let k = 0; k < s.count; k++)
      tenants.push({ id: `${s.id}/t${k}`, shard: s.id, bytes: Math.floor(next() * (maxBytes + 1)) })
  return {
    shards: specs.map(({ id, state, capacity }) => ({ id, state, capacity })),
    tenants: shuffle(tenants, seed),
  }
}

const activeRoom = (input: PlanInput) =>
  input.shards.filter((s) => s.state === 'active').reduce((sum, s) => sum + s.capacity, 0)

type Fill = { tenants: number; bytes: number }

/** Per-shard counts and bytes after the moves, recomputed from the input, and checks every move is sound. */
function replay(input: PlanInput, plan: RebalancePlan): Map<string, Fill> {
  const where = new Map(input.tenants.map((t) => [t.id, t]))
  const fills = new Map<string, Fill>(input.shards.map((s) => [s.id, { tenants: 0, bytes: 0 }]))
  for (const t of input.tenants) {
    const fill = fills.get(t.shard) as Fill
    fill.tenants += 1
    fill.bytes += t.bytes
  }
  const state = new Map(input.shards.map((s) => [s.id, s.state]))
  const moved = new Set<string>()
  for (const m of plan.moves) {
    const tenant = where.get(m.tenant) as PlanTenant
    expect(tenant, `move of unknown tenant ${m.tenant}`).toBeDefined()
    expect(moved.has(m.tenant), `${m.tenant} moves twice`).toBe(false)
    moved.add(m.tenant)
    expect(m.from).toBe(tenant.shard)
    expect(m.bytes).toBe(tenant.bytes)
    expect(m.to).not.toBe(m.from)
    expect(state.get(m.to)).toBe('active')
    const from = fills.get(m.from) as Fill
    const to = fills.get(m.to) as Fill
    from.tenants -= 1
    from.bytes -= m.bytes
    to.tenants += 1
    to.bytes += m.bytes
  }
  for (const s of plan.after) expect({ tenants: s.tenants, bytes: s.bytes }).toEqual(fills.get(s.id))
  return fills
}

/** No shard both sends and receives. */
function expectOneWay(plan: RebalancePlan): { senders: Set<string>; receivers: Set<string> } {
  const senders = new Set(plan.moves.map((m) => m.from))
  const receivers = new Set(plan.moves.map((m) => m.to))
  for (const id of senders) expect(receivers.has(id), `${id} both sends and receives`).toBe(false)
  return { senders, receivers }
}

/**
 * The fewest moves, then bytes, of any plan that leaves the active shards "balanced by count", found
 * by exhaustive dynamic programming rather than the planner's exchange argument. Balanced: within
 * capacity, and every shard that still has room within one of the fullest — that is, counts
 * min(capacity, L) or min(capacity, L + 1) for some level L (exactly max − min ≤ 1 when capacities
 * allow it). A shard ending with f of its c tenants sends its c − f smallest, a draining one all.
 */
function optimumByCount(input: PlanInput): { moves: number; bytes: number } {
  const sizes = new Map<string, number[]>(input.shards.map((s) => [s.id, []]))
  for (const t of input.tenants) sizes.get(t.shard)?.push(t.bytes)
  const prefix = new Map<string, number[]>()
  for (const [id, list] of sizes) {
    list.sort((a, b) => a - b)
    const sums = [0]
    for (const b of list) sums.push((sums.at(-1) as number) + b)
    prefix.set(id, sums)
  }
  type Cost = [number, number]
  const less = (a: Cost, b: Cost) => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1])
  const add = (a: Cost, b: Cost): Cost => [a[0] + b[0], a[1] + b[1]]
  const keep = (id: string, f: number): Cost => {
    const c = (sizes.get(id) as number[]).length
    return c > f ? [c - f, (prefix.get(id) as number[])[c - f] as number] : [0, 0]
  }
  let draining: Cost = [0, 0]
  for (const s of input.shards) if (s.state === 'draining') draining = add(draining, keep(s.id, 0))
  const active = input.shards.filter((s) => s.state === 'active')
  const total = input.tenants.length
  let best: Cost = [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY]
  const top = Math.max(0, ...active.map((s) => s.capacity))
  for (let level = 0; level <= top; level++) {
    const extras = total - active.reduce((sum, s) => sum + Math.min(s.capacity, level), 0)
    const eligible = active.filter((s) => s.capacity > level)
    if (extras < 0 || extras > eligible.length) continue
    let fixed = draining
    for (const s of active) if (s.capacity <= level) fixed = add(fixed, keep(s.id, s.capacity))
    let table: Cost[] = [[0, 0]]
    for (const s of eligible) {
      const next: Cost[] = []
      for (let j = 0; j <= table.length; j++) {
        const without = j < table.length ? add(table[j] as Cost, keep(s.id, level)) : undefined
        const withExtra = j > 0 ? add(table[j - 1] as Cost, keep(s.id, level + 1)) : undefined
        next.push(
          !without ? (withExtra as Cost) : !withExtra || less(without, withExtra) ? without : withExtra,
        )
      }
      table = next
    }
    const candidate = add(fixed, table[extras] as Cost)
    if (less(candidate, best)) best = candidate
  }
  return { moves: best[0], bytes: best[1] }
}

/** Whether counts within one of each other fit the capacities at all: ⌊T/n⌋ everywhere, T mod n one more. */
function strictlyBalanceable(input: PlanInput): boolean {
  const active = input.shards.filter((s) => s.state === 'active')
  if (active.length === 0) return true
  const level = Math.floor(input.tenants.length / active.length)
  const extra = input.tenants.length % active.length
  return active.every((s) => s.capacity >= level) && active.filter((s) => s.capacity > level).length >= extra
}

describe('planRebalance, count', () => {
  it('reaches balance with the fewest moves and bytes possible, moving each tenant once, over-target to under-target', () => {
    fc.assert(
      fc.property(planArb, (input) => {
        if (input.tenants.length > activeRoom(input)) {
          const error = caught(() => planRebalance(input, 'count'))
          expect(error.code).toBe('no_capacity')
          expect(error.message).toMatch(/\S+ \d+\/\d+/)
          return
        }
        const plan = planRebalance(input, 'count')
        const fills = replay(input, plan)
        const active = input.shards.filter((s) => s.state === 'active')
        for (const s of input.shards) {
          const fill = fills.get(s.id) as Fill
          if (s.state === 'draining') expect(fill.tenants, `${s.id} drained`).toBe(0)
          else expect(fill.tenants).toBeLessThanOrEqual(s.capacity)
        }
        const counts = active.map((s) => (fills.get(s.id) as Fill).tenants)
        const fullest = Math.max(0, ...counts)
        for (const s of active) {
          const n = (fills.get(s.id) as Fill).tenants
          if (n < s.capacity)
            expect(n, `${s.id} has room yet is below ${fullest} − 1`).toBeGreaterThanOrEqual(fullest - 1)
        }
        const spread = counts.length ? fullest - Math.min(...counts) : 0
        expect(plan.balanced).toBe(strictlyBalanceable(input))
        if (plan.balanced) expect(spread).toBeLessThanOrEqual(1)
        else expect(plan.reason).toMatch(/capacit/)

        const before = new Map(plan.before.map((s) => [s.id, s]))
        const { senders, receivers } = expectOneWay(plan)
        for (const id of senders) {
          const shard = input.shards.find((s) => s.id === id) as PlanShard
          if (shard.state === 'active')
            expect((fills.get(id) as Fill).tenants).toBeLessThan(
              (before.get(id) as { tenants: number }).tenants,
            )
        }
        for (const id of receivers)
          expect((fills.get(id) as Fill).tenants).toBeGreaterThan(
            (before.get(id) as { tenants: number }).tenants,
          )

        const optimum = optimumByCount(input)
        expect(plan.moves.length).toBe(optimum.moves)
        expect(plan.moves.reduce((sum, m) => sum + m.bytes, 0)).toBe(optimum.bytes)
      }),
      { numRuns: 300 },
    )
  })

  it('is deterministic: the same shards and tenants in any order give the same plan', () => {
    fc.assert(
      fc.property(planArb, fc.integer(), (input, seed) => {
        fc.pre(input.tenants.length <= activeRoom(input))
        const plan = planRebalance(input, 'count')
        const reordered = { shards: shuffle(input.shards, seed), tenants: shuffle(input.tenants, seed + 1) }
        expect(planRebalance(reordered, 'count')).toEqual(plan)
      }),
      { numRuns: 150 },
    )
  })

  it('3 shards × 100 tenants plus an empty fourth: 75 moves, the 25 smallest of each old shard, all to the new one', () => {
    const specs: ShardSpec[] = [1, 2, 3, 4].map((i) => ({
      id: `shard-${i}`,
      state: 'active',
      capacity: 100,
      count: i === 4 ? 0 : 100,
    }))
    const input = buildInput(specs, 1_000_000, 7)
    const plan = planRebalance(input, 'count')
    expect(plan.moves).toHaveLength(75)
    expect(new Set(plan.moves.map((m) => m.to))).toEqual(new Set(['shard-4']))
    expect(plan.after.map((s) => s.tenants)).toEqual([75, 75, 75, 75])
    expect(plan.balanced).toBe(true)
    for (const id of ['shard-1', 'shard-2', 'shard-3']) {
      const sizes = input.tenants
        .filter((t) => t.shard === id)
        .map((t) => t.bytes)
        .sort((a, b) => a - b)
      const sent = plan.moves.filter((m) => m.from === id).map((m) => m.bytes)
      expect(sent).toHaveLength(25)
      expect(Math.max(...sent)).toBeLessThanOrEqual(sizes[25] as number)
    }
  })

  it('new shards added to an even set take ≈ 1/N each, and only they receive', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 120 }),
        fc.integer({ min: 1, max: 20 }),
        fc.integer(),
        (oldCount, newCount, level, capacitySlack, seed) => {
          const next = random(seed)
          const capacity = level + capacitySlack
          const specs: ShardSpec[] = [
            ...Array.from({ length: oldCount }, (_, i) => ({
              id: `old-${i}`,
              state: 'active' as const,
              capacity,
              count: level + (next() < 0.5 ? 1 : 0),
            })),
            ...Array.from({ length: newCount }, (_, i) => ({
              id: `new-${i}`,
              state: 'active' as const,
              capacity,
              count: 0,
            })),
          ]
          const input = buildInput(specs, 1000, seed)
          const plan = planRebalance(input, 'count')
          const total = input.tenants.length
          const shards = oldCount + newCount
          for (const m of plan.moves) expect(m.to).toMatch(/^new-/)
          for (const s of plan.after) {
            expect(s.tenants).toBeGreaterThanOrEqual(Math.floor(total / shards))
            expect(s.tenants).toBeLessThanOrEqual(Math.ceil(total / shards))
          }
        },
      ),
      { numRuns: 150 },
    )
  })

  it('draining a shard plans its tenants onto the others when they have room, no_capacity when not', () => {
    const specs = (fill: number): ShardSpec[] => [
      { id: 'shard-1', state: 'active', capacity: 100, count: fill },
      { id: 'shard-2', state: 'active', capacity: 100, count: fill },
      { id: 'shard-3', state: 'draining', capacity: 100, count: fill },
    ]
    const plan = planRebalance(buildInput(specs(60), 1000, 1), 'count')
    expect(plan.moves).toHaveLength(60)
    expect(plan.moves.every((m) => m.from === 'shard-3')).toBe(true)
    expect(plan.after.map((s) => s.tenants)).toEqual([90, 90, 0])

    const error = caught(() => planRebalance(buildInput(specs(100), 1000, 1), 'count'))
    expect(error.code).toBe('no_capacity')
    expect(error.message).toContain('shard-1 100/100, shard-2 100/100, shard-3 100/100 (draining)')
    expect(error.details).toMatchObject({ tenants: 300, room: 200 })
  })

  it('when capacities rule out counts within one, fills the small shards and balances the rest (balanced: false)', () => {
    const input = buildInput(
      [
        { id: 'big-1', state: 'active', capacity: 100, count: 90 },
        { id: 'big-2', state: 'active', capacity: 100, count: 10 },
        { id: 'small', state: 'active', capacity: 10, count: 0 },
      ],
      1000,
      3,
    )
    const plan = planRebalance(input, 'count')
    expect(plan.after.map((s) => s.tenants)).toEqual([45, 45, 10])
    expect(plan.balanced).toBe(false)
    expect(plan.reason).toContain('small (capacity 10)')
  })

  it('a leftover extra tenant goes to a shard that receives anyway, not to one already at the level', () => {
    // 14 tenants on 3 shards: level 4, two extras. "a" keeps one (it is over), and the other goes to the
    // emptiest ("c", which receives anyway) rather than to "b" (at the level): only "c" receives.
    const input = buildInput(
      [
        { id: 'a', state: 'active', capacity: 100, count: 10 },
        { id: 'b', state: 'active', capacity: 100, count: 4 },
        { id: 'c', state: 'active', capacity: 100, count: 0 },
      ],
      1000,
      5,
    )
    const plan = planRebalance(input, 'count')
    expect(plan.after.map((s) => s.tenants)).toEqual([5, 4, 5])
    expect(new Set(plan.moves.map((m) => m.to))).toEqual(new Set(['c']))
  })

  it('refuses bad input with stable codes', () => {
    const shards: PlanShard[] = [{ id: 'shard-1', state: 'active', capacity: 10 }]
    const tenant = { id: 't', shard: 'shard-1', bytes: 1 }
    expect(caught(() => planRebalance({ shards, tenants: [tenant, tenant] }, 'count')).code).toBe(
      'invalid_input',
    )
    expect(
      caught(() => planRebalance({ shards, tenants: [{ ...tenant, shard: 'nope' }] }, 'count')).code,
    ).toBe('shard_unknown')
    expect(caught(() => planRebalance({ shards: [...shards, ...shards], tenants: [] }, 'count')).code).toBe(
      'invalid_input',
    )
    expect(caught(() => planRebalance({ shards, tenants: [{ ...tenant, bytes: -1 }] }, 'size')).code).toBe(
      'invalid_input',
    )
    expect(caught(() => planRebalance({ shards, tenants: [] }, 'size', { sizeTolerance: -0.1 })).code).toBe(
      'invalid_input',
    )
  })
})

describe('planRebalance, size', () => {
  it('moves each tenant once, one way, above-mean to below-mean, drains, stays within capacity, and says whether it reached the band', () => {
    fc.assert(
      fc.property(planArb, fc.constantFrom(0, 0.05, 0.1, 0.3), (input, tolerance) => {
        if (input.tenants.length > activeRoom(input)) {
          expect(caught(() => planRebalance(input, 'size', { sizeTolerance: tolerance })).code).toBe(
            'no_capacity',
          )
          return
        }
        const plan = planRebalance(input, 'size', { sizeTolerance: tolerance })
        const fills = replay(input, plan)
        const active = input.shards.filter((s) => s.state === 'active')
        for (const s of input.shards) {
          const fill = fills.get(s.id) as Fill
          if (s.state === 'draining') expect(fill.tenants).toBe(0)
          else expect(fill.tenants).toBeLessThanOrEqual(s.capacity)
        }
        expectOneWay(plan)
        const before = new Map(plan.before.map((s) => [s.id, s]))
        const mean = input.tenants.reduce((sum, t) => sum + t.bytes, 0) / Math.max(1, active.length)
        // Forced moves (off draining shards, or over capacity) go wherever there is room; the others go
        // from a shard above the mean to one below it (a receiver of forced moves may have started above).
        const isForced = (id: string) => {
          const s = before.get(id) as { state: string; tenants: number; capacity: number }
          return s.state === 'draining' || s.tenants > s.capacity
        }
        const forcedReceivers = new Set(plan.moves.filter((m) => isForced(m.from)).map((m) => m.to))
        for (const m of plan.moves.filter((m) => !isForced(m.from))) {
          expect((before.get(m.from) as { bytes: number }).bytes).toBeGreaterThan(mean)
          if (!forcedReceivers.has(m.to))
            expect((before.get(m.to) as { bytes: number }).bytes).toBeLessThan(mean)
        }
        const outside = active.filter(
          (s) => Math.abs((fills.get(s.id) as Fill).bytes - mean) > tolerance * mean,
        )
        expect(plan.balanced).toBe(outside.length === 0)
        if (!plan.balanced) expect(plan.reason).toContain(outside[0]?.id)
      }),
      { numRuns: 300 },
    )
  })

  it('reaches the band whenever every tenant is at most half of it and the lighter shards have room', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(
          fc.record({ id: shardIdArb, state: stateArb, count: fc.integer({ min: 0, max: 120 }) }),
          { minLength: 1, maxLength: 20, selector: (s) => s.id },
        ),
        fc.integer({ min: 1, max: 1_000_000 }),
        fc.integer(),
        (specs, maxBytes, seed) => {
          fc.pre(specs.some((s) => s.state === 'active'))
          const total = specs.reduce((sum, s) => sum + s.count, 0)
          const input = buildInput(
            specs.map((s) => ({ ...s, capacity: Math.max(1, total) })),
            maxBytes,
            seed,
          )
          const active = input.shards.filter((s) => s.state === 'active')
          const bytes = input.tenants.map((t) => t.bytes)
          const mean = bytes.reduce((a, b) => a + b, 0) / active.length
          // The smallest tolerance the guarantee covers (every tenant ≤ tolerance × mean / 2), or 10%.
          const tolerance = mean > 0 ? Math.max(0.1, (2 * Math.max(...bytes)) / mean) : 0.1
          const plan = planRebalance(input, 'size', { sizeTolerance: tolerance })
          expect(plan.balanced, plan.reason).toBe(true)
          for (const s of plan.after.filter((x) => x.state === 'active'))
            expect(Math.abs(s.bytes - mean)).toBeLessThanOrEqual(tolerance * mean)
          const reordered = { shards: shuffle(input.shards, seed), tenants: shuffle(input.tenants, seed + 1) }
          expect(planRebalance(reordered, 'size', { sizeTolerance: tolerance })).toEqual(plan)
        },
      ),
      { numRuns: 150 },
    )
  })

  it('balances bytes within 10% by default, moving the big tenant first', () => {
    const input: PlanInput = {
      shards: [
        { id: 'shard-1', state: 'active', capacity: 100 },
        { id: 'shard-2', state: 'active', capacity: 100 },
      ],
      tenants: [
        { id: 'big', shard: 'shard-1', bytes: 500 },
        ...Array.from({ length: 10 }, (_, i) => ({ id: `small-${i}`, shard: 'shard-1', bytes: 50 })),
        { id: 'other', shard: 'shard-2', bytes: 100 },
      ],
    }
    const plan = planRebalance(input, 'size')
    // Mean 550: moving "big" (500) alone lands both at 500 and 600, within ±55.
    expect(plan.moves).toEqual([{ tenant: 'big', from: 'shard-1', to: 'shard-2', bytes: 500 }])
    expect(plan.balanced).toBe(true)
  })

  it('moves the tenant closest to the gap, even when it is below it', () => {
    // Mean 180, gap 60: the 50-byte tenant (10 off) beats the 90-byte one (30 off), and lands both
    // shards within 18 bytes of the mean (190 and 170) in one move.
    const input: PlanInput = {
      shards: [
        { id: 'shard-1', state: 'active', capacity: 10 },
        { id: 'shard-2', state: 'active', capacity: 10 },
      ],
      tenants: [
        { id: 'a', shard: 'shard-1', bytes: 50 },
        { id: 'b', shard: 'shard-1', bytes: 90 },
        { id: 'c', shard: 'shard-1', bytes: 100 },
        { id: 'd', shard: 'shard-2', bytes: 120 },
      ],
    }
    const plan = planRebalance(input, 'size')
    expect(plan.moves).toEqual([{ tenant: 'a', from: 'shard-1', to: 'shard-2', bytes: 50 }])
    expect(plan.after.map((s) => s.bytes)).toEqual([190, 170])
    expect(plan.balanced).toBe(true)
  })

  it('says balanced: false, with the shards left outside, when the tenants are too coarse for the band', () => {
    const input: PlanInput = {
      shards: ['shard-1', 'shard-2', 'shard-3'].map((id) => ({
        id,
        state: 'active' as const,
        capacity: 100,
      })),
      tenants: Array.from({ length: 11 }, (_, i) => ({
        id: `t-${String(i).padStart(2, '0')}`,
        shard: i < 10 ? 'shard-1' : 'shard-2',
        bytes: 100,
      })),
    }
    const plan = planRebalance(input, 'size')
    const bytes = plan.after.map((s) => s.bytes)
    expect(Math.max(...bytes) - Math.min(...bytes)).toBe(100)
    expect(plan.balanced).toBe(false)
    expect(plan.reason).toMatch(/within 10% of the mean/)
  })

  it('makes no move that only swaps which shard is heavy', () => {
    const input: PlanInput = {
      shards: [
        { id: 'shard-1', state: 'active', capacity: 10 },
        { id: 'shard-2', state: 'active', capacity: 10 },
      ],
      tenants: [{ id: 'only', shard: 'shard-1', bytes: 100 }],
    }
    const plan = planRebalance(input, 'size')
    expect(plan.moves).toEqual([])
    expect(plan.balanced).toBe(false)
    expect(plan.reason).toContain('shard-1, shard-2')
  })
})
