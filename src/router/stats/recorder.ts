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
import type { StatementResult } from '../result.ts'
import type { StatementIdentity } from './identity.ts'

export type StatementStatsConfig = Topology['router']['statementStats']

/** One hour's counts of this router: by tenant, then by fingerprint (each with the text it is shown as). */
type Table = Map<string, Map<string, { query: string; counts: StatementCounts }>>

/**
 * What one router counted since it last flushed, bounded: at most `tenants` tenants and, per tenant,
 * `fingerprintsPerTenant` fingerprints plus one `other` row that takes the rest, so a tenant sending
 * endless distinct SQL grows nothing. Counts of at most two clock hours are held (the current one and,
 * while Redis is away, the one before); older ones are dropped. Pure: the flush is the recorder's.
 */
export function createStatementTables(
  config: Pick<StatementStatsConfig, 'tenants' | 'fingerprintsPerTenant'>,
) {
  let tables = new Map<number, Table>()
  /** The newest hour counted in: tables of hours before the one preceding it are dropped. */
  let latest = Number.NEGATIVE_INFINITY
  /** Statements not counted (tenant cap, an hour dropped) since the last `takeDropped()`. */
  let dropped = 0

  function tableOf(hour: number): Table | undefined {
    if (hour > latest) {
      latest = hour
      for (const [old, table] of tables)
        if (old < hour - 1) {
          dropped += callsIn(table)
          tables.delete(old)
        }
    }
    if (hour < latest - 1) return undefined
    let table = tables.get(hour)
    if (!table) {
      table = new Map()
      tables.set(hour, table)
    }
    return table
  }

  /** Adds counts under the tenant's fingerprint, or its `other` row past the cap. False: not counted. */
  function add(hour: number, tenant: string, identity: StatementIdentity, counts: StatementCounts): boolean {
    const table = tableOf(hour)
    let rows = table?.get(tenant)
    if (!rows) {
      if (!table || table.size >= config.tenants) {
        dropped += counts.calls
        return false
      }
      rows = new Map()
      table.set(tenant, rows)
    }
    let row = rows.get(identity.fingerprint)
    if (!row) {
      const full = rows.size - (rows.has(OTHER_FINGERPRINT) ? 1 : 0) >= config.fingerprintsPerTenant
      const fingerprint = full ? OTHER_FINGERPRINT : identity.fingerprint
      row = rows.get(fingerprint)
      if (!row) {
        row = {
          query: fingerprint === OTHER_FINGERPRINT ? OTHER_QUERY : identity.query,
          counts: emptyCounts(),
        }
        rows.set(fingerprint, row)
      }
    }
    addCounts(row.counts, counts)
    return true
  }

  return {
    add,
    /** Everything held, by hour and tenant, handed over to be flushed; the tables start empty. */
    take(): { hour: number; tenant: string; deltas: StatementDelta[] }[] {
      const taken = [...tables].flatMap(([hour, table]) =>
        [...table].map(([tenant, rows]) => ({
          hour,
          tenant,
          deltas: [...rows].map(([fingerprint, row]) => ({ fingerprint, ...row })),
        })),
      )
      tables = new Map()
      return taken
    },
    /** Rows (fingerprints and `other`) held for a tenant in an hour. */
    held: (hour: number, tenant: string) => tables.get(hour)?.get(tenant)?.size ?? 0,
    takeDropped(): number {
      const count = dropped
      dropped = 0
      return count
    },
  }
}

export type StatementTables = ReturnType<typeof createStatementTables>

function callsIn(table: Table): number {
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
 * when the error names none).
 */
export function countStatements(
  statements: readonly StatementIdentity[],
  ms: number,
  outcome: StatementsOutcome,
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
      for (const { identity, counts } of countStatements(statements, ms, outcome))
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
