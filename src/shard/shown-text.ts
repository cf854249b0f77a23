import { discardParser, isModuleFailure, parser, type ScanToken } from './libpg.ts'

/**
 * The text of a statement that operators see (`switchyard top`, `shards top`, the console): never the
 * client's SQL itself, whose constants may hold secrets (a password in an UPDATE, a token in a JSON path),
 * and never its comments, where an application may put anything. Shared by the router's statement
 * statistics and the shards' pg_stat_statements, so both show a statement the same way.
 *
 * Built from PostgreSQL's own scanner (libpg-query's scanSync), token by token, and never from a parse
 * tree: the scanner is flat, so no nesting makes it recurse (normalize() walks the tree and overflows the
 * WASM stack on deep statements, leaking its memory), and it sees every constant wherever the grammar puts
 * it (normalize() leaves the string of a JSON_TABLE PATH). A token is kept as written only when it is
 * surely not a constant: a keyword, an identifier, a parameter ($1) or an operator made of operator
 * characters. Everything else, including the kinds libpg-query names UNKNOWN (B'01', X'ff', U&'…'), is
 * shown as $n.
 */

/** Characters of shown text: enough to recognise a statement, little to hold per row. */
export const SHOWN_CHARS = 500
/** Bytes scanned first: the shown text is cut at SHOWN_CHARS, so a statement's head is usually enough. */
const HEAD_BYTES = 4096
export const NOT_SHOWN = '(not shown: the statement could not be scanned)'

const COMMENTS = new Set(['SQL_COMMENT', 'C_COMMENT'])
const KEPT_KINDS = new Set(['IDENT', 'PARAM'])
/** Operators and punctuation: a token of only these holds no constant. */
const OPERATOR = /^[-+*/<>=~!@#%^&|`?(),;.:[\]]+$/

type Token = ScanToken

/** The shown text of `sql`: constants as $n, comments dropped, whitespace collapsed, capped. Never throws. */
export function shownText(sql: string): string {
  // Control characters (in a quoted identifier; anywhere else the parser refused them) break the
  // scanner's JSON, and a terminal showing `top` must not run them, nor reorder what it shows (bidi
  // controls are format characters): `?`, before scanning.
  const text = sql.replace(/[^\P{Cc}\t\n\r\f\v]|\p{Cf}/gu, '?')
  const tokens = scanHead(text)
  if (!tokens) return NOT_SHOWN
  const bytes = Buffer.from(text)
  const parts: string[] = []
  let length = 0
  // $n after the client's own parameters, as PostgreSQL's normalized text numbers them.
  let constants = Math.max(
    0,
    ...tokens
      .filter((token) => token.tokenName === 'PARAM')
      .map((token) => Number(bytes.toString('utf8', token.start + 1, token.end)) || 0),
  )
  let end = 0
  const kept: string[] = []
  for (const token of tokens) {
    if (COMMENTS.has(token.tokenName)) continue
    const written = bytes.toString('utf8', token.start, token.end)
    // extract(field from …): the grammar makes the field word a string constant.
    const field =
      kept.length >= 2 && kept[kept.length - 1] === '(' && /^extract$/i.test(kept[kept.length - 2] ?? '')
    const shown = isKept(token, written) && !field ? written : `$${++constants}`
    kept.push(written)
    // One space where the client had any (or a comment), none where it had none: `count(*)`, `a.b`.
    const part = `${token.start > end && parts.length > 0 ? ' ' : ''}${shown}`
    end = token.end
    parts.push(part)
    length += part.length
    if (length > SHOWN_CHARS) break
  }
  // Only the head was scanned: the text goes on past it.
  if (
    tokens.length > 0 &&
    (tokens[tokens.length - 1]?.end ?? 0) <= HEAD_BYTES &&
    bytes.length > HEAD_BYTES &&
    length <= SHOWN_CHARS
  )
    parts.push(' …')
  return capped(parts.join(''))
}

function isKept(token: Token, text: string): boolean {
  if (KEPT_KINDS.has(token.tokenName)) return true
  if (token.keywordKind !== undefined && token.keywordKind !== 0 && token.keywordKind !== 'NO_KEYWORD')
    return /^[a-z_]+$/i.test(text)
  return OPERATOR.test(text)
}

/**
 * The tokens of the statement's head, or of all of it when the head ends inside a quoted constant or a
 * comment (the scanner refuses an unterminated one). Undefined when even the whole cannot be scanned.
 */
function scanHead(sql: string): Token[] | undefined {
  const head = Buffer.byteLength(sql) > HEAD_BYTES ? Buffer.from(sql).subarray(0, HEAD_BYTES).toString() : sql
  const libpg = parser()
  if (!libpg) return undefined
  for (const text of head === sql ? [sql] : [head, sql]) {
    try {
      // A cut inside a multi-byte character leaves U+FFFD at the end: the scanner takes it as part of a word.
      return libpg.scanSync(text).tokens ?? []
    } catch (error) {
      if (isModuleFailure(error)) {
        discardParser(libpg)
        return undefined
      }
      // An unterminated constant or comment in the head: scan the whole.
    }
  }
  return undefined
}

/** Whitespace collapsed (a quoted identifier may hold a newline), capped. */
function capped(text: string): string {
  const collapsed = text.replace(/\s+/g, ' ').trim()
  return collapsed.length > SHOWN_CHARS ? `${collapsed.slice(0, SHOWN_CHARS - 1)}…` : collapsed
}
