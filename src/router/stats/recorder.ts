import type { Topology } from '../../config/topology.ts'
import type { Redis } from '../../directory/redis.ts'
import {
  addCounts,
  bucketOf,
  emptyCounts,
  flushTenant,
  hourOf,
  OTHER_FINGERPRINT,
  OTHER_QUERY,
  type StatementCounts,
  type StatementDelta,
} from '../../directory/statement-stats.ts'
import { isSwitchyardError } from '../../errors.ts'
import type { Logger } from '../../log.ts'
import { shownText } from '../../shard/shown-text.ts'
import type { StatementResult } from '../result.ts'
import type { StatementIdentity } from './identity.ts'

export type StatementStatsConfig = Topology['router']['statementStats']

/** A row of counts and the text it is shown as ('' once the text was sent this hour). */
interface Row {
  query: string
  counts: StatementCounts
}

/** One clock hour of this router: counts since the last flush, and the rows it has had this hour. */
interface Hour {
  /** By tenant, then by fingerprint: what the next flush sends. */
  table: Map<string, Map<string, Row>>
  /**
   * The fingerprints each tenant has had a row of this hour (`other` not among them), kept across
   * flushes: the per-tenant cap counts them, and only a fingerprint new to the hour has its text built.
   */
  seen: Map<string, Set<string>>
  /** Entries in `seen`, for the router-wide bound. */
  fingerprints: number
}

/** A row's identity: a statement's (its text built on first need) or a held delta's (its text built). */
export type RowIdentity = { fingerprint: string } & ({ sql: string } | { query: string })

/**
 * What one router counted since it last flushed, bounded: at most `tenants` tenants an hour, and per
 * tenant `fingerprintsPerTenant` fingerprints an hour plus one `other` row that takes the rest, and at
 * most `maxRows` fingerprints an hour over all tenants (past it, statements of new fingerprints count in
 * their tenant's `other` row), so neither a tenant sending endless distinct SQL nor endless tenants grow
 * the router. Counts of at most two clock hours are held (the current one and, while Redis is away, the
 * one before); older ones are dropped. Pure but for building shown text: the flush is the recorder's.
 */
export function createStatementTables(
  config: Pick<StatementStatsConfig, 'tenants' | 'fingerprintsPerTenant' | 'maxRows'>,
) {
  const hours = new Map<number, Hour>()
  /** The newest hour counted in: hours before the one preceding it are dropped. */
  let latest = Number.NEGATIVE_INFINITY
  /** Statements not counted (tenant cap, an hour dropped) since the last `takeDropped()`. */
  let dropped = 0

  function hourOf(hour: number): Hour | undefined {
    if (hour > latest) {
      latest = hour
      for (const [old, held] of hours)
        if (old < hour - 1) {
          dropped += callsIn(held.table)
          hours.delete(old)
        }
    }
    if (hour < latest - 1) return undefined
    let held = hours.get(hour)
    if (!held) {
      held = { table: new Map(), seen: new Map(), fingerprints: 0 }
      hours.set(hour, held)
    }
    return held
  }

  /** The fingerprint counted under (the tenant's own, or `other` past a cap), and whether it is new this hour. */
  function placed(
    held: Hour,
    seen: Set<string>,
    fingerprint: string,
  ): { fingerprint: string; fresh: boolean } {
    if (fingerprint === OTHER_FINGERPRINT || seen.has(fingerprint)) return { fingerprint, fresh: false }
    if (seen.size >= config.fingerprintsPerTenant || held.fingerprints >= config.maxRows)
      return { fingerprint: OTHER_FINGERPRINT, fresh: false }
    seen.add(fingerprint)
    held.fingerprints++
    return { fingerprint, fresh: true }
  }

  /** Adds counts under the tenant's fingerprint, or its `other` row past a cap. False: not counted. */
  function add(hour: number, tenant: string, identity: RowIdentity, counts: StatementCounts): boolean {
    const held = hourOf(hour)
    let seen = held?.seen.get(tenant)
    if (!held || !seen) {
      if (!held || held.seen.size >= config.tenants) {
        dropped += counts.calls
        return false
      }
      seen = new Set()
      held.seen.set(tenant, seen)
    }
    let rows = held.table.get(tenant)
    if (!rows) {
      rows = new Map()
      held.table.set(tenant, rows)
    }
    const { fingerprint, fresh } = placed(held, seen, identity.fingerprint)
    let row = rows.get(fingerprint)
    if (!row) {
      row = { query: '', counts: emptyCounts() }
      rows.set(fingerprint, row)
    }
    if (fingerprint === OTHER_FINGERPRINT) row.query = OTHER_QUERY
    else if ('query' in identity) row.query ||= identity.query
    else if (fresh) row.query = shownText(identity.sql)
    addCounts(row.counts, counts)
    return true
  }

  return {
    add,
    /** Everything counted, by hour and tenant, handed over to be flushed; the counts start again at 0. */
    take(): { hour: number; tenant: string; deltas: StatementDelta[] }[] {
      const taken = [...hours].flatMap(([hour, held]) =>
        [...held.table].map(([tenant, rows]) => ({
          hour,
          tenant,
          deltas: [...rows].map(([fingerprint, row]) => ({ fingerprint, ...row })),
        })),
      )
      for (const held of hours.values()) held.table = new Map()
      return taken
    },
    /** Rows (fingerprints and `other`) held for a tenant in an hour. */
    held: (hour: number, tenant: string) => hours.get(hour)?.table.get(tenant)?.size ?? 0,
    takeDropped(): number {
      const count = dropped
      dropped = 0
      return count
    },
  }
}

export type StatementTables = ReturnType<typeof createStatementTables>

function callsIn(table: Hour['table']): number {
  let calls = 0
  for (const rows of table.values()) for (const row of rows.values()) calls += row.counts.calls
  return calls
}

/** How a tenant request's statements ended: their results, or the error and which statement failed. */
export type StatementsOutcome =
  | { results: readonly StatementResult[] }
  | { failed: true; statementIndex?: number | undefined }

/**
 * Counts each statement of one request: one call each, the request's time shared equally among them (a
 * transaction is one round trip: the router cannot time its statements apart), rows from each result.
 * A failed request counts its statements up to the one that failed, which counts an error (all of them,
 * when the error names none). A call whose share of the time is over `slowMs` counts as slow: exactly,
 * not read back from a histogram bucket.
 */
export function countStatements(
  statements: readonly StatementIdentity[],
  ms: number,
  outcome: StatementsOutcome,
  slowMs: number,
): { identity: StatementIdentity; counts: StatementCounts }[] {
  const failedAt = 'failed' in outcome ? outcome.statementIndex : undefined
  const ran = failedAt === undefined ? statements : statements.slice(0, failedAt + 1)
  const each = ms / Math.max(1, statements.length)
  const bucket = bucketOf(each)
  return ran.map((identity, i) => {
    const result = 'results' in outcome ? outcome.results[i] : undefined
    const error = 'failed' in outcome && (failedAt === undefined || failedAt === i)
    return {
      identity,
      counts: {
        calls: 1,
        errors: error ? 1 : 0,
        rows: result ? (result.rowCount ?? result.rows.length) : 0,
        micros: Math.round(each * 1000),
        slow: each > slowMs ? 1 : 0,
        histogram: new Map([[bucket, 1]]),
      },
    }
  })
}

export interface StatementStats {
  /** Counts a tenant request's statements (synchronous, in memory: never slows or fails the request). */
  record(
    tenant: string,
    statements: readonly StatementIdentity[],
    ms: number,
    outcome: StatementsOutcome,
  ): void
  /** Rows held for a tenant this hour, until the next flush (tests). */
  held(tenant: string): number
  /** Sends what is held to Redis now; the timer does it every `flushMs`. */
  flush(): Promise<void>
  /** Stops the timer and flushes once more. */
  close(): Promise<void>
}

/**
 * A router's statement statistics: counted in memory per request, sent to Redis every `flushMs` and on
 * close, one script per tenant (src/directory/statement-stats.ts). Redis away never touches a request:
 * what could not be sent is held on, within the same bounds, and sent with the next flush; that Redis
 * refused is logged once until it takes a flush again.
 */
export function createStatementStats(
  redis: Redis,
  config: StatementStatsConfig,
  slowMs: number,
  logger: Logger,
): StatementStats {
  const tables = createStatementTables(config)
  let flushing: Promise<void> | undefined
  let failing = false
  let closed = false

  async function sendAll(): Promise<void> {
    const taken = tables.take()
    const results = await Promise.allSettled(
      taken.map((batch) =>
        flushTenant(redis, batch.hour, batch.tenant, batch.deltas, config.fingerprintsPerTenant),
      ),
    )
    let failure: unknown
    results.forEach((result, i) => {
      if (result.status === 'fulfilled') return
      failure ??= result.reason
      // Held on for the next flush. A script that failed midway may have added part of it: counts may
      // then be counted twice, never lost silently (a Redis error mid-script is rare; down is common).
      const batch = taken[i]
      if (batch) for (const delta of batch.deltas) tables.add(batch.hour, batch.tenant, delta, delta.counts)
    })
    const dropped = tables.takeDropped()
    if (failure !== undefined && !failing) {
      failing = true
      logger.warn(
        { error: (failure as Error).message },
        'statement statistics: Redis did not take them; held in memory (bounded) until it does',
      )
    } else if (failure === undefined && failing) {
      failing = false
      logger.info('statement statistics: Redis takes them again')
    }
    if (dropped > 0)
      logger.warn({ dropped }, 'statement statistics: statements not counted (tenant cap or an old hour)')
  }

  function flush(): Promise<void> {
    flushing ??= sendAll().finally(() => {
      flushing = undefined
    })
    return flushing
  }

  const timer = setInterval(() => {
    flush().catch((error: unknown) => logger.error({ err: error }, 'statement statistics: flush failed'))
  }, config.flushMs)
  timer.unref()

  return {
    record(tenant, statements, ms, outcome) {
      if (closed) return
      const hour = hourOf(Date.now())
      for (const { identity, counts } of countStatements(statements, ms, outcome, slowMs))
        tables.add(hour, tenant, identity, counts)
    },
    held: (tenant) => tables.held(hourOf(Date.now()), tenant),
    flush,
    async close() {
      if (closed) return
      closed = true
      clearInterval(timer)
      await flushing
      await flush()
    },
  }
}

/** Refusals before a statement ran (the rate limit, a full queue): not a call of it. */
const NOT_RUN = new Set(['rate_limited', 'tenant_busy'])

/**
 * Runs a tenant request's statements and counts them (from `started`, the request's start in the
 * router): one call site per path through the router (a tenant request, a statement of a transaction
 * block), whatever its protocol.
 */
export async function recordStatements<T>(
  stats: StatementStats | undefined,
  tenant: string,
  statements: readonly StatementIdentity[],
  started: number,
  run: () => Promise<T>,
  resultsOf: (value: T) => readonly StatementResult[],
): Promise<T> {
  if (!stats) return run()
  try {
    const value = await run()
    stats.record(tenant, statements, performance.now() - started, { results: resultsOf(value) })
    return value
  } catch (error) {
    if (!(isSwitchyardError(error) && NOT_RUN.has(error.code))) {
      const index = isSwitchyardError(error) ? error.details?.statementIndex : undefined
      stats.record(tenant, statements, performance.now() - started, {
        failed: true,
        statementIndex: typeof index === 'number' ? index : undefined,
      })
    }
    throw error
  }
}
