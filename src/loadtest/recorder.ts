import * as hdr from 'hdr-histogram-js'
import type { Answer } from './driver.ts'
import { OPERATIONS, type OperationName } from './workload.ts'

/** Latencies are recorded in microseconds, up to an hour; three significant digits per operation. */
const histogram = (digits: 2 | 3) =>
  hdr.build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 3_600_000_000,
    numberOfSignificantValueDigits: digits,
  })
type Histogram = ReturnType<typeof histogram>

export interface LatencySummary {
  count: number
  p50: number
  p95: number
  p99: number
  max: number
  mean: number
}

/** A request of a watched tenant (one that moves), kept whole to look at it around its cutover. */
export interface WatchedAnswer {
  at: number
  ms: number
  code: string | null
}

export interface ShardLoad {
  requests: number
  reads: number
  writes: number
  replicaReads: number
}

export interface TimelinePoint {
  /** Second of the measured window. */
  t: number
  requests: number
  errors: number
  p50: number
  p99: number
  max: number
}

/**
 * Everything the report needs, gathered as answers arrive (nothing per request is kept except for the
 * watched tenants): an HdrHistogram per operation and one per second of the run, errors by code,
 * reads by node role, load by shard. Answers scheduled before `fromMs` (the warm-up) are left out.
 */
export function createRecorder(fromMs: number, watched: ReadonlySet<string>) {
  const perOperation = new Map<OperationName, { histogram: Histogram; errors: number }>(
    OPERATIONS.map((op) => [op.name, { histogram: histogram(3), errors: 0 }]),
  )
  const all = histogram(3)
  const perSecond = new Map<number, { histogram: Histogram; errors: number }>()
  const errors: Record<string, number> = {}
  const reads = { replica: 0, primary: 0, unknown: 0 }
  const shards: Record<string, ShardLoad> = {}
  const watchedAnswers = new Map<string, WatchedAnswer[]>([...watched].map((tenant) => [tenant, []]))
  let bookings = 0

  function record(operation: OperationName, tenant: string, answer: Answer) {
    if (answer.at < fromMs) return
    const at = answer.at - fromMs
    const micros = Math.max(1, Math.round(answer.ms * 1000))
    const kind = OPERATIONS.find((op) => op.name === operation)?.kind ?? 'read'
    const op = perOperation.get(operation)
    op?.histogram.recordValue(micros)
    all.recordValue(micros)
    const second = secondOf(perSecond, Math.floor(at / 1000))
    second.histogram.recordValue(micros)
    watchedAnswers.get(tenant)?.push({ at, ms: answer.ms, code: answer.code })
    if (answer.code !== null) {
      errors[answer.code] = (errors[answer.code] ?? 0) + 1
      if (op) op.errors += 1
      second.errors += 1
      return
    }
    if (operation === 'book_appointment') bookings += 1
    countPlace(answer, kind)
  }

  function countPlace(answer: Answer, kind: 'read' | 'write') {
    const role = answer.node === null ? 'unknown' : answer.node.includes('replica') ? 'replica' : 'primary'
    if (kind === 'read') reads[role] += 1
    if (answer.shard === null) return
    shards[answer.shard] ??= { requests: 0, reads: 0, writes: 0, replicaReads: 0 }
    const load = shards[answer.shard] as ShardLoad
    load.requests += 1
    if (kind === 'read') load.reads += 1
    else load.writes += 1
    if (kind === 'read' && role === 'replica') load.replicaReads += 1
  }

  return {
    record,
    result() {
      return {
        all: summarize(all),
        operations: OPERATIONS.map((op) => {
          const found = perOperation.get(op.name)
          return {
            name: op.name,
            kind: op.kind,
            errors: found?.errors ?? 0,
            ...summarize(found?.histogram ?? histogram(3)),
          }
        }),
        timeline: timeline(perSecond),
        errors,
        reads,
        shards,
        bookings,
        watched: watchedAnswers,
      }
    },
  }
}

export type Recorded = ReturnType<ReturnType<typeof createRecorder>['result']>

function secondOf(perSecond: Map<number, { histogram: Histogram; errors: number }>, t: number) {
  let found = perSecond.get(t)
  if (!found) {
    // Two significant digits are plenty for a chart and keep an hour of seconds small in memory.
    found = { histogram: histogram(2), errors: 0 }
    perSecond.set(t, found)
  }
  return found
}

function timeline(perSecond: Map<number, { histogram: Histogram; errors: number }>): TimelinePoint[] {
  return [...perSecond.entries()]
    .sort(([a], [b]) => a - b)
    .map(([t, { histogram: h, errors }]) => {
      const s = summarize(h)
      return { t, requests: s.count, errors, p50: s.p50, p99: s.p99, max: s.max }
    })
}

const ms = (micros: number) => Math.round(micros) / 1000

export function summarize(h: Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, p50: 0, p95: 0, p99: 0, max: 0, mean: 0 }
  // A percentile is its bucket's highest equivalent value, which may lie past the largest value seen.
  const at = (percentile: number) => ms(Math.min(h.getValueAtPercentile(percentile), h.maxValue))
  return {
    count: h.totalCount,
    p50: at(50),
    p95: at(95),
    p99: at(99),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  }
}

/** Percentiles of plain latencies (ms): for the few requests of a tenant around its cutover. */
export function summarizeMs(values: readonly number[]): LatencySummary {
  const h = histogram(3)
  for (const value of values) h.recordValue(Math.max(1, Math.round(value * 1000)))
  return summarize(h)
}
