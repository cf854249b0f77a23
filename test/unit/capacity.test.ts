import { availableParallelism } from 'node:os'
import { describe, expect, it } from 'vitest'
import type { Topology } from '../../src/config/topology.ts'
import { bisection } from '../../src/loadtest/capacity.ts'
import { capacityFlags, capacityOptions } from '../../src/loadtest/options.ts'
import { stepUsage, type UsageSnapshot } from '../../src/loadtest/usage.ts'

/** The rates the search tries against a machine whose targets hold up to `limit` req/s. */
function search(start: number, limit: number, options = { maxRate: 2000, precision: 0.1, maxSteps: 20 }) {
  const steps: { rate: number; pass: boolean }[] = []
  for (const rate of bisection(start, options, steps)) steps.push({ rate, pass: rate <= limit })
  return steps
}

describe('the capacity search (src/loadtest/capacity.ts)', () => {
  it('doubles while steps pass, then bisects until the failure is within the precision of the knee', () => {
    const steps = search(75, 333)
    expect(steps.map((s) => s.rate)).toEqual([75, 150, 300, 600, 450, 375, 338, 319])
    const knee = Math.max(...steps.filter((s) => s.pass).map((s) => s.rate))
    const failure = Math.min(...steps.filter((s) => !s.pass).map((s) => s.rate))
    expect(knee).toBe(319)
    expect((failure - knee) / knee).toBeLessThanOrEqual(0.1)
  })

  it('halves from a start that fails, and finds the knee below it', () => {
    const steps = search(75, 20)
    expect(steps.map((s) => s.rate)).toEqual([75, 38, 19, 29, 24, 22, 21, 20])
    expect(steps.filter((s) => s.pass).every((s) => s.rate <= 20)).toBe(true)
  })

  it('stops at --max-rate when every step passes, and after --max-steps', () => {
    expect(search(75, Number.POSITIVE_INFINITY).map((s) => s.rate)).toEqual([75, 150, 300, 600, 1200, 2000])
    expect(search(75, 333, { maxRate: 2000, precision: 0.1, maxSteps: 3 })).toHaveLength(3)
    // A machine that holds nothing: the halving ends, it does not loop.
    expect(search(75, 0).length).toBeLessThanOrEqual(20)
  })

  it('checks its flags: a clear invalid_input naming the flag', () => {
    expect(capacityOptions({}, capacityFlags)).toMatchObject({
      from: 'nominal',
      zipf: 0,
      moves: 2,
      generatorCheck: true,
      retry: true,
    })
    expect(capacityOptions({ skipGeneratorCheck: true, from: '40' }, capacityFlags)).toMatchObject({
      from: 40,
      generatorCheck: false,
    })
    expect(() => capacityOptions({ precision: '0' }, capacityFlags)).toThrow(
      /--precision "0": must be between/,
    )
    expect(() => capacityOptions({ duration: '10' }, capacityFlags)).toThrow(/unknown option --duration/)
  })
})

describe('where a step’s time went (src/loadtest/usage.ts)', () => {
  const topology = {
    shards: [
      {
        id: 'shard-1',
        primary: 'postgres://u@127.0.0.1:7001/db',
        replicas: ['postgres://u@localhost:7002/db'],
      },
    ],
  } as unknown as Topology
  const snapshot = (at: number, cpu: number, waits: [number, number][], busy: number): UsageSnapshot => ({
    at,
    routerCpuSeconds: cpu,
    poolWaits: { count: waits.at(-1)?.[1] ?? 0, sumSeconds: cpu / 10, buckets: new Map(waits) },
    nodeCpuSeconds: new Map([
      ['shard-1-primary', cpu * 2],
      ['shard-1-replica-1', cpu],
    ]),
    machine: { busy, total: at / 10 },
    generatorCpuSeconds: cpu / 2,
  })

  it('shares of a core over the window, CPU per request, the pool-wait bucket of the 99th, and the rest', () => {
    const before = snapshot(
      1000,
      1,
      [
        [0.001, 0],
        [0.01, 0],
        [Number.POSITIVE_INFINITY, 0],
      ],
      0,
    )
    // 10 s later: router +2 s, primary +4 s, replica +2 s, generator +1 s of CPU; 100 waits, 98 under 1 ms.
    const after = snapshot(
      11_000,
      3,
      [
        [0.001, 98],
        [0.01, 100],
        [Number.POSITIVE_INFINITY, 100],
      ],
      800,
    )
    const usage = stepUsage(topology, before, after, 1000, [5, null, 12])
    expect(usage).toMatchObject({
      seconds: 10,
      routerCpu: 0.2,
      generatorCpu: 0.1,
      routerCpuMsPerRequest: 2,
      generatorCpuMsPerRequest: 1,
      machineBusy: 0.8,
      nodes: [
        { node: 'shard-1-primary', role: 'primary', cpu: 0.4 },
        { node: 'shard-1-replica-1', role: 'replica', cpu: 0.2 },
      ],
      poolWaits: { count: 100, p99Ms: 10 },
      replicaLagMaxBytes: 12,
    })
    // The machine's 0.8 of its cores, less the 0.9 of a core measured above.
    expect(usage.otherCpu).toBeCloseTo(Math.max(0, 0.8 * availableParallelism() - 0.9), 3)
  })
})
