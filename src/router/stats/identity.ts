import { OTHER_FINGERPRINT } from '../../directory/statement-stats.ts'

/** What statement statistics count a statement under: its fingerprint, and the statement. */
export interface StatementIdentity {
  /** Equal for statements that differ only in constants, parameters, select aliases, whitespace or comments. */
  fingerprint: string
  /**
   * The tenant's own SQL, from which the text operators see is built (src/shard/shown-text.ts) when a
   * row of the tenant's counts first needs it: lazily, and per tenant (two tenants' statements of one
   * fingerprint may differ in aliases, and each is shown its own).
   */
  sql: string
}

/**
 * A statement's identity, from the tree the statement policy parsed it into (src/router/policy.ts), in
 * the tenant's parse turn and under its cache by SQL text: a hot statement is never fingerprinted twice.
 *
 * The fingerprint is computed here, in JavaScript, the way libpg-query's fingerprint reads a tree
 * (locations, constants, parameter numbers and select-list aliases ignored; a list of equal parts, as an
 * IN list or the rows of a VALUES, counts once), and not by libpg-query itself: its fingerprint recurses
 * in the WASM module with a large frame per level, and from ~30 levels of nesting on it overruns the
 * module's stack. Measured on libpg-query 18.1.5: a few thousand such statements leave every later call
 * failing, and the module's memory growing. The parse that gave `tree` is the policy's own, behind its
 * nesting guard (src/router/nesting.ts). Never throws: a tree too deep to walk counts as `other`.
 */
export function identifyStatement(sql: string, tree: unknown): StatementIdentity {
  try {
    return { fingerprint: digest(tree ?? null), sql }
  } catch {
    return { fingerprint: OTHER_FINGERPRINT, sql }
  }
}

/** Where the parser puts byte offsets: not part of what a statement is (and table aliases). */
const IGNORED = new Set([
  'location',
  'stmt_location',
  'stmt_len',
  'rexpr_list_start',
  'rexpr_list_end',
  'alias',
])
/** Nodes whose value is not part of what a statement is: a constant and a parameter count as the same. */
const VALUES = new Set(['A_Const', 'ParamRef'])

/** A part of the tree being digested: its children's digests so far, and those still to do. */
interface Frame {
  array: boolean
  /** `key:` prefixes of an object's children, in order; empty strings for an array's items. */
  keys: string[]
  children: { value: unknown; under: string; selectTargets: boolean }[]
  parts: string[]
}

/**
 * The digest of the tree: objects by their keys in the parser's order, arrays with runs of equal parts
 * counted once. Iterative, so no statement the policy admits is too deep for it. `selectTargets`: the
 * part is (in) a SELECT's target list, whose ResTarget names are aliases.
 */
function digest(root: unknown): string {
  if (root === null || typeof root !== 'object') return hash(JSON.stringify(root) ?? 'undefined')
  const frames: Frame[] = [frameOf(root, '', false)]
  let done = ''
  for (;;) {
    const frame = frames[frames.length - 1] as Frame
    if (done !== '') {
      frame.parts.push(`${frame.keys[frame.parts.length]}${done}`)
      done = ''
    }
    const child = frame.children[frame.parts.length]
    if (child) {
      if (child.value !== null && typeof child.value === 'object') {
        frames.push(frameOf(child.value, child.under, child.selectTargets))
        continue
      }
      done = child.value === '$' && child.under === '$' ? '$' : (JSON.stringify(child.value) ?? 'undefined')
      continue
    }
    frames.pop()
    const parts = frame.array
      ? frame.parts.filter((part, i) => i === 0 || part !== frame.parts[i - 1])
      : frame.parts
    done = hash(frame.array ? `[${parts.join(',')}]` : `{${parts.join(',')}}`)
    if (frames.length === 0) return done
  }
}

function frameOf(value: object, under: string, selectTargets: boolean): Frame {
  if (Array.isArray(value))
    return {
      array: true,
      keys: value.map(() => ''),
      children: value.map((item: unknown) => ({ value: item, under, selectTargets })),
      parts: [],
    }
  const frame: Frame = { array: false, keys: [], children: [], parts: [] }
  for (const [key, child] of Object.entries(value)) {
    if (IGNORED.has(key)) continue
    if (key === 'name' && under === 'ResTarget' && selectTargets) continue
    const targets = (key === 'targetList' && under === 'SelectStmt') || (key === 'ResTarget' && selectTargets)
    frame.keys.push(VALUES.has(key) ? 'value:' : `${key}:`)
    frame.children.push(
      VALUES.has(key)
        ? { value: '$', under: '$', selectTargets: false }
        : { value: child, under: key, selectTargets: targets },
    )
  }
  return frame
}

/** 64 bits (two 32-bit multiply-xorshift hashes) as 16 hex digits: libpg-query's fingerprint's shape. */
function hash(text: string): string {
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 2654435761)
    h2 = Math.imul(h2 ^ c, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return (h2 >>> 0).toString(16).padStart(8, '0') + (h1 >>> 0).toString(16).padStart(8, '0')
}
