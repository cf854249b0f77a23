import { describe, expect, it } from 'vitest'
import {
  addHistogram,
  BUCKETS,
  bucketMs,
  bucketOf,
  emptyCounts,
  type Histogram,
  OTHER_FINGERPRINT,
  parseStatementQuery,
  quantileMs,
} from '../../src/directory/statement-stats.ts'
import { classify, loadPolicy } from '../../src/router/policy.ts'
import { identifyStatement, QUERY_CHARS, shownText } from '../../src/router/stats/identity.ts'
import { countStatements, createStatementTables } from '../../src/router/stats/recorder.ts'

await loadPolicy()

const histogramOf = (times: number[]): Histogram => {
  const histogram: Histogram = new Map()
  for (const ms of times) histogram.set(bucketOf(ms), (histogram.get(bucketOf(ms)) ?? 0) + 1)
  return histogram
}

/** The exact q-quantile of a list of times, as quantileMs defines it (the ceil(q × n)-th fastest). */
const exact = (times: number[], q: number) =>
  [...times].sort((a, b) => a - b)[Math.ceil(q * times.length) - 1] as number

describe('the latency histogram', () => {
  it('puts a time in a bucket whose middle is within 4.5% of it, from 0.1 ms to a minute', () => {
    for (let ms = 0.1; ms < 60_000; ms *= 1.07) {
      const bucket = bucketOf(ms)
      expect(bucket).toBeGreaterThanOrEqual(0)
      expect(bucket).toBeLessThan(BUCKETS)
      expect(Math.abs(bucketMs(bucket) - ms) / ms).toBeLessThan(0.045)
    }
    expect(bucketOf(0)).toBe(0)
    expect(bucketOf(Number.NaN)).toBe(0)
    expect(bucketOf(10_000_000)).toBe(BUCKETS - 1)
  })

  it("gives the p99 of every router's calls from the sum of their buckets", () => {
    // Three routers: mostly fast calls, a few slow ones on one of them.
    const routers = [
      Array.from({ length: 400 }, (_, i) => 0.5 + (i % 50) / 10),
      Array.from({ length: 300 }, (_, i) => 1 + (i % 30) / 5),
      [...Array.from({ length: 290 }, () => 2), ...Array.from({ length: 10 }, (_, i) => 250 + i * 10)],
    ]
    const merged: Histogram = new Map()
    for (const times of routers) addHistogram(merged, histogramOf(times))
    const all = routers.flat()
    for (const q of [0.5, 0.9, 0.99]) {
      const truth = exact(all, q)
      expect(Math.abs(quantileMs(merged, q) - truth) / truth).toBeLessThan(0.045)
    }
    // 10 slow calls of 1000: the p99 is among them (the 990th fastest is the last fast one).
    expect(quantileMs(merged, 0.995)).toBeGreaterThan(100)
    expect(quantileMs(new Map(), 0.99)).toBe(0)
  })
})

describe('counting a request', () => {
  const a = { fingerprint: 'a', query: 'select $1' }
  const b = { fingerprint: 'b', query: 'update t set x = $1' }
  const result = (rows: number, rowCount: number | null = null) => ({
    command: 'SELECT',
    rowCount,
    fields: [],
    rows: Array.from({ length: rows }, () => []),
  })

  it('counts one call per statement, the time shared, rows from each result', () => {
    const counted = countStatements([a, b], 10, { results: [result(3), result(0, 7)] })
    expect(
      counted.map((entry) => [entry.identity.fingerprint, entry.counts.calls, entry.counts.rows]),
    ).toEqual([
      ['a', 1, 3],
      ['b', 1, 7],
    ])
    expect(counted.every((entry) => entry.counts.micros === 5000 && entry.counts.errors === 0)).toBe(true)
  })

  it('counts a failed request up to the statement that failed, which counts the error', () => {
    const failed = countStatements([a, b, a], 9, { failed: true, statementIndex: 1 })
    expect(failed.map((entry) => [entry.identity.fingerprint, entry.counts.errors])).toEqual([
      ['a', 0],
      ['b', 1],
    ])
    const unknown = countStatements([a, b], 4, { failed: true })
    expect(unknown.map((entry) => entry.counts.errors)).toEqual([1, 1])
  })
})

describe("a router's counts between flushes", () => {
  const counts = (calls: number) => ({ ...emptyCounts(), calls, histogram: new Map([[10, calls]]) })
  const identity = (i: number) => ({ fingerprint: `f${i}`, query: `select ${i}` })

  it('keeps at most the cap of fingerprints per tenant; the rest count in `other`, and nothing is lost', () => {
    const tables = createStatementTables({ tenants: 10, fingerprintsPerTenant: 3 })
    for (let i = 0; i < 50; i++) tables.add(7, 'tenant', identity(i % 25), counts(2))
    expect(tables.held(7, 'tenant')).toBe(4)
    const [taken] = tables.take()
    const rows = new Map(taken?.deltas.map((delta) => [delta.fingerprint, delta.counts.calls]))
    expect([...rows.keys()].sort()).toEqual(['f0', 'f1', 'f2', OTHER_FINGERPRINT])
    expect([...rows.values()].reduce((sum, calls) => sum + calls, 0)).toBe(100)
    expect(rows.get(OTHER_FINGERPRINT)).toBe(88)
    expect(tables.held(7, 'tenant')).toBe(0)
  })

  it('counts at most the cap of tenants, and says how many statements it left out', () => {
    const tables = createStatementTables({ tenants: 2, fingerprintsPerTenant: 3 })
    expect(tables.add(7, 'a', identity(1), counts(1))).toBe(true)
    expect(tables.add(7, 'b', identity(1), counts(1))).toBe(true)
    expect(tables.add(7, 'c', identity(1), counts(4))).toBe(false)
    expect(tables.takeDropped()).toBe(4)
    expect(tables.take().map((batch) => batch.tenant)).toEqual(['a', 'b'])
  })

  it('holds the current hour and the one before; older counts are dropped', () => {
    const tables = createStatementTables({ tenants: 2, fingerprintsPerTenant: 3 })
    tables.add(7, 'a', identity(1), counts(1))
    tables.add(8, 'a', identity(1), counts(2))
    tables.add(9, 'a', identity(1), counts(3))
    expect(tables.takeDropped()).toBe(1)
    expect(tables.add(7, 'a', identity(1), counts(5))).toBe(false)
    expect(tables.take().map((batch) => batch.hour)).toEqual([8, 9])
  })
})

describe("a statement's identity", () => {
  it('is the same for statements that differ only in literals, comments and whitespace', () => {
    const one = classify("select * from customers where email = 'ann@example.com' /* password=hunter2 */")
    const two = classify("SELECT *  FROM customers WHERE email = 'bob@example.com'")
    expect(one.fingerprint).toBe(two.fingerprint)
    expect(one.fingerprint).toMatch(/^[0-9a-f]{16}$/)
    expect(classify('select * from services where id = $1').fingerprint).not.toBe(one.fingerprint)
  })

  it('shows normalized text without literals or comments, and caps it', () => {
    const shown = shownText(
      "update customers set email = 'secret@example.com' /* token=abc */ where id = 42 -- pw=xyz\n and name = E'it\\'s'",
    )
    expect(shown).toBe('update customers set email = $1 where id = $2 and name = $3')
    expect(shownText(`select $1 UESCAPE '!'`)).not.toContain("'")
    expect(shownText('select 1 as "\u001b[2J\u0007"')).toBe('select $1 as "?[2J?"')
    const long = shownText(
      `select ${Array.from({ length: 400 }, (_, i) => `c${i}`).join(', ')} from services`,
    )
    expect(long).toHaveLength(QUERY_CHARS)
    expect(long.endsWith('…')).toBe(true)
  })

  it('never throws: a statement nested past the parser stack counts as other', () => {
    const deep = `select ${Array.from({ length: 12_000 }, (_, i) => `${i}+`).join('')}1`
    const identity = identifyStatement(deep)
    expect(identity.query).not.toContain('11999')
    expect(identity.fingerprint === OTHER_FINGERPRINT || /^[0-9a-f]{16}$/.test(identity.fingerprint)).toBe(
      true,
    )
    expect(identifyStatement('select 1').fingerprint).toMatch(/^[0-9a-f]{16}$/)
  })
})

describe('the query of top and /admin/v1/stats/statements', () => {
  it('takes strings from flags and query strings, with defaults', () => {
    expect(parseStatementQuery({})).toEqual({ by: 'p99', limit: 20, hours: 1 })
    expect(
      parseStatementQuery({
        tenant: '0190A3B4-0000-7000-8000-000000000001',
        by: 'calls',
        limit: '5',
        hours: '24',
      }),
    ).toEqual({ tenant: '0190a3b4-0000-7000-8000-000000000001', by: 'calls', limit: 5, hours: 24 })
  })

  it('refuses what it does not know with invalid_input naming the field', () => {
    for (const bad of [
      { by: 'mean' },
      { limit: '0' },
      { limit: 'x' },
      { hours: '25' },
      { tenant: 'nobody' },
      { x: 1 },
    ])
      expect(() => parseStatementQuery(bad)).toThrow(expect.objectContaining({ code: 'invalid_input' }))
  })
})
