import type { RouteCache, TenantRoute } from '../directory/routes.ts'
import { SwitchyardError } from '../errors.ts'
import type { Logger } from '../log.ts'
import type { HealthMonitor } from '../shard/monitor.ts'
import type { ShardNode } from '../shard/nodes.ts'
import { QUOTA_SQLSTATE, STALE_ROUTE_SQLSTATE } from '../shard/ownership.ts'
import type { NodePools } from '../shard/pools.ts'
import type { CancelSignal } from '../shard/wire/cancel.ts'
import { QueryCancelledError, ResultTooLargeError, type WireConnection } from '../shard/wire/connection.ts'
import { PoolTimeoutError } from '../shard/wire/errors.ts'
import type { Admission, AdmissionControl, Quota } from './admission.ts'
import {
  type Idempotency,
  type IsolationLevel,
  runTransaction,
  TransactionError,
  type TransactionOutcome,
} from './execute.ts'
import type { TenantShares } from './fairness.ts'
import type { Metrics } from './metrics.ts'
import type { PostgresErrorFields } from './protocols/neon.ts'
import type { Statement } from './result.ts'
import type { Consistency, Routing } from './routing.ts'

export interface DispatchDeps {
  /** The router capability every shard's enter() checks, read from the directory at start. */
  capability: string
  routes: RouteCache
  routing: Routing
  pools: NodePools
  monitor: HealthMonitor
  admission: AdmissionControl
  metrics: Metrics
  logger: Logger
  bufferWindowMs: number
  slowStatementMs: number
  shares: TenantShares
  /** The request bounds (router config): pool wait, result rows and bytes. */
  limits: RequestLimits
}

export interface RequestLimits {
  poolWaitMs: number
  maxResultRows: number
  maxResultBytes: number
}

/** Why a request's signal aborted: its deadline passed, or its client went away. */
export const DEADLINE = 'deadline'
export const CLIENT_GONE = 'client_gone'

export interface TenantTransaction {
  route: TenantRoute
  statements: Statement[]
  params: (string | Buffer | null)[][]
  write: boolean
  consistency: Consistency
  lastWriteLsn: bigint | null
  isolation?: IsolationLevel | undefined
  readOnly?: boolean | undefined
  deferrable?: boolean | undefined
  limits?: Record<string, number> | undefined
  /** A write's Idempotency-Key. */
  idempotency?: Idempotency | undefined
  /** Aborts at the request's deadline or when its client goes away: the shard's query is cancelled. */
  signal?: CancelSignal | undefined
  /** Admission still under way: anything that writes waits for it (a refused request must not write). */
  admitted?: Promise<unknown> | undefined
}

export interface Dispatched extends TransactionOutcome {
  node: ShardNode
  route: TenantRoute
  /** A replica's replay LSN as last polled when the read was routed to it: the read saw at least this. */
  replayedLsn: bigint | null
}

/** Transient node failures: the connection, not the statement, went wrong. */
const NODE_FAILURES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  '57P01',
  '57P02',
  '57P03',
])
const isNodeFailure = (code: string | undefined) =>
  !!code && (NODE_FAILURES.has(code) || code.startsWith('08'))
/**
 * The server answered with a plain ERROR and the session goes on: whatever its SQLSTATE (08P01 for a
 * Bind with the wrong number of parameters), the client's statement failed, not the node.
 */
const sessionGoesOn = (cause: unknown) => (cause as { severity?: string })?.severity === 'ERROR'
const sqlstate = (error: unknown) => (error as { code?: string })?.code

/**
 * Runs one tenant transaction on the node its route and kind call for (invariant 4), and deals with
 * what can go wrong on the way: a stale route (re-resolve and retry; hold the request while the tenant
 * is frozen for a cutover, up to the buffer window), a replica that is gone or turns out to need a
 * write (retry on the primary), a primary that is gone (fail fast with 503).
 */
export async function dispatch(deps: DispatchDeps, tx: TenantTransaction): Promise<Dispatched> {
  const tried: { node?: ShardNode } = {}
  try {
    return await dispatchOnNodes(deps, tx, tried)
  } catch (error) {
    if (tried.node && typeof error === 'object' && error !== null) lastTried.set(error, tried.node)
    throw error
  }
}

/**
 * The node a failed request was last sent to, if it got that far: its request metrics and log line are
 * labelled with that shard and role (errors say nothing of where they happened, and the route is known
 * only to a request that succeeded).
 */
export const failedOn = (error: unknown): ShardNode | undefined =>
  typeof error === 'object' && error !== null ? lastTried.get(error) : undefined

const lastTried = new WeakMap<object, ShardNode>()

async function dispatchOnNodes(
  deps: DispatchDeps,
  tx: TenantTransaction,
  tried: { node?: ShardNode },
): Promise<Dispatched> {
  const tenant = tx.route.tenant
  const deadline = Date.now() + deps.bufferWindowMs
  let route = tx.route
  let write = tx.write
  let consistency = tx.consistency
  let avoid: string | undefined
  for (let attempt = 0; ; attempt++) {
    // Held requests come back here every RETRY_UNCHANGED_MS while a move's fence is retried: the buffer
    // window bounds those; the hard cap only a loop that would never end.
    if ((attempt > 8 && Date.now() >= deadline) || attempt > 256) throw moving(tenant)
    if (tx.signal?.aborted) throw cancelled(tx.signal.reason, write)
    if (write && route.state === 'frozen') {
      route = await waitForNewRoute(deps, route, deadline)
      continue
    }
    // The last write the request knows of is on the shard it was first routed to; on another shard (the
    // tenant moved meanwhile) it means nothing, so such a read goes to that shard's primary.
    if (route.shard !== tx.route.shard && consistency === 'session') consistency = 'strong'
    const node = write
      ? deps.routing.primary(route.shard)
      : deps.routing.forRead(route.shard, { consistency, lastWriteLsn: tx.lastWriteLsn }, avoid)
    tried.node = node
    if (
      node.role === 'primary' &&
      !deps.monitor.health(node.name).healthy &&
      deps.monitor.health(node.name).checkedAt > 0
    ) {
      throw unavailable(node)
    }
    if (write && tx.admitted) await tx.admitted
    const replayedLsn = node.role === 'replica' ? deps.monitor.health(node.name).lsn : null
    try {
      const outcome = await onConnection(deps, node, tenant, tx.signal, (connection) =>
        runTransaction(
          connection,
          {
            tenant,
            epoch: route.epoch,
            capability: deps.capability,
            write,
            statements: tx.statements,
            params: tx.params,
            isolation: tx.isolation,
            readOnly: tx.readOnly,
            deferrable: tx.deferrable,
            limits: tx.limits,
            idempotency: tx.idempotency,
          },
          { signal: tx.signal, maxRows: deps.limits.maxResultRows, maxBytes: deps.limits.maxResultBytes },
        ),
      )
      if (write && outcome.lsn !== null) await deps.admission.recordWrite(tenant, node.shard, outcome.lsn)
      return { ...outcome, node, route, replayedLsn }
    } catch (error) {
      if (!(error instanceof TransactionError)) throw error
      const settled = outcomeOf(deps, error, node, route, replayedLsn)
      if (settled) return settled
      const code = sqlstate(error.cause)
      if (error.stage === 'enter' && (code === STALE_ROUTE_SQLSTATE || code === '40001')) {
        deps.metrics.staleRoutes.inc()
        deps.logger.info({ tenant, shard: route.shard, node: node.name, epoch: route.epoch }, 'stale route')
        // A replica may simply not have replayed the cutover yet: the retry reads from the primary.
        if (node.role === 'replica') consistency = 'strong'
        await deps.routes.invalidate(tenant)
        const fresh = await deps.routes.resolve(tenant, { fresh: true })
        route =
          sameRoute(fresh, route) && node.role === 'primary'
            ? await waitForNewRoute(deps, fresh, deadline)
            : fresh
        continue
      }
      if (isNodeFailure(code) && !sessionGoesOn(error.cause)) {
        deps.monitor.markDown(node.name, error.message)
        if (node.role === 'primary') throw unavailable(node)
        avoid = node.name
        continue
      }
      if (code === '25006' && !write) {
        // A "read" that writes (e.g. a volatile function the policy could not know): once more, on the primary.
        write = true
        continue
      }
      // BEGIN or enter() refused for another reason (the capability, a shard not migrated): the router's
      // or the operator's problem, never the tenant's; the shard's words go to the log, not to the client.
      if (error.stage === 'enter') throw refused(deps, node, error.cause)
      throw sqlError(error)
    }
  }
}

export interface Admitted {
  outcome: Dispatched
  admission: Admission
}

/**
 * Admission (the tenant's rate limit and last write, one Redis round trip) and the transaction. A write
 * is admitted first: a refused request must not write. A read runs while admission is under way, routed
 * on what this router knows of the tenant's last write; when the answer comes it decides: over the limit
 * is a 429 (the read changed nothing), and a last write (from any router) past what the replica had
 * replayed when the read was routed there means the read runs again where that write is visible.
 */
export async function dispatchAdmitted(
  deps: DispatchDeps,
  tx: Omit<TenantTransaction, 'lastWriteLsn' | 'admitted'>,
  limit: Quota,
  /** The request was admitted already (a tenant refused earlier this window is admitted before parsing). */
  early?: Admission,
): Promise<Admitted> {
  const tenant = tx.route.tenant
  if (early || tx.write || deps.admission.overLimit(tenant)) {
    const admission = early ?? (await deps.admission.admit(tenant, tx.route.shard, limit))
    return { admission, outcome: await dispatch(deps, { ...tx, lastWriteLsn: admission.lastWriteLsn }) }
  }
  // Admission's Redis command leaves once this turn's microtasks are done: after the shard pipeline.
  const admitting = deps.admission.admit(tenant, tx.route.shard, limit)
  const reading = dispatch(deps, {
    ...tx,
    lastWriteLsn: deps.admission.localLastWrite(tenant, tx.route.shard),
    admitted: admitting,
  })
  const [admitted, read] = await Promise.allSettled([admitting, reading])
  if (admitted.status === 'rejected') throw admitted.reason
  if (read.status === 'rejected') throw read.reason
  const admission = admitted.value
  const outcome = read.value
  const missed =
    tx.consistency === 'session' &&
    outcome.node.shard === tx.route.shard &&
    outcome.replayedLsn !== null &&
    admission.lastWriteLsn !== null &&
    admission.lastWriteLsn > outcome.replayedLsn
  if (!missed) return { admission, outcome }
  deps.metrics.readsRerun.inc()
  return { admission, outcome: await dispatch(deps, { ...tx, lastWriteLsn: admission.lastWriteLsn }) }
}

const sameRoute = (a: TenantRoute, b: TenantRoute) =>
  a.shard === b.shard && a.epoch === b.epoch && a.state === b.state

/**
 * Holds a request while its tenant is being cut over: wakes on an invalidation for the tenant or every
 * 25 ms, re-reads the directory, and returns once the route has changed and is writable. Past the
 * deadline the client gets 503 with Retry-After and can try again.
 */
/** How long a held request waits for a route that does not change before it tries the shard again. */
const RETRY_UNCHANGED_MS = 100

async function waitForNewRoute(
  deps: DispatchDeps,
  route: TenantRoute,
  deadline: number,
): Promise<TenantRoute> {
  const started = Date.now()
  const tenant = route.tenant
  for (;;) {
    const left = deadline - Date.now()
    if (left <= 0) {
      deps.metrics.bufferWaits.observe({ outcome: 'timeout' }, (Date.now() - started) / 1000)
      throw moving(tenant)
    }
    await nextChance(deps.routes, tenant, Math.min(25, left))
    const fresh = await deps.routes.resolve(tenant, { fresh: true })
    // A fence that gave up is undone on the shard without the route changing (the directory said
    // `moving` before and after): unless the directory says frozen, try the shard again now and then.
    const retry = fresh.state !== 'frozen' && Date.now() - started >= RETRY_UNCHANGED_MS
    if ((!sameRoute(fresh, route) && fresh.state !== 'frozen') || retry) {
      deps.metrics.bufferWaits.observe({ outcome: 'released' }, (Date.now() - started) / 1000)
      return fresh
    }
  }
}

function nextChance(routes: RouteCache, tenant: string, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const stop = routes.onInvalidate((which) => {
      if (which !== tenant) return
      clearTimeout(timer)
      stop()
      resolve()
    })
    const timer = setTimeout(() => {
      stop()
      resolve()
    }, ms)
  })
}

/**
 * What a failed transaction still tells the client, before any retry is considered: a write whose
 * COMMIT completed is a success (its answer came back before the failure); one whose COMMIT may have
 * reached the shard is `commit_unknown`, never a retry-safe error; a cancel is the deadline's 504 or the
 * gone client's; a result past the budget is 413. Undefined: let dispatch decide (retry, 503, SQL error).
 */
function outcomeOf(
  deps: DispatchDeps,
  error: TransactionError,
  node: ShardNode,
  route: TenantRoute,
  replayedLsn: bigint | null,
): Dispatched | undefined {
  if (error.commit === 'done' && error.committed) return { ...error.committed, node, route, replayedLsn }
  const cause = error.cause
  if (error.commit === 'done' && cause instanceof ResultTooLargeError)
    throw new SwitchyardError(
      'result_too_large',
      `the write committed, but what it returned passed the limit of ${cause.max} ${cause.limit}`,
      { limit: cause.limit, max: cause.max, committed: true },
    )
  if (error.commit !== 'none') {
    // A connection the router dropped itself (a cancel that did not settle in time) says nothing of
    // the node: the other tenants' requests go on there.
    if (!droppedByRouter(cause)) deps.monitor.markDown(node.name, error.message)
    throw commitUnknown(node, error.commit === 'done')
  }
  if (cause instanceof SwitchyardError) throw cause
  if (cause instanceof QueryCancelledError) throw cancelled(cause.reason, false)
  if (cause instanceof ResultTooLargeError) throw resultTooLarge(cause)
  if (cause instanceof PoolTimeoutError)
    throw new SwitchyardError(
      'pool_timeout',
      `no connection to ${node.name} was free within ${cause.waitedMs} ms; retry shortly`,
      { retryAfterSeconds: 1, node: node.name },
    )
  return undefined
}

/**
 * Runs `use` on a connection reserved from the node's pool, within the tenant's fair share of it. The
 * wait for a free connection is its own histogram: a slow transaction is one the shard took long over,
 * not one that queued for the pool. A connection on which anything but DML ran is closed, not reused.
 */
async function onConnection(
  deps: DispatchDeps,
  node: ShardNode,
  tenant: string,
  signal: CancelSignal | undefined,
  use: (connection: WireConnection) => Promise<TransactionOutcome>,
): Promise<TransactionOutcome> {
  const pool = deps.pools.pool(node.name)
  const waitStarted = performance.now()
  // A node that is gone fails here when the pool cannot open a connection: that is a failure to enter,
  // so the caller sees the connection error and marks the node down (retry or 503), not a 500.
  const enterFailure = (error: unknown) => {
    throw new TransactionError('enter', error)
  }
  const done = await deps.shares.acquire(tenant, node.name, signal).catch(enterFailure)
  let connection: WireConnection
  try {
    connection = await pool.reserve({ signal, timeoutMs: deps.limits.poolWaitMs }).catch(enterFailure)
  } catch (error) {
    done()
    throw error
  }
  const started = performance.now()
  deps.metrics.poolWait.observe({ node: node.name }, (started - waitStarted) / 1000)
  let tainted = false
  try {
    const outcome = await use(connection)
    tainted = outcome.tainted
    return outcome
  } catch (error) {
    if (error instanceof TransactionError) tainted = error.tainted
    throw error
  } finally {
    if (tainted) {
      deps.logger.warn({ node: node.name, tenant }, 'a statement other than DML ran: connection closed')
      void connection.close()
    }
    pool.release(connection)
    done()
    const ms = performance.now() - started
    if (ms > deps.slowStatementMs)
      deps.logger.warn({ node: node.name, ms: Math.round(ms) }, 'slow transaction')
  }
}

const droppedByRouter = (cause: unknown) =>
  cause instanceof QueryCancelledError || cause instanceof ResultTooLargeError

/** A request whose signal aborted: the deadline's 504, or a client that is gone (nobody reads it). */
export function cancelled(reason: unknown, write: boolean): SwitchyardError {
  if (reason === CLIENT_GONE)
    return new SwitchyardError('client_gone', 'the client closed the connection: the query was cancelled')
  return new SwitchyardError(
    'query_timeout',
    `the request passed its deadline: the query was cancelled on the shard${write ? ' and nothing was written' : ''}`,
  )
}

function commitUnknown(node: ShardNode, committed: boolean): SwitchyardError {
  return new SwitchyardError(
    'commit_unknown',
    committed
      ? `the write committed on ${node.shard}, but its answer was lost; do not retry it blindly`
      : `the connection to ${node.shard} was lost after COMMIT was sent: the write may or may not have happened. Retry only with the same Idempotency-Key, which returns the first answer if it did`,
    { shard: node.shard, committed },
  )
}

function refused(deps: DispatchDeps, node: ShardNode, cause: unknown): SwitchyardError {
  const { code, message } = cause as { code?: string; message?: string }
  deps.logger.error({ node: node.name, sqlstate: code, message }, 'the shard refused to enter a tenant')
  return new SwitchyardError('shard_refused', `${node.shard} refused this router; see the router's log`, {
    retryAfterSeconds: 5,
    shard: node.shard,
  })
}

/** SQLSTATEs of the shard's Idempotency-Key functions (migration 0005) and of a replay too large to keep. */
const IDEMPOTENCY_REUSED_SQLSTATE = 'SY005'
const IDEMPOTENCY_TOO_LARGE_SQLSTATE = 'SY006'

const moving = (tenant: string) =>
  new SwitchyardError('tenant_moving', `tenant ${tenant} is being moved; retry shortly`, {
    retryAfterSeconds: 1,
  })

const unavailable = (node: ShardNode) =>
  new SwitchyardError('shard_unavailable', `the primary of ${node.shard} is unavailable; retry shortly`, {
    retryAfterSeconds: 1,
    shard: node.shard,
  })

/**
 * A statement's own error, with its SQLSTATE and the fields clients use most; the server's whole error
 * stays as `cause` for protocols that pass every field on (Neon's).
 */
function sqlError(error: TransactionError): SwitchyardError {
  return statementError(error.cause as PostgresErrorFields, error.statementIndex, error.message)
}

/** A client statement's error from the shard, as sqlError tells it (also for a pinned transaction's statements). */
export function statementError(
  cause: PostgresErrorFields,
  statementIndex?: number,
  fallback = 'the statement failed',
): SwitchyardError {
  if (cause.code === QUOTA_SQLSTATE) {
    return new SwitchyardError('quota_exceeded', cause.message, { detail: cause.detail, hint: cause.hint })
  }
  if (cause.code === IDEMPOTENCY_REUSED_SQLSTATE)
    return new SwitchyardError('idempotency_key_reused', cause.message, { hint: cause.hint })
  if (cause.code === IDEMPOTENCY_TOO_LARGE_SQLSTATE)
    return new SwitchyardError('idempotency_replay_unavailable', cause.message, { hint: cause.hint })
  const failure = new SwitchyardError('sql_error', cause.message ?? fallback, {
    sqlstate: cause.code,
    detail: cause.detail,
    hint: cause.hint,
    position: cause.position,
    schema: cause.schema_name,
    table: cause.table_name,
    column: cause.column_name,
    constraint: cause.constraint_name,
    statementIndex,
  })
  failure.cause = cause
  return failure
}

/** A result past the request's rows or bytes, as the client hears it. */
export function resultTooLarge(cause: ResultTooLargeError): SwitchyardError {
  return new SwitchyardError(
    'result_too_large',
    `the result passed the limit of ${cause.max} ${cause.limit}: the query was cancelled on the shard`,
    { limit: cause.limit, max: cause.max },
  )
}
