import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

/**
 * libpg-query (PostgreSQL's parser and scanner, compiled to WASM), as an instance that can be thrown
 * away. A statement that makes the parser recurse past the engine's stack leaves the WASM module with its
 * memory and stack pointer where the overflow left them: measured on 18.1.5, every later call fails or
 * hangs, for every tenant. The router's nesting guard (src/router/nesting.ts) keeps such statements from
 * the parser; this is the second line: after any failure that is not a parse error, the instance is
 * dropped at once and a fresh one (a new import of the module: ~25 ms) takes its place, so no call ever
 * runs on a module that failed. The statement policy and the shown text of statements share it.
 */

export type LibPgQuery = typeof import('libpg-query')

/** The package's ES module entry: each import of it with a new query string is a new WASM instance. */
const ENTRY = pathToFileURL(
  createRequire(import.meta.url)
    .resolve('libpg-query')
    .replace(/index\.cjs$/, 'index.js'),
).href

let current: LibPgQuery | undefined
let loading: Promise<LibPgQuery> | undefined
let instances = 0
/** Instances thrown away since the process started (tests read it). */
let discarded = 0

async function fresh(): Promise<LibPgQuery> {
  instances += 1
  const module = (await import(`${ENTRY}?instance=${instances}`)) as LibPgQuery
  await module.loadModule()
  return module
}

/** Loads the first instance, or waits for the one replacing a discarded instance. Idempotent. */
export function loadParser(): Promise<LibPgQuery> {
  if (current) return Promise.resolve(current)
  loading ??= fresh().then(
    (module) => {
      current = module
      loading = undefined
      return module
    },
    (error: unknown) => {
      loading = undefined
      throw error
    },
  )
  return loading
}

/**
 * The instance to call now; undefined while a discarded one is being replaced (or before the first load).
 * A replacement whose load failed is tried again here, on the next statement.
 */
export function parser(): LibPgQuery | undefined {
  if (!current && !loading && instances > 0) void loadParser().catch(() => {})
  return current
}

/**
 * Drops `failed` (the instance a failure came from, if it is still the current one) and starts loading its
 * replacement. A dropped instance stays in the ES module cache with its WASM memory (~6 MB): the nesting
 * guard is what keeps this rare; an instance built from one compiled module, so that a dropped one can be
 * collected, is still to do.
 */
export function discardParser(failed: LibPgQuery): void {
  if (!current || current !== failed) return
  current = undefined
  discarded += 1
  void loadParser().catch(() => {})
}

export const parsersDiscarded = () => discarded

/**
 * A failure of the WASM module itself (an engine stack overflow inside it, a trap), as opposed to a
 * statement it refused: libpg-query's parse errors carry `sqlDetails`; its scanner's are plain Errors
 * with a message of its own.
 */
export function isModuleFailure(error: unknown): boolean {
  // WebAssembly.RuntimeError: a trap ("memory access out of bounds", "unreachable", …).
  return error instanceof RangeError || (error instanceof Error && error.name === 'RuntimeError')
}
