import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { describe, expect, it } from 'vitest'
import { createMetrics } from '../../src/router/metrics.ts'
import { classify, loadPolicy } from '../../src/router/policy.ts'
import {
  discardParser,
  isModuleFailure,
  loadParser,
  type PgParser,
  parser,
  parsersDiscarded,
} from '../../src/shard/libpg.ts'

await loadPolicy()

// The engine's own collector, to see what a dropped instance leaves behind.
setFlagsFromString('--expose-gc')
const collect = runInNewContext('gc') as () => void

/** Statements past the parser's stack, straight into an instance: what the router's nesting guard stops. */
const deep = (i: number) => `select ${Array.from({ length: 12_000 }, () => 'c').join('+')}, x${i}`

/** Calls `instance` with deep statements until one fails; the failure. */
function breakIt(instance: PgParser): unknown {
  for (let i = 0; i < 600; i++) {
    try {
      instance.parseSync(deep(i))
    } catch (error) {
      return error
    }
  }
  return undefined
}

/** Breaks the current instance and drops it; a weak reference to it, and no other. */
async function breakAndDrop(): Promise<WeakRef<PgParser>> {
  const instance = await loadParser()
  expect(isModuleFailure(breakIt(instance))).toBe(true)
  discardParser(instance)
  return new WeakRef(instance)
}

describe('the parser module, replaceable (src/shard/libpg.ts)', () => {
  it('a module broken by statements past its stack is replaced by a fresh one; the policy runs on it', async () => {
    const broken = parser()
    if (!broken) throw new Error('the parser is not loaded')
    // The first failure: from then on a call may fail or hang (both seen), so none is made on it again.
    expect(isModuleFailure(breakIt(broken))).toBe(true)
    const before = parsersDiscarded()
    discardParser(broken)
    expect(parser()).toBeUndefined()
    expect(() => classify('select 1 as one_while_replaced')).toThrow(/restarting/)
    const replaced = await loadParser()
    expect(replaced).not.toBe(broken)
    expect(parsersDiscarded()).toBe(before + 1)
    // Operators see it: the router's metrics read the same count.
    const scraped = await createMetrics().registry.metrics()
    expect(scraped).toMatch(new RegExp(`^switchyard_parser_replacements_total ${before + 1}$`, 'm'))
    expect(classify('select 1 as one_after').kind).toBe('read')
    // The refusal while it was replaced is not remembered as the statement's outcome.
    expect(classify('select 1 as one_while_replaced').kind).toBe('read')
  }, 120_000)

  it('a broken instance, once dropped, is collected: a hundred replacements leave memory where it was', async () => {
    const dropped: WeakRef<PgParser>[] = []
    const rssBefore = process.memoryUsage().rss
    for (let i = 0; i < 100; i++) dropped.push(await breakAndDrop())
    await loadParser()
    collect()
    // Give finalization a turn of the event loop, then collect what it released.
    await new Promise((resolve) => setTimeout(resolve, 50))
    collect()
    const alive = dropped.filter((ref) => ref.deref() !== undefined).length
    const grownMb = (process.memoryUsage().rss - rssBefore) / 1e6
    // An instance kept alive holds its WASM memory: about 6 MB each once broken (the old design: ~600 MB).
    expect({ alive, grew: grownMb < 150 }).toEqual({ alive: 0, grew: true })
    expect(classify('select 1 as after_a_hundred').kind).toBe('read')
  }, 120_000)
})
