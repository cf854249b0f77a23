import { describe, expect, it } from 'vitest'
import { MAX_NESTING, nestingOf } from '../../src/router/nesting.ts'
import { classify, loadPolicy } from '../../src/router/policy.ts'

await loadPolicy()

/** Statements whose trees broke libpg-query's parser (an attacker's read), each varied by `i`. */
const breakers: [string, (i: number) => string][] = [
  ['12,000 `+`', (i) => `select ${Array.from({ length: 12_000 }, () => `c${i}`).join('+')}`],
  ['1,990 nested scalar subqueries', (i) => `select ${'(select '.repeat(1990)}${i}${')'.repeat(1990)}`],
  ['`+-` 4,950 times: one unary operator per character', (i) => `select ${'+-'.repeat(4950)}${i}`],
  [
    "an E'' string continued on the next line (\\' is a quote in it)",
    (i) => `select E'a'\n'\\' x' + ${Array.from({ length: 12_000 }, () => 'c').join('+')} --'\n/* ${i} */`,
  ],
  ['a chain after a -- comment ended by \\r', (i) => `select ${i} --\r+ ${'c+'.repeat(12_000)}c`],
  ['UNION chained over comma-separated columns', (i) => `select ${i},1${' union select 1,1'.repeat(3000)}`],
  [
    // libpg-query's scanner does not continue a string across a comment: `'\'` is a string of its own.
    "a string 'continued' across a -- comment, which libpg-query does not continue",
    (i) => `do E'a' \n--\n'\\'; select ${'1+'.repeat(20_000)}${i} -- '\n`,
  ],
  [
    '1,100 nested BEGIN ATOMIC blocks around a COLLATE chain',
    (i) =>
      `create procedure f${i}() ${'begin atomic '.repeat(1100)}select a${' collate c'.repeat(2400)};${' end;'.repeat(1100)}`,
  ],
]

describe('the nesting guard in front of the parser (src/router/nesting.ts)', () => {
  it.each(breakers)('refuses %s before parsing, and the parser still works', (_name, make) => {
    for (let i = 0; i < 50; i++) {
      expect(nestingOf(make(i))).toBeGreaterThan(MAX_NESTING)
      expect(() => classify(make(i))).toThrow(/nested too deeply/)
    }
    expect(classify('select 1 as still_parses').kind).toBe('read')
  })

  it('lets through what applications send: long VALUES and IN lists, subqueries a few hundred deep', () => {
    const values = `insert into customers (name) values ${Array.from({ length: 3000 }, (_, i) => `('c${i}')`).join(', ')}`
    const inList = `select id from customers where id in (${Array.from({ length: 5000 }, (_, i) => i).join(', ')})`
    const subqueries = `select ${'(select '.repeat(300)}1${')'.repeat(300)} as deep`
    // A report of 20 SELECTs of 40 columns each, joined by UNION ALL.
    const columns = Array.from({ length: 40 }, (_, i) => `${i} as c${i}`).join(', ')
    const unions = Array.from({ length: 20 }, () => `select ${columns} from customers`).join(' union all ')
    expect(nestingOf(unions)).toBeLessThan(100)
    for (const sql of [values, inList, subqueries]) expect(nestingOf(sql)).toBeLessThanOrEqual(MAX_NESTING)
    expect(classify(values).kind).toBe('write')
    expect(classify(inList).kind).toBe('read')
    expect(classify(subqueries).kind).toBe('read')
  })

  it('does not count what is inside quotes, dollar quotes and comments', () => {
    const hidden = `select '${'+'.repeat(5000)}', $t$${'+'.repeat(5000)}$t$, "${'+'.repeat(50)}" /* ${'+'.repeat(5000)} */ -- ${'+'.repeat(5000)}`
    expect(nestingOf(hidden)).toBeLessThan(10)
  })
})
