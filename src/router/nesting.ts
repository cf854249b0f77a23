/**
 * How deep a statement's parse tree can be, bounded from above without parsing it: the guard in front of
 * the parser (src/router/policy.ts). libpg-query's parser is C compiled to WASM, and turns its tree into
 * JSON recursively: a statement deep enough (a chain of ~9000 `+`, 18 KB) overflows the engine's stack
 * inside the WASM, and the module is left broken, with its memory and stack pointer where the overflow
 * left them. After a few hundred such statements every later parse fails ("memory access out of
 * bounds") or hangs: one tenant would stop the router's policy for every tenant. So no statement reaches
 * the parser unless this bound says its tree is shallow enough to be turned to JSON safely.
 *
 * The bound reads the text as PostgreSQL's scanner does where it matters (quoted strings, E'' escapes,
 * dollar quotes, quoted identifiers, nested comments: text inside them never counts) and adds up what can
 * make a tree deeper: each operator (a run of operator characters), each keyword that builds a node over
 * another (AND, NOT, IS, COLLATE, AT, JOIN, UNION, CASE, BEGIN ATOMIC, …) and each bracket level. Commas start a new
 * part at the same depth (a list is flat), so a 10,000-row VALUES or a 5,000-item IN list stays shallow;
 * every operator of one part counts, wherever it is, so the bound is never below the tree's real depth.
 */

/** The deepest statement admitted: a chain of 9000 operators broke the parser, 5000 did not in 3000 runs. */
export const MAX_NESTING = 2000
/**
 * What one bracket level counts: a scalar subquery level writes ~3 times the frames of a `+` (an
 * attacker's read: 1990 nested `(select` broke the parser, 1900 did not), a function call no more.
 */
const BRACKET_WEIGHT = 3

const NESTING_KEYWORDS = new Set([
  'and',
  'or',
  'not',
  'is',
  'isnull',
  'notnull',
  'collate',
  'at',
  'between',
  'like',
  'ilike',
  'similar',
  'in',
  'overlaps',
  'operator',
  'escape',
  'join',
  'case',
  'when',
  'distinct',
])

/**
 * Keywords whose node costs the parser more than an operator's: measured by an attacker's read against
 * libpg-query 18.1.5 (COLLATE and AT cost ~1.8 `+` each; a BEGIN ATOMIC level ~3).
 */
const KEYWORD_WEIGHT = new Map([
  ['collate', 2],
  ['at', 2],
  ['atomic', BRACKET_WEIGHT],
])

/** Set operations: counted per bracket level, not per comma-separated part. */
const SET_OPERATIONS = new Set(['union', 'intersect', 'except'])

const OPERATOR_CHARS = new Set('+-*/<>=~!@#%^&|`?:')
/** PostgreSQL's ident_start: a letter, `_` or any non-ASCII character. */
const isWordStart = (c: string) =>
  (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c === '_' || c >= '\u0080'
/** PostgreSQL's ident_cont: also digits and `$`. */
const isWordChar = (c: string) => isWordStart(c) || (c >= '0' && c <= '9') || c === '$'

/** One bracket level being read: its finished parts' deepest, and the part being read. */
interface Level {
  deepest: number
  operators: number
  inner: number
  /** UNION, INTERSECT, EXCEPT at this level: each nests the SELECTs before it, commas or not. */
  setOperations: number
}

/** The upper bound on the statement's tree depth (see above); Infinity for text no scanner would finish. */
export function nestingOf(sql: string): number {
  const levels: Level[] = [{ deepest: 0, operators: 0, inner: 0, setOperations: 0 }]
  const top = () => levels[levels.length - 1] as Level
  // Inside BEGIN ATOMIC … END a `;` separates statements that nest in the block, not parts side by side:
  // once one is seen, `;` no longer starts a new part (an overcount only for such bodies).
  let atomic = false
  let i = 0
  while (i < sql.length) {
    const c = sql[i] as string
    const next = sql[i + 1]
    if (c === '-' && next === '-') {
      // PostgreSQL ends a -- comment at \r as well as \n.
      i = lineEnd(sql, i) + 1
    } else if (c === '/' && next === '*') {
      i = afterComment(sql, i)
    } else if (c === "'") {
      i = afterStrings(sql, i, isEscapeString(sql, i))
    } else if (c === '"') {
      i = afterQuoted(sql, i, '"')
    } else if (c === '$' && dollarTag(sql, i) !== undefined) {
      // Never inside a word: the word branch takes `$` with the word (a$$b is one identifier). After a
      // number it is a quote, as in PostgreSQL's scanner.
      const tag = dollarTag(sql, i) as string
      const end = sql.indexOf(tag, i + tag.length)
      i = end < 0 ? sql.length : end + tag.length
    } else if (c === '(' || c === '[') {
      levels.push({ deepest: 0, operators: 0, inner: 0, setOperations: 0 })
      i++
    } else if (c === ')' || c === ']') {
      if (levels.length > 1) close(levels)
      i++
    } else if (c === ',' || (c === ';' && !atomic)) {
      // A new part of a list at the same depth; set operations chain across the parts of their SELECTs.
      const level = top()
      level.deepest = Math.max(level.deepest, level.operators + level.inner)
      level.operators = 0
      level.inner = 0
      i++
    } else if (OPERATOR_CHARS.has(c)) {
      // One run is one operator, up to a comment's start (PostgreSQL's scanner cuts it there too), but
      // every `+` and `-` of it counts too: PostgreSQL cuts trailing ones off an operator made only of
      // `+-*/<>=` characters, so `+-+-…` is one unary operator per character, nested.
      let signs = 0
      let others = 0
      while (i < sql.length && OPERATOR_CHARS.has(sql[i] as string) && !startsComment(sql, i)) {
        if (sql[i] === '+' || sql[i] === '-') signs++
        else others++
        i++
      }
      top().operators += signs + (others > 0 ? 1 : 0)
    } else if (isWordStart(c)) {
      const start = i
      while (i < sql.length && isWordChar(sql[i] as string)) i++
      const word = sql.slice(start, i).toLowerCase()
      if (SET_OPERATIONS.has(word)) top().setOperations++
      else if (NESTING_KEYWORDS.has(word) || KEYWORD_WEIGHT.has(word)) {
        top().operators += KEYWORD_WEIGHT.get(word) ?? 1
        if (word === 'atomic') atomic = true
      }
    } else {
      i++
    }
  }
  // Unclosed brackets (the parser refuses them) count as closed at the end.
  while (levels.length > 1) close(levels)
  return deepestOf(top())
}

const deepestOf = (level: Level) =>
  Math.max(level.deepest, level.operators + level.inner) + level.setOperations

/** Where a -- comment starting at `i` ends: its \r or \n, or the end of the text. */
function lineEnd(sql: string, i: number): number {
  let j = i
  while (j < sql.length && sql[j] !== '\n' && sql[j] !== '\r') j++
  return j
}

/** Ends the innermost bracket level: one deeper than its deepest part, inside its parent's current part. */
function close(levels: Level[]): void {
  const closed = levels.pop() as Level
  const parent = levels[levels.length - 1] as Level
  parent.inner = Math.max(parent.inner, BRACKET_WEIGHT + deepestOf(closed))
}

const startsComment = (sql: string, i: number) =>
  (sql[i] === '-' && sql[i + 1] === '-') || (sql[i] === '/' && sql[i + 1] === '*')

/** After a C comment, which nests in PostgreSQL. */
function afterComment(sql: string, start: number): number {
  let depth = 0
  let i = start
  while (i < sql.length) {
    if (sql[i] === '/' && sql[i + 1] === '*') {
      depth++
      i += 2
    } else if (sql[i] === '*' && sql[i + 1] === '/') {
      depth--
      i += 2
      if (depth === 0) return i
    } else i++
  }
  return sql.length
}

/** E'…' (or e'…'): the only string where a backslash escapes the next character (standard_conforming_strings). */
function isEscapeString(sql: string, quote: number): boolean {
  const prefix = sql[quote - 1]
  return (prefix === 'E' || prefix === 'e') && !(quote > 1 && isWordChar(sql[quote - 2] as string))
}

/**
 * After a quoted string and its continuations: PostgreSQL joins 'a' and 'b' separated by whitespace
 * holding a newline into one constant, read in the first part's mode, so an E'' string continued on the
 * next line still takes \' as a quote inside it. A `--` comment between them ends the constant in
 * libpg-query 18's scanner (the parser this guards), so it ends it here: reading on would put the rest
 * of the statement inside a string this guard does not count, and the parser does.
 */
function afterStrings(sql: string, start: number, backslashes: boolean): number {
  let end = afterString(sql, start, backslashes)
  for (;;) {
    const next = continuation(sql, end)
    if (next === undefined) return end
    end = afterString(sql, next, backslashes)
  }
}

/** Where a string continues after `end` (its next quote), or undefined. */
function continuation(sql: string, end: number): number | undefined {
  let i = end
  let newline = false
  while (i < sql.length) {
    const c = sql[i]
    if (c === '\n' || c === '\r') {
      newline = true
      i++
    } else if (c === ' ' || c === '\t' || c === '\f' || c === '\v') i++
    else break
  }
  return newline && sql[i] === "'" ? i : undefined
}

/** After a quoted string; '' is a quote inside it, and in E'' strings so is \'. */
function afterString(sql: string, start: number, backslashes: boolean): number {
  let i = start + 1
  while (i < sql.length) {
    const c = sql[i]
    if (backslashes && c === '\\') i += 2
    else if (c === "'") {
      if (sql[i + 1] === "'") i += 2
      else return i + 1
    } else i++
  }
  return sql.length
}

/** After a quoted identifier ("" is a quote inside it). */
function afterQuoted(sql: string, start: number, quote: string): number {
  let i = start + 1
  while (i < sql.length) {
    if (sql[i] === quote) {
      if (sql[i + 1] === quote) i += 2
      else return i + 1
    } else i++
  }
  return sql.length
}

/** The dollar-quote tag starting at `i` ($$ or $name$), or undefined ($1 is a parameter, not a quote). */
function dollarTag(sql: string, i: number): string | undefined {
  let j = i + 1
  if (sql[j] === '$') return '$$'
  if (!(j < sql.length && isWordStart(sql[j] as string))) return undefined
  while (j < sql.length && isWordChar(sql[j] as string) && sql[j] !== '$') j++
  return sql[j] === '$' ? sql.slice(i, j + 1) : undefined
}
