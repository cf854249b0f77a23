import { fingerprintSync, normalizeSync, scanSync } from 'libpg-query'
import { createLru } from '../../directory/lru.ts'
import { OTHER_FINGERPRINT } from '../../directory/statement-stats.ts'

/** What statement statistics count a statement under: libpg-query's fingerprint, and the text shown for it. */
export interface StatementIdentity {
  /** Equal for statements that differ only in literals, parameters, aliases, whitespace or comments. */
  fingerprint: string
  /** libpg-query's normalized text (literals as $n), without comments, whitespace collapsed, capped. */
  query: string
}

/** Characters of normalized text kept: enough to recognise a statement, little to hold per fingerprint. */
export const QUERY_CHARS = 500
/** Normalized text longer than this is not scanned for comments (it is not shown either). */
const SCANNED_CHARS = 16_384
const NOT_SHOWN = '(not shown: the statement could not be normalized)'

/** Texts by fingerprint: statements that differ only in literals are normalized once. */
const texts = createLru<string, string>(4096)

/**
 * A statement's identity. The statement policy takes it with its own parse (src/router/policy.ts), in
 * the tenant's parse turn and under its cache by SQL text: a hot statement is never fingerprinted
 * twice, and a tenant's new texts cost the event loop no more than its parse budget. Never throws: a
 * statement libpg-query cannot fingerprint (nested past its stack) counts as `other`.
 */
export function identifyStatement(sql: string): StatementIdentity {
  let fingerprint: string
  try {
    fingerprint = fingerprintSync(sql)
  } catch {
    return { fingerprint: OTHER_FINGERPRINT, query: NOT_SHOWN }
  }
  let query = texts.get(fingerprint)
  if (query === undefined) {
    query = shownText(sql)
    texts.set(fingerprint, query)
  }
  return { fingerprint, query }
}

/**
 * The text operators see: literals may hold secrets (a password in an UPDATE), so never the client's
 * SQL itself. normalize() replaces constants with $n but keeps comments, and an application may put
 * anything in a comment: those go too, with any quoted constant normalize() left (UESCAPE '!').
 */
export function shownText(sql: string): string {
  let normalized: string
  try {
    normalized = normalizeSync(sql)
  } catch {
    return NOT_SHOWN
  }
  if (/--|\/\*|'/.test(normalized)) {
    if (normalized.length > SCANNED_CHARS) return NOT_SHOWN
    try {
      normalized = withoutComments(normalized)
    } catch {
      return NOT_SHOWN
    }
  }
  // Quoted identifiers may hold control characters: a terminal showing `top` must not run escape codes.
  const collapsed = normalized
    .replace(/\s+/g, ' ')
    .replace(/\p{Cc}/gu, '?')
    .trim()
  return collapsed.length > QUERY_CHARS ? `${collapsed.slice(0, QUERY_CHARS - 1)}…` : collapsed
}

/** Token kinds dropped (comments) or masked (quoted constants) in the shown text. */
const COMMENTS = new Set(['SQL_COMMENT', 'C_COMMENT'])
const CONSTANTS = new Set(['SCONST', 'USCONST', 'BCONST', 'XCONST'])

/** The text with comments blanked and quoted constants as `?`, by PostgreSQL's own scanner (byte offsets). */
function withoutComments(text: string): string {
  const bytes = Buffer.from(text)
  const parts: string[] = []
  let at = 0
  for (const token of scanSync(text).tokens) {
    const replacement = COMMENTS.has(token.tokenName) ? ' ' : CONSTANTS.has(token.tokenName) ? '?' : undefined
    if (replacement === undefined) continue
    parts.push(bytes.toString('utf8', at, token.start), replacement)
    at = token.end
  }
  parts.push(bytes.toString('utf8', at))
  return parts.join('')
}
