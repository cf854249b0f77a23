import { describe, expect, it } from 'vitest'
import {
  addHistogram,
  BUCKETS,
  bucketMs,
  bucketOf,
  emptyCounts,
  type Histogram,
  OTHER_FINGERPRINT,
  OTHER_QUERY,
  parseStatementQuery,
  quantileMs,
} from '../../src/directory/statement-stats.ts'
import { classify, loadPolicy } from '../../src/router/policy.ts'
import { identifyStatement } from '../../src/router/stats/identity.ts'
import { countStatements, createStatementTables } from '../../src/router/stats/recorder.ts'
import { NOT_SHOWN, SHOWN_CHARS, shownText } from '../../src/shard/shown-text.ts'

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
  const a = { fingerprint: 'a', sql: 'select 1' }
  const b = { fingerprint: 'b', sql: 'update t set x = 1' }
  const result = (rows: number, rowCount: number | null = null) => ({
    command: 'SELECT',
    rowCount,
    fields: [],
    rows: Array.from({ length: rows }, () => []),
  })

  it('counts one call per statement, the time shared, rows from each result', () => {
    const counted = countStatements([a, b], 10, { results: [result(3), result(0, 7)] }, 100)
    expect(
      counted.map((entry) => [entry.identity.fingerprint, entry.counts.calls, entry.counts.rows]),
    ).toEqual([
      ['a', 1, 3],
      ['b', 1, 7],
    ])
    expect(counted.every((entry) => entry.counts.micros === 5000 && entry.counts.errors === 0)).toBe(true)
  })

  it('counts a failed request up to the statement that failed, which counts the error', () => {
    const failed = countStatements([a, b, a], 9, { failed: true, statementIndex: 1 }, 100)
    expect(failed.map((entry) => [entry.identity.fingerprint, entry.counts.errors])).toEqual([
      ['a', 0],
      ['b', 1],
    ])
    const unknown = countStatements([a, b], 4, { failed: true }, 100)
    expect(unknown.map((entry) => entry.counts.errors)).toEqual([1, 1])
  })

  it('counts a call as slow exactly when its share of the time is over the budget', () => {
    const slowOf = (ms: number, statements = [a]) =>
      countStatements(statements, ms, { results: [] }, 100).map((entry) => entry.counts.slow)
    expect(slowOf(100)).toEqual([0])
    expect(slowOf(100.01)).toEqual([1])
    expect(slowOf(150, [a, b])).toEqual([0, 0])
    expect(slowOf(202, [a, b])).toEqual([1, 1])
  })
})

describe("a router's counts between flushes", () => {
  const counts = (calls: number) => ({ ...emptyCounts(), calls, histogram: new Map([[10, calls]]) })
  const identity = (i: number) => ({ fingerprint: `f${i}`, sql: `select ${i}` })
  const bounds = { tenants: 10, fingerprintsPerTenant: 3, maxRows: 1000 }

  it('keeps at most the cap of fingerprints per tenant; the rest count in `other`, and nothing is lost', () => {
    const tables = createStatementTables(bounds)
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
    const tables = createStatementTables({ ...bounds, tenants: 2 })
    expect(tables.add(7, 'a', identity(1), counts(1))).toBe(true)
    expect(tables.add(7, 'b', identity(1), counts(1))).toBe(true)
    expect(tables.add(7, 'c', identity(1), counts(4))).toBe(false)
    expect(tables.takeDropped()).toBe(4)
    expect(tables.take().map((batch) => batch.tenant)).toEqual(['a', 'b'])
  })

  it('holds the current hour and the one before; older counts are dropped', () => {
    const tables = createStatementTables({ ...bounds, tenants: 2 })
    tables.add(7, 'a', identity(1), counts(1))
    tables.add(8, 'a', identity(1), counts(2))
    tables.add(9, 'a', identity(1), counts(3))
    expect(tables.takeDropped()).toBe(1)
    expect(tables.add(7, 'a', identity(1), counts(5))).toBe(false)
    expect(tables.take().map((batch) => batch.hour)).toEqual([8, 9])
  })

  it('caps fingerprints per tenant over the hour, not per flush, and builds each text once an hour', () => {
    const tables = createStatementTables(bounds)
    for (let i = 0; i < 3; i++) tables.add(7, 't', identity(i), counts(1))
    const first = tables.take()[0]?.deltas ?? []
    expect(first.map((delta) => [delta.fingerprint, delta.query])).toEqual([
      ['f0', 'select $1'],
      ['f1', 'select $1'],
      ['f2', 'select $1'],
    ])
    tables.add(7, 't', identity(0), counts(1))
    tables.add(7, 't', identity(9), counts(1))
    const second = tables.take()[0]?.deltas ?? []
    expect(second.map((delta) => [delta.fingerprint, delta.query])).toEqual([
      ['f0', ''],
      [OTHER_FINGERPRINT, OTHER_QUERY],
    ])
    // A new hour: the cap and the texts start again.
    tables.add(8, 't', identity(9), counts(1))
    expect(tables.take()[0]?.deltas.map((delta) => [delta.fingerprint, delta.query])).toEqual([
      ['f9', 'select $1'],
    ])
  })

  it('holds at most maxRows fingerprints an hour over all tenants; the rest count in `other`', () => {
    const tables = createStatementTables({ tenants: 100, fingerprintsPerTenant: 100, maxRows: 5 })
    for (let tenant = 0; tenant < 10; tenant++)
      for (let i = 0; i < 10; i++) tables.add(7, `t${tenant}`, identity(i), counts(1))
    const taken = tables.take()
    const rows = taken.flatMap((batch) => batch.deltas)
    expect(rows.filter((delta) => delta.fingerprint !== OTHER_FINGERPRINT)).toHaveLength(5)
    expect(rows.reduce((sum, delta) => sum + delta.counts.calls, 0)).toBe(100)
    expect(tables.takeDropped()).toBe(0)
  })

  it("keeps a held delta's text when Redis did not take it", () => {
    const tables = createStatementTables(bounds)
    tables.add(7, 't', identity(1), counts(1))
    const [batch] = tables.take()
    for (const delta of batch?.deltas ?? []) tables.add(7, 't', delta, delta.counts)
    expect(tables.take()[0]?.deltas.map((delta) => delta.query)).toEqual(['select $1'])
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

  it('shows the text without constants or comments, and caps it', () => {
    const shown = shownText(
      "update customers set email = 'secret@example.com' /* token=abc */ where id = 42 -- pw=xyz\n and name = E'it\\'s'",
    )
    expect(shown).toBe('update customers set email = $1 where id = $2 and name = $3')
    expect(shownText(`select $1 UESCAPE '!'`)).toBe('select $1 UESCAPE $2')
    expect(shownText('select 1 as "\u001b[2J\u0007"')).toBe('select $1 as "?[2J?"')
    // Constants wherever the grammar puts them, and the kinds libpg-query's scanner names UNKNOWN.
    const everywhere = shownText(
      "select count(*), B'0101', X'ff', U&'d!0061' UESCAPE '!', $q$hunter2$q$, -1.5e3, x->>'k' " +
        "from t where json_table(x, 'lax $' COLUMNS (b int PATH $$hunter2$$)) is null",
    )
    expect(everywhere).toBe(
      'select count(*), $1, $2, $3 UESCAPE $4, $5, -$6, x->>$7 from t where json_table(x, $8 COLUMNS (b int PATH $9)) is null',
    )
    const long = shownText(
      `select ${Array.from({ length: 400 }, (_, i) => `c${i}`).join(', ')} from services`,
    )
    expect(long).toHaveLength(SHOWN_CHARS)
    expect(long.endsWith('…')).toBe(true)
  })

  it('ignores aliases, constants, parameters and list lengths, and not the tables, columns or casts', () => {
    const fingerprint = (sql: string) => classify(sql).fingerprint
    const base = fingerprint('select id, name as n from customers where id in (1, 2, 3) and name = $1')
    expect(fingerprint("SELECT id, name AS who FROM customers WHERE id IN ($1, 7) AND name = 'x'")).toBe(base)
    expect(fingerprint('select id, name from services where id in (1) and name = $1')).not.toBe(base)
    expect(fingerprint('select id, phone from customers where id in (1) and name = $1')).not.toBe(base)
    expect(fingerprint('select id, name::text from customers where id in (1) and name = $1')).not.toBe(base)
    const rows = (n: number) =>
      fingerprint(
        `insert into customers (name) values ${Array.from({ length: n }, (_, i) => `('c${i}')`).join(', ')}`,
      )
    expect(rows(1)).toBe(rows(500))
    // In an UPDATE the names are columns, not aliases.
    expect(fingerprint('update customers set name = $1')).not.toBe(
      fingerprint('update customers set phone = $1'),
    )
  })

  it('never hands the parser a statement nested deeper than it can take', () => {
    const deep = `select ${Array.from({ length: 12_000 }, (_, i) => `${i}+`).join('')}1`
    expect(() => classify(deep)).toThrow(/nested too deeply/)
    expect(shownText(deep)).toMatch(/^select \$1\+\$2\+/)
    const arrays = `select ${'array['.repeat(600)}1${']'.repeat(600)} as x from customers`
    expect(classify(arrays).fingerprint).toMatch(/^[0-9a-f]{16}$/)
    expect(shownText(arrays)).toMatch(/^select array\[array/)
    expect(identifyStatement('select 1', undefined).fingerprint).toMatch(/^[0-9a-f]{16}$/)
  })

  it('scans the whole statement when its head ends inside a constant or a comment', () => {
    const pad = 'x'.repeat(4090)
    expect(shownText(`select '${pad}' as a, 'hunter2' as b`)).toBe('select $1 as a, $2 as b')
    expect(shownText(`select /* ${pad} */ 1 as a`)).toBe('select $1 as a')
    expect(shownText(`select $t$${pad}$t$ as a`)).toBe('select $1 as a')
    expect(shownText("select 'unterminated")).toBe(NOT_SHOWN)
    // A head cut inside a long comment still says the statement goes on.
    expect(shownText(`select 1 from t --${'a'.repeat(4085)}\nwhere x = 1`)).toBe('select $1 from t …')
  })

  it("masks extract's field word (a constant to the grammar) and bidi controls", () => {
    expect(shownText('select extract(hunter2 from now()) from t')).toBe(
      'select extract($1 from now()) from t',
    )
    expect(shownText('select 1 as "a\u202eb\u2066"')).toBe('select $1 as "a?b?"')
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
