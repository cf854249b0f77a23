import os from 'node:os'
import type { MoveDuringLoad } from './moves.ts'
import type { ResolvedRun } from './options.ts'
import {
  type LatencySummary,
  type Recorded,
  type ShardLoad,
  summarizeMs,
  type TimelinePoint,
} from './recorder.ts'

/** The seed's targets: no query over 100 ms, 10,000+ appointments a day, sub-second responses. */
export const TARGETS = { p99Ms: 100, bookingsPerDay: 10_000, maxMs: 1000 } as const

/** How long before the fence and after the flip a moved tenant's requests count as "around" its cutover. */
const AROUND_CUTOVER_MS = 1000
export const AROUND_CUTOVER = 'from 1 s before its fence to 1 s after its flip'

export interface TargetVerdict {
  name: string
  measured: string
  pass: boolean
}

export interface MoveReport extends MoveDuringLoad {
  /** The moved tenant's requests from 1 s before its fence to 1 s after its flip (or over the whole move). */
  clients: {
    from: number
    to: number
    requests: number
    errors: Record<string, number>
    latency: LatencySummary
  }
}

export interface LoadtestReport {
  version: 1
  createdAt: string
  machine: {
    cpus: number
    cpuModel: string
    memoryGb: number
    node: string
    platform: string
    loadAverage: number[]
  }
  settings: Omit<ResolvedRun, 'json' | 'html' | 'url'> & { router: string; tenants: number }
  /** Every tenant at its hourly API limit: the most the seed's limits let the tenants send. */
  nominal: { tenants: number; apiRateLimitPerHour: number; requestsPerSecond: number }
  totals: { requests: number; ok: number; errors: number; seconds: number; throughput: number }
  latency: LatencySummary
  operations: (LatencySummary & { name: string; kind: 'read' | 'write'; errors: number })[]
  errors: Record<string, number>
  reads: { replica: number; primary: number; unknown: number; replicaShare: number }
  shards: (ShardLoad & { shard: string; share: number })[]
  bookings: { count: number; perSecond: number; perDay: number }
  moves: MoveReport[]
  timeline: TimelinePoint[]
  targets: TargetVerdict[]
}

/** Requests per second when every tenant sends its whole hourly API limit, evenly (0.1 req/s precision). */
export const nominalRate = (tenants: number, perHour: number) => round((tenants * perHour) / 3600, 1)

export interface ReportInput {
  options: ResolvedRun
  router: string
  tenants: number
  apiRateLimitPerHour: number
  recorded: Recorded
  moves: MoveDuringLoad[]
}

export function buildReport(input: ReportInput): LoadtestReport {
  const { options, recorded } = input
  const seconds = options.duration
  const requests = recorded.all.count
  const errors = errorCount(recorded.errors)
  const answeredReads = recorded.reads.replica + recorded.reads.primary
  const shardTotal = Object.values(recorded.shards).reduce((sum, load) => sum + load.requests, 0)
  const bookingsPerSecond = recorded.bookings / seconds
  const nominal = nominalRate(input.tenants, input.apiRateLimitPerHour)
  const { json: _json, html: _html, url: _url, ...settings } = options
  const report: Omit<LoadtestReport, 'targets'> = {
    version: 1,
    createdAt: new Date().toISOString(),
    machine: machine(),
    settings: { ...settings, router: input.router, tenants: input.tenants },
    nominal: {
      tenants: input.tenants,
      apiRateLimitPerHour: input.apiRateLimitPerHour,
      requestsPerSecond: nominal,
    },
    totals: {
      requests,
      ok: requests - errors,
      errors,
      seconds,
      throughput: round((requests - errors) / seconds, 1),
    },
    latency: recorded.all,
    operations: recorded.operations,
    errors: recorded.errors,
    reads: {
      ...recorded.reads,
      replicaShare: answeredReads ? round(recorded.reads.replica / answeredReads, 3) : 0,
    },
    shards: Object.entries(recorded.shards)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([shard, load]) => ({
        shard,
        ...load,
        share: shardTotal ? round(load.requests / shardTotal, 3) : 0,
      })),
    bookings: {
      count: recorded.bookings,
      perSecond: round(bookingsPerSecond, 2),
      perDay: Math.round(bookingsPerSecond * 86_400),
    },
    moves: input.moves.map((move) => ({ ...move, clients: aroundCutover(move, recorded) })),
    timeline: recorded.timeline,
  }
  return { ...report, targets: verdicts(report, options.rate) }
}

function aroundCutover(move: MoveDuringLoad, recorded: Recorded): MoveReport['clients'] {
  const from = (move.fencedAt ?? move.startedAt) - AROUND_CUTOVER_MS
  const to = (move.flippedAt ?? move.finishedAt ?? move.startedAt) + AROUND_CUTOVER_MS
  const answers = (recorded.watched.get(move.tenant) ?? []).filter((a) => a.at >= from && a.at <= to)
  const errors: Record<string, number> = {}
  for (const answer of answers) if (answer.code) errors[answer.code] = (errors[answer.code] ?? 0) + 1
  return {
    from: round(from, 0),
    to: round(to, 0),
    requests: answers.length,
    errors,
    latency: summarizeMs(answers.map((a) => a.ms)),
  }
}

function verdicts(report: Omit<LoadtestReport, 'targets'>, rate: number): TargetVerdict[] {
  const { latency, nominal, bookings } = report
  const atNominal = rate >= nominal.requestsPerSecond
  return [
    {
      name: `p99 under ${TARGETS.p99Ms} ms at the nominal load`,
      measured: `p99 ${formatMs(latency.p99)} ms at ${rate} req/s (nominal: ${nominal.tenants} tenants × ${nominal.apiRateLimitPerHour} req/h = ${nominal.requestsPerSecond} req/s)${atNominal ? '' : '; the run sent less than the nominal load'}`,
      pass: atNominal && latency.count > 0 && latency.p99 < TARGETS.p99Ms,
    },
    {
      name: `at least ${TARGETS.bookingsPerDay.toLocaleString('en-US')} appointments booked a day`,
      measured: `${bookings.perSecond} bookings/s sustained = ${bookings.perDay.toLocaleString('en-US')} a day`,
      pass: bookings.perDay >= TARGETS.bookingsPerDay,
    },
    {
      name: 'every response under one second',
      measured: `max ${formatMs(latency.max)} ms`,
      pass: latency.count > 0 && latency.max < TARGETS.maxMs,
    },
  ]
}

export function machine(): LoadtestReport['machine'] {
  const cpus = os.cpus()
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memoryGb: round(os.totalmem() / 1024 ** 3, 1),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    loadAverage: os.loadavg().map((load) => round(load, 2)),
  }
}

export const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits

/** Milliseconds to read at a glance: 0.84, 12.3, 1019. */
export const formatMs = (ms: number) =>
  ms >= 100 ? String(Math.round(ms)) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)

/** Requests that failed, whatever their code. */
export const errorCount = (errors: Record<string, number>) =>
  Object.values(errors).reduce((sum, n) => sum + n, 0)

/** Formats rows as aligned columns; the CLI hands in its own `table` so every command prints alike. */
export type TableFormatter = (rows: Record<string, unknown>[], columns: string[]) => string

const percent = (share: number) => `${(share * 100).toFixed(1)}%`

/** Error counts as one phrase: `tenant_moving 2, timeout 1`, or `none`. */
export const describeErrors = (errors: Record<string, number>) =>
  Object.entries(errors)
    .map(([code, n]) => `${code} ${n}`)
    .join(', ') || 'none'

const latencyCells = (latency: LatencySummary) => ({
  requests: latency.count,
  p50: formatMs(latency.p50),
  p95: formatMs(latency.p95),
  p99: formatMs(latency.p99),
  max: formatMs(latency.max),
  mean: formatMs(latency.mean),
})

/** The rows of the report's tables, formatted once for the terminal and the HTML page alike. */
export const reportRows = {
  operations: (report: LoadtestReport) =>
    [...report.operations, { name: 'all', kind: '', errors: report.totals.errors, ...report.latency }].map(
      (op) => ({ name: op.name, kind: op.kind, errors: op.errors, ...latencyCells(op) }),
    ),
  shards: (report: LoadtestReport) =>
    report.shards.map((shard) => ({ ...shard, share: percent(shard.share) })),
  moves: (report: LoadtestReport) =>
    report.moves.map((move) => ({
      tenant: move.name,
      move: `${move.from} → ${move.to ?? '?'}`,
      state: move.state,
      stallMs: move.stallMs ?? '',
      flipAtS: move.flippedAt === null ? '' : (move.flippedAt / 1000).toFixed(1),
      requests: move.clients.requests,
      errors: describeErrors(move.clients.errors),
      p99: formatMs(move.clients.latency.p99),
      max: formatMs(move.clients.latency.max),
      problem: move.error ?? '',
    })),
}

export const COLUMNS = {
  operations: ['name', 'kind', 'requests', 'errors', 'p50', 'p95', 'p99', 'max', 'mean'],
  shards: ['shard', 'requests', 'share', 'reads', 'replicaReads', 'writes'],
  moves: ['tenant', 'move', 'state', 'stallMs', 'flipAtS', 'requests', 'errors', 'p99', 'max', 'problem'],
}

/** One line about the settings, for the terminal and the page's header. */
export function describeSettings(report: LoadtestReport): string {
  const s = report.settings
  return `${s.rate} req/s open loop for ${s.duration} s (after ${s.warmup} s warm-up), ${s.connections} connections, ${percent(s.writeShare)} writes, zipf ${s.zipf}, ${s.tenants} tenants, router ${s.router}`
}

/** Throughput, errors, reads by role and bookings in a few sentences. */
export function describeTotals(report: LoadtestReport): string[] {
  const { totals, reads, bookings } = report
  return [
    `throughput: ${totals.throughput} answers/s ok (${totals.ok} of ${totals.requests})`,
    `errors: ${describeErrors(report.errors)}`,
    `reads: ${percent(reads.replicaShare)} served by replicas (${reads.replica} on replicas, ${reads.primary} on primaries)`,
    `bookings: ${bookings.count} (${bookings.perSecond}/s, ${bookings.perDay.toLocaleString('en-US')} a day)`,
  ]
}

/** The report for a terminal: settings, latency per operation, totals, shards, moves, targets. */
export function formatReport(report: LoadtestReport, table: TableFormatter): string {
  const sections = [
    `loadtest: ${describeSettings(report)}`,
    table(reportRows.operations(report), COLUMNS.operations),
    '(latencies in ms, from each request’s scheduled time)',
    describeTotals(report).join('\n'),
    table(reportRows.shards(report), COLUMNS.shards),
  ]
  if (report.moves.length)
    sections.push(
      table(reportRows.moves(report), COLUMNS.moves),
      `(moves: the moved tenant’s own requests ${AROUND_CUTOVER}; flipAtS: seconds into the measured window)`,
    )
  sections.push(report.targets.map((t) => `${t.pass ? 'PASS' : 'FAIL'}  ${t.name}: ${t.measured}`).join('\n'))
  return `${sections.join('\n\n')}\n`
}
