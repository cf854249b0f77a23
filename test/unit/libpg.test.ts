import { describe, expect, it } from 'vitest'
import { classify, loadPolicy } from '../../src/router/policy.ts'
import {
  discardParser,
  isModuleFailure,
  loadParser,
  parser,
  parsersDiscarded,
} from '../../src/shard/libpg.ts'

await loadPolicy()

describe('the parser module, replaceable (src/shard/libpg.ts)', () => {
  it('a module broken by statements past its stack is replaced by a fresh one; the policy runs on it', async () => {
    const broken = parser()
    if (!broken) throw new Error('the parser is not loaded')
    // Straight into the module, past the router's nesting guard: what the guard exists to stop.
    const deep = (i: number) => `select ${Array.from({ length: 12_000 }, () => 'c').join('+')}, x${i}`
    // The first failure: from then on a call may fail or hang (both seen), so none is made on it again.
    let failure: unknown
    for (let i = 0; i < 600 && failure === undefined; i++) {
      try {
        broken.parseSync(deep(i))
      } catch (error) {
        failure = error
      }
    }
    expect(isModuleFailure(failure)).toBe(true)
    const before = parsersDiscarded()
    discardParser(broken)
    expect(parser()).toBeUndefined()
    expect(() => classify('select 1 as one_while_replaced')).toThrow(/restarting/)
    const replaced = await loadParser()
    expect(replaced).not.toBe(broken)
    expect(parsersDiscarded()).toBe(before + 1)
    expect(classify('select 1 as one_after').kind).toBe('read')
    // The refusal while it was replaced is not remembered as the statement's outcome.
    expect(classify('select 1 as one_while_replaced').kind).toBe('read')
  }, 120_000)
})
