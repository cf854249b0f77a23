/**
 * `npm run bench:planner`: the rebalance planner's time for 100,000 tenants on 1,000 shards (issue 4's
 * target: under 1 s), for both strategies. Fills and sizes are random from a fixed seed, so every run
 * plans the same input: shard capacity 150, fills spread around 100, 5 shards draining, tenant sizes
 * log-normal (a few large tenants among many small ones). Prints figures; asserts nothing.
 */
import {
  type PlanShard,
  type PlanTenant,
  planRebalance,
  type RebalanceStrategy,
} from '../src/placement/planner.ts'

const SHARDS = 1_000
const TENANTS = 100_000
const DRAINING = 5
const RUNS = 5

/** mulberry32: small, fast, seeded. */
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

function topology(seed: number): { shards: PlanShard[]; tenants: PlanTenant[] } {
  const next = random(seed)
  const shards: PlanShard[] = Array.from({ length: SHARDS }, (_, i) => ({
    id: `shard-${String(i + 1).padStart(4, '0')}`,
    state: i % (SHARDS / DRAINING) === 7 ? 'draining' : 'active',
    capacity: 150,
  }))
  // Each shard's share of the tenants: uniform weights in [0.4, 1.6), so fills range ~40–150.
  const weights = shards.map(() => 0.4 + 1.2 * next())
  const sum = weights.reduce((a, b) => a + b, 0)
  const fills = weights.map((w) => Math.min(150, Math.floor((w / sum) * TENANTS)))
  let missing = TENANTS - fills.reduce((a, b) => a + b, 0)
  for (let i = 0; missing > 0; i = (i + 1) % SHARDS) {
    if ((fills[i] as number) < 150) {
      fills[i] = (fills[i] as number) + 1
      missing -= 1
    }
  }
  const tenants: PlanTenant[] = []
  shards.forEach((shard, i) => {
    for (let k = 0; k < (fills[i] as number); k++) {
      // Box–Muller normal → log-normal bytes, median ~8 MB.
      const normal = Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next())
      tenants.push({
        id: `tenant-${String(tenants.length).padStart(6, '0')}`,
        shard: shard.id,
        bytes: Math.round(8e6 * Math.exp(normal)),
      })
    }
  })
  return { shards, tenants }
}

const input = topology(42)
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`
console.log(
  `planner: ${input.tenants.length} tenants on ${input.shards.length} shards (${DRAINING} draining), best and median of ${RUNS} runs`,
)
for (const strategy of ['count', 'size'] as RebalanceStrategy[]) {
  const times: number[] = []
  let plan = planRebalance(input, strategy)
  for (let run = 0; run < RUNS; run++) {
    const started = performance.now()
    plan = planRebalance(input, strategy)
    times.push(performance.now() - started)
  }
  times.sort((a, b) => a - b)
  const active = plan.after.filter((s) => s.state === 'active')
  const spread = (key: 'tenants' | 'bytes') => {
    const values = active.map((s) => s[key])
    return [Math.min(...values), Math.max(...values)]
  }
  const [beforeLow, beforeHigh] = (() => {
    const values = plan.before.filter((s) => s.state === 'active').map((s) => s.tenants)
    return [Math.min(...values), Math.max(...values)]
  })()
  const [low, high] = spread('tenants')
  const [bytesLow, bytesHigh] = spread('bytes')
  console.log(
    [
      `  ${strategy.padEnd(5)} best ${(times[0] as number).toFixed(0)} ms, median ${(times[RUNS >> 1] as number).toFixed(0)} ms`,
      `${plan.moves.length} moves, ${mb(plan.moves.reduce((sum, m) => sum + m.bytes, 0))} moved`,
      `tenants/shard ${beforeLow}–${beforeHigh} → ${low}–${high}`,
      `bytes/shard ${mb(bytesLow as number)}–${mb(bytesHigh as number)}`,
      `balanced ${plan.balanced}`,
    ].join('; '),
  )
}
