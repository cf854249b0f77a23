import { z } from 'zod'
import { describeIssues, SwitchyardError } from '../errors.ts'
import { type Redis, runScript } from './redis.ts'
import { tenantId } from './tenants.ts'

/**
 * Per-tenant statement statistics in Redis (issue 18): what every router counted, merged. Routers write
 * (src/router/stats/recorder.ts flushes its deltas every second); `switchyard top`, the admin API and the
 * console read. It lives here because router and CLI both need its keys, and meet only in src/directory.
 *
 * Per clock hour (UTC, by the router's clock), tenant and statement fingerprint, one hash of counters that
 * only ever go up by HINCRBY: calls, errors, rows, total time (µs) and a log-scale latency histogram
 * (`b<bucket>` fields). Counters of any number of routers and workers add up, and so do the histograms'
 * buckets, so a p99 read from the sum is the p99 of every call. Every key expires after STATS_TTL_SECONDS.
 */

const PREFIX = 'switchyard:stmt:'
/** A day and an hour: `top --hours 24` always finds the whole of the last 24 clock hours. */
export const STATS_TTL_SECONDS = 25 * 3600
export const MAX_HOURS = 24
/** The row of a tenant's statements past the fingerprint cap (and of statements that could not be fingerprinted). */
export const OTHER_FINGERPRINT = 'other'
export const OTHER_QUERY = '(other statements: past the per-tenant fingerprint cap)'
/** Each tenant's total per hour: the console's "requests this hour, p99" without reading every row. */
const TOTAL_FINGERPRINT = '*'

export const hourOf = (ms: number) => Math.floor(ms / 3_600_000)
/** A set: the tenants with statements in the hour. */
const tenantsKey = (hour: number) => `${PREFIX}${hour}`
/** A set: the tenant's fingerprints in the hour (at most the cap; `other` is not in it). */
const fingerprintsKey = (hour: number, tenant: string) => `${PREFIX}${hour}:${tenant}`
const rowKey = (hour: number, tenant: string, fingerprint: string) =>
  `${PREFIX}${hour}:${tenant}:${fingerprint}`

// ---- The latency histogram ----

/** Buckets per doubling: each is 2^(1/8) ≈ 9% wide, so a time read back from one is within ±4.5%. */
const PER_OCTAVE = 8
/** The lowest bucket's lower end (62.5 µs); everything faster counts in bucket 0. */
const BASE_MS = 1 / 16
/** 21 doublings above BASE_MS: up to 131 s, past any request deadline. */
export const BUCKETS = 21 * PER_OCTAVE

/** Bucket counts by bucket number: sparse, as most statements fall in a handful. */
export type Histogram = Map<number, number>

export function bucketOf(ms: number): number {
  if (!(ms > BASE_MS)) return 0
  return Math.min(BUCKETS - 1, Math.floor(Math.log2(ms / BASE_MS) * PER_OCTAVE))
}

/** A bucket's time: the geometric middle of its range. */
export const bucketMs = (bucket: number) => BASE_MS * 2 ** ((bucket + 0.5) / PER_OCTAVE)

export function addHistogram(into: Histogram, from: ReadonlyMap<number, number>): void {
  for (const [bucket, count] of from) into.set(bucket, (into.get(bucket) ?? 0) + count)
}

/** The q-quantile (0 < q ≤ 1) of the times counted: the bucket the ceil(q × n)-th fastest call is in. */
export function quantileMs(histogram: ReadonlyMap<number, number>, q: number): number {
  let total = 0
  for (const count of histogram.values()) total += count
  if (total === 0) return 0
  const rank = Math.ceil(q * total)
  let seen = 0
  for (const bucket of [...histogram.keys()].sort((a, b) => a - b)) {
    seen += histogram.get(bucket) ?? 0
    if (seen >= rank) return bucketMs(bucket)
  }
  return 0
}

// ---- Writing: a router's deltas ----

/** What a router counted for one fingerprint of one tenant since its last flush (or what Redis holds). */
export interface StatementCounts {
  calls: number
  errors: number
  rows: number
  /** Total time in microseconds: HINCRBY takes integers. */
  micros: number
  /** Calls over the router's `slowStatementMs` (the seed's 100 ms), counted when they ended. */
  slow: number
  histogram: Histogram
}

export const emptyCounts = (): StatementCounts => ({
  calls: 0,
  errors: 0,
  rows: 0,
  micros: 0,
  slow: 0,
  histogram: new Map(),
})

export function addCounts(into: StatementCounts, from: StatementCounts): void {
  into.calls += from.calls
  into.errors += from.errors
  into.rows += from.rows
  into.micros += from.micros
  into.slow += from.slow
  addHistogram(into.histogram, from.histogram)
}

export interface StatementDelta {
  fingerprint: string
  /**
   * The text shown (src/shard/shown-text.ts: no constants, no comments, capped), the tenant's own; ''
   * when this router sent it already this hour.
   */
  query: string
  counts: StatementCounts
}

/** Counts as one ARGV word the script splits: "calls errors rows µs slow bucket count bucket count …". */
const encode = (counts: StatementCounts) =>
  [
    counts.calls,
    counts.errors,
    counts.rows,
    counts.micros,
    counts.slow,
    ...[...counts.histogram].flat(),
  ].join(' ')

/**
 * One tenant's deltas of one hour. KEYS: the hour's tenants, the tenant's fingerprints, its total row, its
 * `other` row, then each delta's row. ARGV: tenant, TTL, the fingerprint cap, the total's counts, then
 * each delta's fingerprint, shown text and counts. A fingerprint the tenant does not have yet this hour,
 * once it has `cap`, goes into `other`: whatever the routers send, a tenant holds at most cap + 2 hashes
 * an hour. The text is the row's field `q`, set by the first router to send one: each tenant's rows show
 * that tenant's own text.
 */
const FLUSH = `
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local function add(key, counts)
  local n = {}
  for word in string.gmatch(counts, '%S+') do n[#n + 1] = word end
  if n[1] ~= '0' then redis.call('hincrby', key, 'calls', n[1]) end
  if n[2] ~= '0' then redis.call('hincrby', key, 'errors', n[2]) end
  if n[3] ~= '0' then redis.call('hincrby', key, 'rows', n[3]) end
  if n[4] ~= '0' then redis.call('hincrby', key, 'us', n[4]) end
  if n[5] ~= '0' then redis.call('hincrby', key, 'slow', n[5]) end
  for i = 6, #n, 2 do redis.call('hincrby', key, 'b' .. n[i], n[i + 1]) end
  redis.call('expire', key, ttl)
end
redis.call('sadd', KEYS[1], ARGV[1])
redis.call('expire', KEYS[1], ttl)
add(KEYS[3], ARGV[4])
for i = 0, (#ARGV - 4) / 3 - 1 do
  local fingerprint, query, counts = ARGV[5 + i * 3], ARGV[6 + i * 3], ARGV[7 + i * 3]
  local row = KEYS[5 + i]
  if fingerprint == '${OTHER_FINGERPRINT}' then
    add(KEYS[4], counts)
  elseif redis.call('sismember', KEYS[2], fingerprint) == 1 or redis.call('scard', KEYS[2]) < cap then
    redis.call('sadd', KEYS[2], fingerprint)
    if query ~= '' then redis.call('hsetnx', row, 'q', query) end
    add(row, counts)
  else
    add(KEYS[4], counts)
  end
end
redis.call('expire', KEYS[2], ttl)
`

/** Adds one tenant's deltas of `hour` to what every router counted. Throws when Redis does not take them. */
export async function flushTenant(
  redis: Redis,
  hour: number,
  tenant: string,
  deltas: readonly StatementDelta[],
  fingerprintCap: number,
): Promise<void> {
  const total = emptyCounts()
  const keys = [
    tenantsKey(hour),
    fingerprintsKey(hour, tenant),
    rowKey(hour, tenant, TOTAL_FINGERPRINT),
    rowKey(hour, tenant, OTHER_FINGERPRINT),
  ]
  const args: (string | number)[] = [tenant, STATS_TTL_SECONDS, fingerprintCap, '']
  for (const delta of deltas) {
    addCounts(total, delta.counts)
    keys.push(rowKey(hour, tenant, delta.fingerprint))
    args.push(delta.fingerprint, delta.query, encode(delta.counts))
  }
  args[3] = encode(total)
  await runScript(redis, FLUSH, keys, args)
}

// ---- Reading ----

export const statementOrders = ['p99', 'total', 'calls'] as const
export type StatementOrder = (typeof statementOrders)[number]

/** What `top` and `GET /admin/v1/stats/statements` ask (strings from flags and query strings, coerced). */
export const statementQuerySchema = z.strictObject({
  tenant: tenantId.transform((id) => id.toLowerCase()).optional(),
  by: z.enum(statementOrders).default('p99'),
  limit: z.coerce.number().int().min(1).max(1000).default(20),
  /** The current clock hour and the hours before it: 1 is this hour only. */
  hours: z.coerce.number().int().min(1).max(MAX_HOURS).default(1),
})
export type StatementQuery = z.output<typeof statementQuerySchema>

/** A query as flags or a query string give it, or `invalid_input` naming the field. */
export function parseStatementQuery(input: unknown): StatementQuery {
  const parsed = statementQuerySchema.safeParse(input)
  if (!parsed.success) throw new SwitchyardError('invalid_input', describeIssues(parsed.error.issues))
  return parsed.data
}

export interface StatementRow {
  tenant: string
  fingerprint: string
  /** The tenant's own statement as shown (src/shard/shown-text.ts): constants as $n, no comments, capped. */
  query: string
  calls: number
  errors: number
  totalMs: number
  meanMs: number
  p99Ms: number
  rows: number
  /** Calls over router.slowStatementMs (the seed's 100 ms), as the routers counted them when they ended. */
  slowCalls: number
  /** At least one call was slow. */
  slow: boolean
}

/**
 * The statements of one tenant (or of all), summed over the routers and the hours asked, ordered by
 * `by` (descending) and cut at `limit`. A tenant's `other` row is listed like a statement. Throws
 * `stats_unavailable` when Redis does not answer.
 */
export async function readStatementStats(
  redis: Redis,
  query: StatementQuery,
  now = Date.now(),
): Promise<StatementRow[]> {
  const current = hourOf(now)
  const hours = Array.from({ length: query.hours }, (_, i) => current - i)
  const rows = await answering(async () => {
    const listed = await Promise.all(
      hours.map(async (hour) => {
        const tenants = query.tenant ? [query.tenant] : await redis.smembers(tenantsKey(hour))
        return Promise.all(
          tenants.map(async (tenant) => {
            const fingerprints = await redis.smembers(fingerprintsKey(hour, tenant))
            return [...fingerprints, OTHER_FINGERPRINT].map((fingerprint) => ({ hour, tenant, fingerprint }))
          }),
        )
      }),
    )
    const wanted = listed.flat(2)
    const hashes = await Promise.all(
      wanted.map((row) => redis.hgetall(rowKey(row.hour, row.tenant, row.fingerprint))),
    )
    return wanted.map((row, i) => ({ ...row, hash: hashes[i] ?? {} }))
  })
  const merged = new Map<
    string,
    { tenant: string; fingerprint: string; query: string; counts: StatementCounts }
  >()
  for (const row of rows) {
    const counts = countsOf(row.hash)
    if (counts.calls === 0) continue
    const key = `${row.tenant}:${row.fingerprint}`
    const into = merged.get(key) ?? {
      tenant: row.tenant,
      fingerprint: row.fingerprint,
      query: row.fingerprint === OTHER_FINGERPRINT ? OTHER_QUERY : '',
      counts: emptyCounts(),
    }
    into.query ||= row.hash.q ?? ''
    addCounts(into.counts, counts)
    merged.set(key, into)
  }
  const ordered = [...merged.values()]
    .map((row) => ({ ...row, ...figures(row.counts) }))
    .sort(byOrder(query.by))
    .slice(0, query.limit)
  return ordered.map((row) => ({
    tenant: row.tenant,
    fingerprint: row.fingerprint,
    query: row.query,
    calls: row.calls,
    errors: row.errors,
    totalMs: row.totalMs,
    meanMs: row.meanMs,
    p99Ms: row.p99Ms,
    rows: row.rows,
    slowCalls: row.slowCalls,
    slow: row.slowCalls > 0,
  }))
}

export interface TenantSummary {
  tenant: string
  calls: number
  errors: number
  p99Ms: number
}

/**
 * Every tenant's statements in the current clock hour, summed over routers and fingerprints: the
 * console's "requests this hour, p99" per tenant. One hash per tenant (its total row), so it stays cheap
 * with many tenants. Sorted by calls, busiest first. Throws `stats_unavailable` when Redis does not answer.
 */
export async function tenantSummaries(redis: Redis, now = Date.now()): Promise<TenantSummary[]> {
  const hour = hourOf(now)
  return answering(async () => {
    const tenants = await redis.smembers(tenantsKey(hour))
    const totals = await Promise.all(
      tenants.map((tenant) => redis.hgetall(rowKey(hour, tenant, TOTAL_FINGERPRINT))),
    )
    return tenants
      .map((tenant, i) => {
        const counts = countsOf(totals[i] ?? {})
        return {
          tenant,
          calls: counts.calls,
          errors: counts.errors,
          p99Ms: round(quantileMs(counts.histogram, 0.99)),
        }
      })
      .sort((a, b) => b.calls - a.calls || a.tenant.localeCompare(b.tenant))
  })
}

function countsOf(hash: Record<string, string>): StatementCounts {
  const counts = emptyCounts()
  for (const [field, value] of Object.entries(hash)) {
    const n = Number(value)
    if (field === 'calls') counts.calls = n
    else if (field === 'errors') counts.errors = n
    else if (field === 'rows') counts.rows = n
    else if (field === 'us') counts.micros = n
    else if (field === 'slow') counts.slow = n
    else if (field.startsWith('b')) counts.histogram.set(Number(field.slice(1)), n)
  }
  return counts
}

const round = (ms: number) => Math.round(ms * 1000) / 1000

function figures(counts: StatementCounts) {
  const totalMs = counts.micros / 1000
  return {
    calls: counts.calls,
    errors: counts.errors,
    rows: counts.rows,
    totalMs: round(totalMs),
    meanMs: round(totalMs / counts.calls),
    p99Ms: round(quantileMs(counts.histogram, 0.99)),
    slowCalls: counts.slow,
  }
}

type Figures = ReturnType<typeof figures> & { tenant: string; fingerprint: string }

/** Descending by the order asked, then by total time, then by name: the same order on every read. */
const byOrder =
  (by: StatementOrder) =>
  (a: Figures, b: Figures): number => {
    const key = by === 'p99' ? 'p99Ms' : by === 'total' ? 'totalMs' : 'calls'
    return (
      b[key] - a[key] ||
      b.totalMs - a.totalMs ||
      a.tenant.localeCompare(b.tenant) ||
      a.fingerprint.localeCompare(b.fingerprint)
    )
  }

/** Redis's answer, or `stats_unavailable`: statement statistics live only there. */
async function answering<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read()
  } catch (error) {
    throw new SwitchyardError(
      'stats_unavailable',
      `statement statistics live in Redis, which did not answer: ${(error as Error).message}`,
    )
  }
}
