import { describe, expect, it } from 'vitest'
import { bisection } from '../../src/loadtest/capacity.ts'
import { capacityFlags, capacityOptions } from '../../src/loadtest/options.ts'

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
