import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'

/**
 * libpg-query (PostgreSQL's parser and scanner, compiled to WASM), as an instance that can be thrown
 * away. A statement that makes the parser recurse past the engine's stack leaves the WASM instance with
 * its memory and stack pointer where the overflow left them: measured on 18.1.5, every later call fails or
 * hangs, for every tenant. The router's nesting guard (src/router/nesting.ts) keeps such statements from
 * the parser; this is the second line: after any failure that is not a parse error, the instance is
 * dropped at once and a fresh one takes its place, so no call ever runs on an instance that failed.
 *
 * Each instance comes from the package's Emscripten factory over one WebAssembly.Module compiled once,
 * not from a new import of the package: an imported module stays in the ES module cache for good, with
 * its WASM memory (measured: 100 imports left the process 150 MB larger), where a dropped instance here
 * is garbage like any other object (1000 instances made and dropped: no growth) and costs ~12 ms to make.
 * The statement policy and the shown text of statements share it.
 */

/** The part of the Emscripten module this file calls (see the package's wasm/index.js). */
interface PgQueryWasm {
  _malloc(bytes: number): number
  _free(pointer: number): void
  lengthBytesUTF8(text: string): number
  stringToUTF8(text: string, pointer: number, bytes: number): void
  UTF8ToString(pointer: number): string
  getValue(pointer: number, type: 'i32'): number
  _wasm_parse_query_raw(query: number): number
  _wasm_free_parse_result(result: number): void
  _wasm_scan(query: number): number
  _wasm_free_string(result: number): void
}

/** Opaque here: the compiled module, an instance and the imports the factory hands over. */
type Compiled = { readonly compiled: unique symbol }
type Instance = { readonly instance: unique symbol }
type Imports = { readonly imports: unique symbol }

/** The engine's WebAssembly API: the project's TypeScript libs (no DOM) do not declare its values. */
const engine = (
  globalThis as unknown as {
    WebAssembly: {
      compile(bytes: Uint8Array): Promise<Compiled>
      instantiate(module: Compiled, imports: Imports): Promise<Instance>
    }
  }
).WebAssembly

type Factory = (options: {
  instantiateWasm(imports: Imports, receive: (instance: Instance) => void): object
}) => Promise<PgQueryWasm>

/** A statement the parser refused, at `cursorPosition` (0-based, in characters as the parser counts). */
export class ParseError extends Error {
  constructor(
    message: string,
    readonly cursorPosition: number,
  ) {
    super(message)
    this.name = 'ParseError'
  }
}

export interface ParseResult {
  stmts?: { stmt?: object; stmt_location?: number; stmt_len?: number }[]
}

/** What the scanner names each token: its kind, keyword class and place in the text (bytes). */
export interface ScanToken {
  tokenName: string
  keywordKind?: number | string
  start: number
  end: number
}

export interface ScanResult {
  tokens?: ScanToken[]
}

/** One WASM instance of the parser. Its methods throw ParseError for a refused statement. */
export class PgParser {
  constructor(private readonly wasm: PgQueryWasm) {}

  parseSync(sql: string): ParseResult {
    return this.call(
      sql,
      (query) => this.wasm._wasm_parse_query_raw(query),
      (result) => {
        const { wasm } = this
        // PgQueryParseResult { char* parse_tree; char* stderr_buffer; PgQueryError* error }
        const tree = wasm.getValue(result, 'i32')
        const error = wasm.getValue(result + 8, 'i32')
        if (error) {
          // PgQueryError { char* message; char* funcname; char* filename; int lineno; int cursorpos }
          const message = wasm.getValue(error, 'i32')
          const position = wasm.getValue(error + 16, 'i32')
          throw new ParseError(
            message ? wasm.UTF8ToString(message) : 'syntax error',
            Math.max(position - 1, 0),
          )
        }
        if (!tree) throw new Error('the parser returned no tree')
        return JSON.parse(wasm.UTF8ToString(tree)) as ParseResult
      },
      (result) => this.wasm._wasm_free_parse_result(result),
    )
  }

  scanSync(sql: string): ScanResult {
    return this.call(
      sql,
      (query) => this.wasm._wasm_scan(query),
      (result) => {
        const text = this.wasm.UTF8ToString(result)
        // The scanner answers an error as text where its JSON would be.
        if (!text.startsWith('{')) throw new ParseError(text, 0)
        return JSON.parse(text) as ScanResult
      },
      (result) => this.wasm._wasm_free_string(result),
    )
  }

  /** `sql` copied into the instance's memory, `run` on it, and both freed whatever happens. */
  private call<T>(
    sql: string,
    run: (query: number) => number,
    read: (result: number) => T,
    release: (result: number) => void,
  ): T {
    const { wasm } = this
    const bytes = wasm.lengthBytesUTF8(sql) + 1
    const query = wasm._malloc(bytes)
    let result = 0
    try {
      wasm.stringToUTF8(sql, query, bytes)
      result = run(query)
      if (!result) throw new Error('the parser could not allocate its result')
      return read(result)
    } finally {
      wasm._free(query)
      if (result) release(result)
    }
  }
}

const require = createRequire(import.meta.url)
const PACKAGE = dirname(require.resolve('libpg-query'))

let compiled: Promise<Compiled> | undefined
let current: PgParser | undefined
let loading: Promise<PgParser> | undefined
/** Instances thrown away since the process started: `switchyard_parser_replacements_total`. */
let discarded = 0

/** How long making an instance may take (~12 ms measured) before the load is given up and retried. */
const LOAD_TIMEOUT_MS = 10_000

/** A new instance over the one compiled module. Rejects if the engine refuses to instantiate it. */
async function fresh(): Promise<PgParser> {
  compiled ??= engine.compile(readFileSync(join(PACKAGE, 'libpg-query.wasm')))
  const module = await compiled
  const factory = require(join(PACKAGE, 'libpg-query.js')) as Factory
  // The factory waits for `receive` and has no way to hear of a failure: race it against one, and against
  // a deadline, so that a load that never settles is retried (on the next statement) instead of leaving
  // every statement at 503 for good.
  let failed!: (error: unknown) => void
  const failure = new Promise<never>((_resolve, reject) => (failed = reject))
  const deadline = setTimeout(() => failed(new Error('the parser did not load in time')), LOAD_TIMEOUT_MS)
  try {
    const wasm = await Promise.race([
      factory({
        instantiateWasm(imports, receive) {
          engine.instantiate(module, imports).then(receive, failed)
          return {}
        },
      }),
      failure,
    ])
    return new PgParser(wasm)
  } finally {
    clearTimeout(deadline)
  }
}

/** Loads the first instance, or waits for the one replacing a discarded instance. Idempotent. */
export function loadParser(): Promise<PgParser> {
  if (current) return Promise.resolve(current)
  loading ??= fresh().then(
    (instance) => {
      current = instance
      loading = undefined
      return instance
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
export function parser(): PgParser | undefined {
  if (!current && !loading && compiled) void loadParser().catch(() => {})
  return current
}

/**
 * Drops `failed` (the instance a failure came from, if it is still the current one) and starts loading its
 * replacement. Nothing else holds the dropped instance: its memory goes with the next collection.
 */
export function discardParser(failed: PgParser): void {
  if (!current || current !== failed) return
  current = undefined
  discarded += 1
  void loadParser().catch(() => {})
}

export const parsersDiscarded = () => discarded

/**
 * A failure of the WASM instance itself (an engine stack overflow inside it, a trap, its JSON too deep to
 * read), as opposed to a statement it refused (ParseError).
 */
export function isModuleFailure(error: unknown): boolean {
  // WebAssembly.RuntimeError: a trap ("memory access out of bounds", "unreachable", …).
  return error instanceof RangeError || (error instanceof Error && error.name === 'RuntimeError')
}
