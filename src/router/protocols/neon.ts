import { z } from 'zod'
import { tenantId } from '../../directory/tenants.ts'
import { describeIssues, isSwitchyardError, SwitchyardError } from '../../errors.ts'
import type { Statement, StatementResult } from '../result.ts'
import { consistencyOf } from './headers.ts'
import type { HttpProtocol } from './index.ts'
import { parseArrayText } from './pg-proxy.ts'

/**
 * Neon's SQL-over-HTTP protocol, as `@neondatabase/serverless`'s `neon()` speaks it when `fetchEndpoint`
 * points at the router, and as Neon's proxy answers it (proxy/src/serverless/sql_over_http.rs, json.rs).
 * The client always asks for raw text in array mode and parses values itself by `dataTypeID` with
 * node-postgres' parsers; the other modes exist for hand-written HTTP clients.
 */

/** One statement of the body; `arrayMode` here overrides the Neon-Array-Mode header (the proxy allows it). */
const neonQuerySchema = z.object({
  query: z.string().min(1),
  params: z.array(z.unknown()).default([]),
  arrayMode: z.boolean().optional(),
})
/** Single `{ query, params }` or batch `{ queries: [...] }`; like the proxy's untagged enum, single is tried first. */
const neonBodySchema = z.union([neonQuerySchema, z.object({ queries: z.array(neonQuerySchema) })])

/** The header words for a batch's isolation level (the client passes `isolationLevel` through as is). */
export const neonIsolationLevel = z.enum([
  'ReadUncommitted',
  'ReadCommitted',
  'RepeatableRead',
  'Serializable',
])
export type NeonIsolationLevel = z.infer<typeof neonIsolationLevel>

/** What `begin isolation level …` takes. */
export type SqlIsolationLevel = 'read committed' | 'repeatable read' | 'serializable'
// PostgreSQL runs Read Uncommitted as Read Committed ("Transaction Isolation" in its manual): ask for what runs.
const sqlIsolation: Record<NeonIsolationLevel, SqlIsolationLevel> = {
  ReadUncommitted: 'read committed',
  ReadCommitted: 'read committed',
  RepeatableRead: 'repeatable read',
  Serializable: 'serializable',
}

export interface NeonStatement extends Statement {
  /** Rows as arrays (true) or objects keyed by column name: the body's `arrayMode`, else the header's. */
  arrayMode: boolean
}

export interface NeonRequest {
  queries: NeonStatement[]
  /** `{ queries }`: one transaction, answered with `{ results }`. */
  batch: boolean
  /** Neon-Array-Mode: the default for statements that do not say. */
  arrayMode: boolean
  /** Neon-Raw-Text-Output: values exactly as PostgreSQL wrote them, instead of JSON-typed. */
  rawText: boolean
  /** Batch only, as in Neon's proxy: Neon-Batch-Isolation-Level, and the same as SQL words. */
  isolation?: NeonIsolationLevel
  isolationSql?: SqlIsolationLevel
  /** Batch only: Neon-Batch-Read-Only. */
  readOnly?: boolean
  /** Batch only: Neon-Batch-Deferrable. */
  deferrable?: boolean
}

export const NEON_HEADERS = {
  connectionString: 'Neon-Connection-String',
  rawTextOutput: 'Neon-Raw-Text-Output',
  arrayMode: 'Neon-Array-Mode',
  isolationLevel: 'Neon-Batch-Isolation-Level',
  readOnly: 'Neon-Batch-Read-Only',
  deferrable: 'Neon-Batch-Deferrable',
} as const

/** Body and headers → the statements and how to run and answer them. Neon's proxy reads only exactly 'true' as true. */
export function parseNeonRequest(body: unknown, headers: Headers): NeonRequest {
  const parsed = neonBodySchema.safeParse(body)
  if (!parsed.success)
    throw new SwitchyardError('invalid_input', `Neon query: ${describeIssues(parsed.error.issues)}`)
  const flag = (name: string) => headers.get(name) === 'true'
  const arrayMode = flag(NEON_HEADERS.arrayMode)
  const rawText = flag(NEON_HEADERS.rawTextOutput)
  const level = headers.get(NEON_HEADERS.isolationLevel)
  // The proxy refuses an unknown level on any request, batch or not.
  const isolation = level === null ? undefined : neonIsolationLevel.safeParse(level).data
  if (level !== null && !isolation)
    throw new SwitchyardError(
      'invalid_input',
      `${NEON_HEADERS.isolationLevel}: invalid isolation level ${JSON.stringify(level)}`,
    )
  const statement = (query: z.infer<typeof neonQuerySchema>): NeonStatement => ({
    sql: query.query,
    params: query.params,
    arrayMode: query.arrayMode ?? arrayMode,
  })
  if (!('queries' in parsed.data))
    return { queries: [statement(parsed.data)], batch: false, arrayMode, rawText }
  const readOnly = headers.get(NEON_HEADERS.readOnly)
  const deferrable = headers.get(NEON_HEADERS.deferrable)
  return {
    queries: parsed.data.queries.map(statement),
    batch: true,
    arrayMode,
    rawText,
    ...(isolation ? { isolation, isolationSql: sqlIsolation[isolation] } : {}),
    ...(readOnly !== null ? { readOnly: readOnly === 'true' } : {}),
    ...(deferrable !== null ? { deferrable: deferrable === 'true' } : {}),
  }
}

/**
 * Neon-Connection-String `postgres(ql)://<tenant>:<key>@<host>/<db>?…` → who is asking. Host, database
 * and options (the client appends `application_name`) name nothing here: the router is the endpoint.
 */
export function parseNeonConnectionString(value: string | null | undefined): { tenant: string; key: string } {
  const refuse = (why: string): never => {
    throw new SwitchyardError('invalid_credentials', `${NEON_HEADERS.connectionString}: ${why}`)
  }
  if (!value) return refuse('missing')
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return refuse('not a URL')
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') return refuse('not a postgres:// URL')
  const decode = (part: string) => {
    try {
      return decodeURIComponent(part)
    } catch {
      return refuse('badly percent-encoded')
    }
  }
  const tenant = tenantId.safeParse(decode(url.username))
  if (!tenant.success) return refuse('the user must be the tenant id (a UUID)')
  const key = decode(url.password)
  if (!key) return refuse('the password must be an API key')
  return { tenant: tenant.data.toLowerCase(), key }
}

export interface NeonField {
  name: string
  dataTypeID: number
  tableID: number
  columnID: number
  format: 'text'
}

/** One statement's answer, the shape of node-postgres' Result that the client returns for `fullResults`. */
export interface NeonResult {
  fields: NeonField[]
  command: string
  rowCount: number | null
  rows: unknown[][] | Record<string, unknown>[]
  rowAsArray: boolean
}

export function toNeonResult(
  result: StatementResult,
  options: { arrayMode: boolean; rawText: boolean },
): NeonResult {
  const oids = result.fields.map((field) => field.dataTypeID)
  const values = options.rawText
    ? result.rows
    : result.rows.map((row) =>
        row.map((text, i) => (text === null ? null : neonJsonValue(text, oids[i] ?? 0))),
      )
  const names = result.fields.map((field) => field.name)
  return {
    fields: result.fields.map(({ name, dataTypeID, tableID, columnID }) => ({
      name,
      dataTypeID,
      tableID,
      columnID,
      format: 'text',
    })),
    command: result.command,
    rowCount: result.rowCount,
    // Object rows: a repeated column name keeps the last value, as JSON.parse does with the proxy's output.
    rows: options.arrayMode
      ? values
      : values.map((row) => Object.fromEntries(row.map((value, i) => [names[i], value]))),
    rowAsArray: options.arrayMode,
  }
}

/** A batch's answer: `{ results }` in statement order, each statement in its own array mode. */
export function toNeonBatch(
  results: readonly StatementResult[],
  options: { rawText: boolean; queries: readonly { arrayMode: boolean }[] },
): { results: NeonResult[] } {
  return {
    results: results.map((result, i) =>
      toNeonResult(result, { arrayMode: options.queries[i]?.arrayMode ?? false, rawText: options.rawText }),
    ),
  }
}

/** The fields of a PostgreSQL ErrorResponse as postgres.js names them on its PostgresError. */
export interface PostgresErrorFields {
  message: string
  code: string
  severity?: string | undefined
  detail?: string | undefined
  hint?: string | undefined
  position?: string | undefined
  internal_position?: string | undefined
  internal_query?: string | undefined
  where?: string | undefined
  schema_name?: string | undefined
  table_name?: string | undefined
  column_name?: string | undefined
  /** postgres.js' own spelling of the data type name field ('d'). */
  'data type_name'?: string | undefined
  constraint_name?: string | undefined
  file?: string | undefined
  line?: string | undefined
  routine?: string | undefined
}

/** The body Neon's proxy sends on error; the client copies each of these onto its NeonDbError. */
export interface NeonErrorBody {
  message: string
  code: string
  severity: string | null
  detail: string | null
  hint: string | null
  position: string | null
  internalPosition: string | null
  internalQuery: string | null
  where: string | null
  schema: string | null
  table: string | null
  column: string | null
  dataType: string | null
  constraint: string | null
  file: string | null
  line: string | null
  routine: string | null
}

/**
 * An error as the Neon client needs it. The client reads the JSON body only when the status is 400 and
 * then throws a NeonDbError with `code` and the other fields copied over; on any other status it throws
 * `Server error (HTTP status N): <body>` with no code. So SQL errors and Switchyard's refusals are both
 * 400: a SQL error carries its SQLSTATE, a SwitchyardError its stable code ('invalid_credentials', …).
 */
export function toNeonError(error: SwitchyardError | PostgresErrorFields): {
  status: 400
  body: NeonErrorBody
} {
  const field = (value: string | undefined) => value ?? null
  if (isSwitchyardError(error)) {
    return { status: 400, body: { ...emptyError, message: error.message, code: error.code } }
  }
  return {
    status: 400,
    body: {
      message: error.message,
      code: error.code,
      severity: field(error.severity),
      detail: field(error.detail),
      hint: field(error.hint),
      position: field(error.position),
      internalPosition: field(error.internal_position),
      internalQuery: field(error.internal_query),
      where: field(error.where),
      schema: field(error.schema_name),
      table: field(error.table_name),
      column: field(error.column_name),
      dataType: field(error['data type_name']),
      constraint: field(error.constraint_name),
      file: field(error.file),
      line: field(error.line),
      routine: field(error.routine),
    },
  }
}

const emptyError: Omit<NeonErrorBody, 'message' | 'code'> = {
  severity: null,
  detail: null,
  hint: null,
  position: null,
  internalPosition: null,
  internalQuery: null,
  where: null,
  schema: null,
  table: null,
  column: null,
  dataType: null,
  constraint: null,
  file: null,
  line: null,
  routine: null,
}

/**
 * Without Neon-Raw-Text-Output the proxy types values in JSON (json.rs `pg_text_to_json`): bool, int2/int4
 * and finite floats as JSON scalars, json/jsonb as JSON, arrays element by element, everything else
 * (int8, numeric, dates, uuid, …) as its text.
 */
function neonJsonValue(text: string, oid: number): unknown {
  const element = arrayElements[oid]
  if (element !== undefined)
    return parseArrayText(text, (item) => neonScalar(item, element), oid === BOX_ARRAY ? ';' : ',')
  return neonScalar(text, oid)
}

function neonScalar(text: string, oid: number): unknown {
  switch (oid) {
    case 16:
      return text === 't'
    case 21:
    case 23:
      return Number.parseInt(text, 10)
    case 700:
    case 701: {
      // NaN and ±Infinity stay text: JSON has no such numbers.
      const value = Number.parseFloat(text)
      return Number.isFinite(value) ? value : text
    }
    case 114:
    case 3802:
      return JSON.parse(text)
    default:
      return text
  }
}

/** box is the one built-in type whose array delimiter is ';' (pg_type.typdelim). */
const BOX_ARRAY = 1020

/**
 * Built-in array type OID → element type OID (pg_type.typarray of PostgreSQL 18's base, range and
 * multirange types). Arrays of extension or user types (enums, domains) are not known by OID alone and
 * stay text.
 */
const arrayElements: Record<number, number> = {
  143: 142,
  199: 114,
  271: 5069,
  629: 628,
  651: 650,
  719: 718,
  775: 774,
  791: 790,
  1000: 16,
  1001: 17,
  1002: 18,
  1003: 19,
  1005: 21,
  1006: 22,
  1007: 23,
  1008: 24,
  1009: 25,
  1010: 27,
  1011: 28,
  1012: 29,
  1013: 30,
  1014: 1042,
  1015: 1043,
  1016: 20,
  1017: 600,
  1018: 601,
  1019: 602,
  1020: 603,
  1021: 700,
  1022: 701,
  1027: 604,
  1028: 26,
  1034: 1033,
  1040: 829,
  1041: 869,
  1115: 1114,
  1182: 1082,
  1183: 1083,
  1185: 1184,
  1187: 1186,
  1231: 1700,
  1270: 1266,
  1561: 1560,
  1563: 1562,
  2201: 1790,
  2207: 2202,
  2208: 2203,
  2209: 2204,
  2210: 2205,
  2211: 2206,
  2949: 2970,
  2951: 2950,
  3221: 3220,
  3643: 3614,
  3644: 3642,
  3645: 3615,
  3735: 3734,
  3770: 3769,
  3807: 3802,
  3905: 3904,
  3907: 3906,
  3909: 3908,
  3911: 3910,
  3913: 3912,
  3927: 3926,
  4073: 4072,
  4090: 4089,
  4097: 4096,
  4192: 4191,
  5039: 5038,
  6150: 4451,
  6151: 4532,
  6152: 4533,
  6153: 4534,
  6155: 4535,
  6157: 4536,
}

/**
 * Neon's serverless driver over HTTP: POST /sql, the tenant and key in `Neon-Connection-String`. Its
 * client reads an error body only from a 400 (anything else becomes "Server error (HTTP status N)"
 * without a code), so every refusal is a 400 carrying its code, and a 5xx other than 503 a 500;
 * Retry-After and the RateLimit headers still say when to come back.
 */
export const neonSql: HttpProtocol = {
  family: 'neon',
  path: '/sql',
  parse(body, header, headers) {
    const request = parseNeonRequest(body, headers)
    const credentials = parseNeonConnectionString(header('neon-connection-string'))
    return {
      request: {
        protocol: request.batch ? 'neon batch' : 'neon query',
        tenant: credentials.tenant,
        key: credentials.key,
        statements: request.queries,
        // PostgreSQL refuses serializable transactions on a hot standby: they run on the primary.
        consistency: request.isolationSql === 'serializable' ? 'strong' : consistencyOf(header),
        isolation: request.isolationSql,
        readOnly: request.readOnly,
        deferrable: request.deferrable,
      },
      answer(results) {
        if (request.batch) return toNeonBatch(results, { rawText: request.rawText, queries: request.queries })
        const first = request.queries[0]
        return toNeonResult(results[0] as StatementResult, {
          arrayMode: first?.arrayMode ?? request.arrayMode,
          rawText: request.rawText,
        })
      },
    }
  },
  error(error, status) {
    const neon =
      error.code === 'sql_error' && error.cause
        ? toNeonError(error.cause as PostgresErrorFields)
        : toNeonError(error)
    return { body: neon.body, status: status >= 500 && status !== 503 ? 500 : 400 }
  },
}
