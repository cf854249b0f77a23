import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { defaultTenantConnections, divide, overcommitted, poolShare } from '../../src/router/pool-division.ts'

// How `router --workers N` divides `router.poolSize` and the fair share between its processes. The
// workers themselves: test/router-workers.test.ts.

const shares = (settings: { poolSize: number; tenantConnections?: number }, workers: number) =>
  Array.from({ length: workers }, (_, worker) => poolShare(settings, workers, worker))

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0)

describe('pool division between router workers', () => {
  it('one process keeps the whole pool and a quarter of it as the fair share, as before workers', () => {
    expect(poolShare({ poolSize: 20 }, 1, 0)).toEqual({ poolSize: 20, tenantConnections: 5 })
    expect(poolShare({ poolSize: 20, tenantConnections: 7 }, 1, 0)).toEqual({
      poolSize: 20,
      tenantConnections: 7,
    })
    expect(poolShare({ poolSize: 3 }, 1, 0)).toEqual({ poolSize: 3, tenantConnections: 1 })
  })

  it('poolSize 20 with 2 workers is 10 each; with 3 the first two get the remainder', () => {
    expect(shares({ poolSize: 20 }, 2)).toEqual([
      { poolSize: 10, tenantConnections: 2 },
      { poolSize: 10, tenantConnections: 2 },
    ])
    expect(shares({ poolSize: 20 }, 3).map((share) => share.poolSize)).toEqual([7, 7, 6])
  })

  it('a fair share set in the topology is divided like the pool', () => {
    expect(shares({ poolSize: 20, tenantConnections: 5 }, 2).map((share) => share.tenantConnections)).toEqual(
      [3, 2],
    )
  })

  it('more workers than connections: each still gets 1, and that is overcommitted', () => {
    expect(shares({ poolSize: 2 }, 4)).toEqual(Array(4).fill({ poolSize: 1, tenantConnections: 1 }))
    expect(overcommitted({ poolSize: 2 }, 4)).toBe(true)
    expect(overcommitted({ poolSize: 4 }, 4)).toBe(false)
  })

  it('for any pool and number of workers: parts of at least 1, within one of each other, adding up to the pool', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 1, max: 64 }), (poolSize, workers) => {
        const parts = shares({ poolSize }, workers).map((share) => share.poolSize)
        expect(Math.min(...parts)).toBeGreaterThanOrEqual(1)
        expect(Math.max(...parts) - Math.min(...parts)).toBeLessThanOrEqual(1)
        expect(sum(parts)).toBe(overcommitted({ poolSize }, workers) ? workers : poolSize)
      }),
    )
  })

  it('for any settings: a fair share of at least 1, never the whole pool of a worker with more than one connection', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 1, max: 64 }), (poolSize, workers) => {
        for (const share of shares({ poolSize }, workers)) {
          expect(share.tenantConnections).toBe(defaultTenantConnections(share.poolSize))
          expect(share.tenantConnections).toBeGreaterThanOrEqual(1)
          if (share.poolSize > 1) expect(share.tenantConnections).toBeLessThan(share.poolSize)
        }
      }),
    )
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 500 }),
        fc.integer({ min: 1, max: 500 }),
        fc.integer({ min: 1, max: 64 }),
        (poolSize, tenantConnections, workers) => {
          const parts = shares({ poolSize, tenantConnections }, workers).map(
            (share) => share.tenantConnections,
          )
          expect(Math.min(...parts)).toBeGreaterThanOrEqual(1)
          expect(sum(parts)).toBe(Math.max(tenantConnections, workers))
        },
      ),
    )
  })

  it('refuses what is not a division: no workers, a worker out of range, a pool of 0', () => {
    expect(() => divide(20, 0, 0)).toThrow(RangeError)
    expect(() => divide(20, 2, 2)).toThrow(RangeError)
    expect(() => divide(20, 2, -1)).toThrow(RangeError)
    expect(() => divide(0, 2, 0)).toThrow(RangeError)
    expect(() => divide(20, 1.5, 0)).toThrow(RangeError)
  })
})
