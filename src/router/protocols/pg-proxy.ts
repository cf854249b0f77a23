import { z } from 'zod'
import { describeIssues, SwitchyardError } from '../../errors.ts'
import { bearerKey } from '../auth.ts'
import type { StatementResult } from '../result.ts'
import { consistencyOf } from './headers.ts'
import type { HttpProtocol } from './index.ts'

/**
 * drizzle-orm's `pg-proxy` driver. drizzle hands its callback `(sql, params, method)` and expects back
 * `{ rows }`: arrays in column order for `all` (it maps them by position), objects keyed by column name for
 * `execute` (`db.execute` returns them as they are). drizzle's reference server is node-postgres, so values
 * must look like node-postgres' type parsers made them, with the parsers that server turns off
 * (dates, timestamps, intervals, numeric[]) left as PostgreSQL's text: drizzle's column mappers expect
 * strings there. The callback body is the application's own code: the shapes below are what the router
 * documents, and `POST /v1/query` answers with exactly what the callback must return.
 */

/** The only two methods drizzle's pg-proxy session passes to its callback. */
export const pgProxyMethod = z.enum(['all', 'execute'])
export type PgProxyMethod = z.infer<typeof pgProxyMethod>

/** `POST /v1/query`: the callback's three arguments. Other keys (drizzle's 4th `typings` argument) are dropped. */
export const pgProxyQuerySchema = z.object({
  sql: z.string().min(1),
  params: z.array(z.unknown()).default([]),
  method: pgProxyMethod,
})
export type PgProxyQuery = z.infer<typeof pgProxyQuerySchema>

/**
 * `POST /v1/batch`: statements run in one transaction. pg-proxy has no batch callback, but its migrator
 * hands its callback a `string[]` (`ProxyMigrator`), so a bare string is a statement without parameters
 * whose rows nobody reads. The migrator calls back with `[]` when nothing is pending: empty is valid.
 */
export const pgProxyBatchSchema = z.object({
  queries: z.array(
    z.union([
      z
        .string()
        .min(1)
        .transform((sql): PgProxyQuery => ({ sql, params: [], method: 'execute' })),
      pgProxyQuerySchema,
    ]),
  ),
})
export type PgProxyBatch = z.infer<typeof pgProxyBatchSchema>

export function parsePgProxyQuery(body: unknown): PgProxyQuery {
  const parsed = pgProxyQuerySchema.safeParse(body)
  if (!parsed.success)
    throw new SwitchyardError('invalid_input', `pg-proxy query: ${describeIssues(parsed.error.issues)}`)
  return parsed.data
}

export function parsePgProxyBatch(body: unknown): PgProxyBatch {
  const parsed = pgProxyBatchSchema.safeParse(body)
  if (!parsed.success)
    throw new SwitchyardError('invalid_input', `pg-proxy batch: ${describeIssues(parsed.error.issues)}`)
  return parsed.data
}

export type PgProxyResponse = { rows: unknown[][] } | { rows: Record<string, unknown>[] }

/** What the callback returns to drizzle for one statement. */
export function toPgProxyResponse(result: StatementResult, method: PgProxyMethod): PgProxyResponse {
  const oids = result.fields.map((field) => field.dataTypeID)
  const values = result.rows.map((row) =>
    row.map((text, i) => (text === null ? null : pgProxyValue(text, oids[i] ?? 0))),
  )
  if (method === 'all') return { rows: values }
  // node-postgres builds object rows column by column, so a repeated name keeps the last column's value.
  const names = result.fields.map((field) => field.name)
  return { rows: values.map((row) => Object.fromEntries(row.map((value, i) => [names[i], value]))) }
}

/** `POST /v1/batch` answers with one `{ rows }` per statement, in order. */
export function toPgProxyBatchResponse(
  results: readonly StatementResult[],
  queries: readonly Pick<PgProxyQuery, 'method'>[],
): { results: PgProxyResponse[] } {
  return { results: results.map((result, i) => toPgProxyResponse(result, queries[i]?.method ?? 'execute')) }
}

const TRUE_WORDS = new Set(['TRUE', 't', 'true', 'y', 'yes', 'on', '1'])
const parseBool = (text: string) => TRUE_WORDS.has(text)
const parseInteger = (text: string) => Number.parseInt(text, 10)
/** JSON has no NaN or ±Infinity (node-postgres' would become null): keep the text, which drizzle's real/double mappers parse. */
const parseFloat8 = (text: string) => {
  const value = Number.parseFloat(text)
  return Number.isFinite(value) ? value : text
}
const parsePoint = (text: string) => {
  if (text[0] !== '(') return null
  const [x = '', y = ''] = text.slice(1, -1).split(',')
  return { x: Number.parseFloat(x), y: Number.parseFloat(y) }
}
/** `<(x,y),r>`, as node-postgres reads it. */
const parseCircle = (text: string) => {
  const match = /^<\(([^,]*),([^)]*)\),(.*)>$/.exec(text)
  if (!match) return null
  return {
    x: Number.parseFloat(match[1] ?? ''),
    y: Number.parseFloat(match[2] ?? ''),
    radius: Number.parseFloat(match[3] ?? ''),
  }
}
/** node-postgres gives a Buffer; through JSON a Buffer is `{ type: 'Buffer', data }`, which `Buffer.from` revives. */
const parseBytea = (text: string) => ({ type: 'Buffer' as const, data: [...byteaBytes(text)] })

/**
 * node-postgres' default text parsers (pg-types 2.2 lib/textParsers.js `init`) minus the ones drizzle's
 * pg-proxy reference server resets to identity (1082, 1114, 1184, 1186, 1115, 1182, 1185, 1187, 1231):
 * type OID → how to read one value. Every other type stays PostgreSQL's text, as in node-postgres.
 */
const scalarParsers: Record<number, (text: string) => unknown> = {
  16: parseBool,
  17: parseBytea,
  // int8 stays a string (node-postgres keeps 64-bit integers exact); drizzle's bigint mappers take strings.
  21: parseInteger,
  23: parseInteger,
  26: parseInteger,
  114: (text) => JSON.parse(text),
  600: parsePoint,
  700: parseFloat8,
  701: parseFloat8,
  718: parseCircle,
  3802: (text) => JSON.parse(text),
}
const keepText = (text: string) => text
const arrayParsers: Record<number, (text: string) => unknown> = {
  199: (text) => JSON.parse(text),
  651: keepText,
  791: keepText,
  1000: parseBool,
  1001: parseBytea,
  1005: parseInteger,
  1007: parseInteger,
  1008: keepText,
  1009: keepText,
  1014: keepText,
  1015: keepText,
  // node-postgres trims int8[] elements; PostgreSQL never pads them, so that changes nothing.
  1016: keepText,
  1017: parsePoint,
  1021: parseFloat8,
  1022: parseFloat8,
  1028: parseInteger,
  1040: keepText,
  1041: keepText,
  1183: keepText,
  1270: keepText,
  2951: keepText,
  3807: (text) => JSON.parse(text),
  3907: keepText,
}

/** One PostgreSQL text value of type `oid` as drizzle's pg-proxy reference server would hand it over (after JSON). */
export function pgProxyValue(text: string, oid: number): unknown {
  const scalar = scalarParsers[oid]
  if (scalar) return scalar(text)
  const element = arrayParsers[oid]
  if (element) return parseArrayText(text, element)
  return text
}

export type PgArray<T> = (T | null | PgArray<T>)[]

/**
 * Reads PostgreSQL's array output (`{a,"b c",NULL,{1,2}}`, optionally with a `[1:2]=` bounds prefix) into
 * nested arrays, unquoted NULL becoming null and every other element passed through `element`. Text that is
 * not an array literal comes back unchanged: a converter must not fail a whole response over one value.
 */
export function parseArrayText<T>(
  text: string,
  element: (text: string) => T,
  delimiter = ',',
): PgArray<T> | string {
  let at = text.startsWith('[') ? text.indexOf('=') + 1 : 0
  const fail = () => {
    throw new SyntaxError(`not a PostgreSQL array: ${text}`)
  }
  const readArray = (): PgArray<T> => {
    if (text[at] !== '{') fail()
    at++
    const items: PgArray<T> = []
    if (text[at] === '}') {
      at++
      return items
    }
    for (;;) {
      if (text[at] === '{') {
        items.push(readArray())
      } else if (text[at] === '"') {
        let value = ''
        at++
        while (text[at] !== '"') {
          if (text[at] === '\\') at++
          if (at >= text.length) fail()
          value += text[at]
          at++
        }
        at++
        items.push(element(value))
      } else {
        const start = at
        while (at < text.length && text[at] !== delimiter && text[at] !== '}') at++
        const value = text.slice(start, at)
        items.push(value === 'NULL' ? null : element(value))
      }
      if (text[at] === delimiter) at++
      else if (text[at] === '}') {
        at++
        return items
      } else fail()
    }
  }
  try {
    const array = readArray()
    return at === text.length ? array : text
  } catch (error) {
    if (error instanceof SyntaxError) return text
    throw error
  }
}

/** bytea output: hex (`\x0aff`, PostgreSQL's default) or the older escape format (`a\\b\001`). */
function byteaBytes(text: string): Uint8Array {
  if (text.startsWith('\\x')) return Buffer.from(text.slice(2), 'hex')
  const bytes: number[] = []
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== '\\') bytes.push(text.charCodeAt(i))
    else if (text[i + 1] === '\\') {
      bytes.push(0x5c)
      i++
    } else {
      bytes.push(Number.parseInt(text.slice(i + 1, i + 4), 8))
      i += 3
    }
  }
  return Uint8Array.from(bytes)
}

/**
 * Client parameters (as JSON decoded them) → text parameters sent with type OID 0, so PostgreSQL infers
 * each one's type from the statement, as it does for psql. Both clients mostly send strings already:
 * drizzle's mapToDriverValue stringifies json (JSON.stringify), timestamps and dates (toISOString) and
 * arrays (a `{…}` literal); Neon's client runs node-postgres' prepareValue on every parameter.
 */
export function normalizeParams(params: readonly unknown[]): (string | null)[] {
  try {
    return params.map(textParam)
  } catch (error) {
    // JSON.stringify of an object nested deeper than the stack allows.
    if (error instanceof RangeError) throw tooDeep()
    throw error
  }
}

/** PostgreSQL's MAXDIM: no array has more dimensions, so no literal needs to nest deeper. */
const MAX_ARRAY_DEPTH = 6

const tooDeep = () =>
  new SwitchyardError(
    'invalid_input',
    `a parameter is nested too deeply (arrays have at most ${MAX_ARRAY_DEPTH} dimensions)`,
  )

function textParam(value: unknown): string | null {
  // SQL NULL.
  if (value === null || value === undefined) return null
  // Already PostgreSQL input text (drizzle and Neon send json, dates, arrays and numerics this way).
  if (typeof value === 'string') return value
  // Numeric input syntax; bigint never arrives through JSON but costs nothing to accept.
  if (typeof value === 'number' || typeof value === 'bigint') return String(value)
  // 'true'/'false' are boolean input and read the same as text (node-postgres and Neon's proxy agree).
  if (typeof value === 'boolean') return value ? 'true' : 'false'
  // ISO 8601 in UTC: the same instant for timestamptz, the UTC wall clock for timestamp (as drizzle sends Dates).
  if (value instanceof Date) return value.toISOString()
  // A JS array is a PostgreSQL array literal (node-postgres' arrayString), so text[], int4[], uuid[] columns read it.
  if (Array.isArray(value)) return arrayLiteral(value)
  // Bytes in bytea's hex input format, including a Buffer that went through JSON.stringify.
  const bytes = asBytes(value)
  if (bytes) return `\\x${Buffer.from(bytes).toString('hex')}`
  // Any other object is a json/jsonb value.
  if (typeof value === 'object') return JSON.stringify(value)
  return String(value)
}

function arrayLiteral(values: readonly unknown[], depth = 1): string {
  if (depth > MAX_ARRAY_DEPTH) throw tooDeep()
  const items = values.map((value) => {
    if (value === null || value === undefined) return 'NULL'
    if (Array.isArray(value)) return arrayLiteral(value, depth + 1)
    const bytes = asBytes(value)
    // Inside an array literal the backslash itself is escaped.
    if (bytes) return `\\\\x${Buffer.from(bytes).toString('hex')}`
    return `"${(textParam(value) ?? '').replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`
  })
  return `{${items.join(',')}}`
}

function asBytes(value: unknown): Uint8Array | undefined {
  if (value instanceof Uint8Array) return value
  if (
    typeof value === 'object' &&
    value !== null &&
    (value as { type?: unknown }).type === 'Buffer' &&
    Object.keys(value).length === 2 &&
    Array.isArray((value as { data?: unknown }).data) &&
    (value as { data: unknown[] }).data.every(
      (byte) => Number.isInteger(byte) && (byte as number) >= 0 && (byte as number) < 256,
    )
  )
    return Uint8Array.from((value as { data: number[] }).data)
  return undefined
}

/** drizzle's pg-proxy, one statement: POST /v1/query, the tenant in `x-tenant-id`, the key as a bearer token. */
export const pgProxyQuery: HttpProtocol = {
  family: 'pg-proxy',
  path: '/v1/query',
  parse(body, header) {
    const query = parsePgProxyQuery(body)
    return {
      request: {
        protocol: 'pg-proxy query',
        tenant: header('x-tenant-id'),
        key: bearerKey(header('authorization')),
        statements: [{ sql: query.sql, params: query.params }],
        consistency: consistencyOf(header),
      },
      answer: (results) => toPgProxyResponse(results[0] as StatementResult, query.method),
    }
  },
}

/** drizzle's pg-proxy batch: POST /v1/batch, one transaction on the primary (the issue's contract). */
export const pgProxyBatch: HttpProtocol = {
  family: 'pg-proxy',
  path: '/v1/batch',
  parse(body, header) {
    const batch = parsePgProxyBatch(body)
    return {
      request: {
        protocol: 'pg-proxy batch',
        tenant: header('x-tenant-id'),
        key: bearerKey(header('authorization')),
        statements: batch.queries.map((query) => ({ sql: query.sql, params: query.params })),
        consistency: 'strong',
        forceWrite: true,
      },
      answer: (results) => toPgProxyBatchResponse(results, batch.queries),
    }
  },
}
