import { createHash } from 'node:crypto'
import type { Topology } from '../config/topology.ts'
import type { TenantRoute } from '../directory/routes.ts'
import { effectiveLimits } from '../directory/tenants.ts'
import { isSwitchyardError, SwitchyardError } from '../errors.ts'
import type { CancelSignal } from '../shard/wire/cancel.ts'
import type { Admission, Quota } from './admission.ts'
import { type CacheAsk, DEFAULT_ASK, planCache } from './cache/plan.ts'
import type { AnswerCache, Change } from './cache/store.ts'
import { type Admitted, cancelled, type DispatchDeps, dispatchAdmitted } from './dispatch.ts'
import type { IsolationLevel } from './execute.ts'
import { type Classified, classify, classifyCached } from './policy.ts'
import type { Statement } from './result.ts'
import type { Consistency } from './routing.ts'
import { recordStatements, type StatementStats } from './stats/recorder.ts'

/**
 * A tenant's request as every protocol hands it over (HTTP's pg-proxy and Neon, the PostgreSQL front
 * end): the tenant already authenticated, its statements, their parameters as text or a client's bytes.
 */
export interface TenantRequest {
  /** Which protocol and shape: part of what an Idempotency-Key names. */
  protocol: string
  /** Checked: the key that authenticated the request may act for it. */
  tenant: string
  statements: Statement[]
  params: (string | Buffer | null)[][]
  consistency: Consistency
  forceWrite?: boolean
  isolation?: IsolationLevel | undefined
  readOnly?: boolean | undefined
  deferrable?: boolean | undefined
  idempotencyKey?: string | undefined
  /** The application's API request these statements serve (`x-switchyard-request`): counted once an hour. */
  apiRequest?: string | undefined
  /** What the request asks of the read cache (`x-switchyard-cache`); the tables' TTLs when absent. */
  cache?: CacheAsk | undefined
  /** Aborts at the request's deadline or when its client goes away. */
  signal: CancelSignal
}

export interface TenantRequestDeps extends DispatchDeps {
  topology: Topology
  /** Read answers cached per tenant (src/router/cache); absent without Redis. */
  readCache?: AnswerCache | undefined
  /** Per-tenant statement statistics (src/router/stats); absent without Redis or when turned off. */
  statementStats?: StatementStats | undefined
}

/** How the read cache took part in a request: answered it, ran it and kept the answer, or stood aside. */
export type CacheStatus = 'hit' | 'miss' | 'bypass'

/**
 * policy → route → admission and dispatch (side by side for reads): one tenant request, whatever
 * protocol it came by. Throws SwitchyardErrors that each protocol renders in its own shape.
 */
export async function runTenantRequest(
  deps: TenantRequestDeps,
  request: TenantRequest,
): Promise<Admitted & { cache?: CacheStatus }> {
  const started = performance.now()
  checkShapes(deps.topology.router, request.statements, request.params)
  const { tenant, signal } = request
  const route = await deps.routes.resolve(tenant)
  const limit = quotaOf(deps.topology, route, request.apiRequest)
  const cached = cachedClassified(request.statements)
  // SQL to parse, or a tenant this router already refused this hour: admitted (or refused) before the
  // parse, so a tenant over its limit costs the router no parse and the shards nothing.
  const early =
    !cached || deps.admission.overLimit(tenant)
      ? await deps.admission.admit(tenant, route.shard, limit)
      : undefined
  const classified = cached ?? (await classifyInTurn(tenant, request.statements, signal))
  // Counted from here on (refused or unparsable statements never ran), timed from the request's start.
  return recordStatements(
    deps.statementStats,
    tenant,
    classified,
    started,
    () => serveClassified(deps, request, route, limit, early, classified),
    (served) => served.outcome.results,
  )
}

/** A tenant request whose statements the policy allowed: dispatched, or answered from the read cache. */
async function serveClassified(
  deps: TenantRequestDeps,
  request: TenantRequest,
  route: TenantRoute,
  limit: Quota,
  early: Admission | undefined,
  classified: readonly Classified[],
): Promise<Admitted & { cache?: CacheStatus }> {
  const { tenant, signal } = request
  const write =
    Boolean(request.forceWrite) ||
    classified.some((statement) => statement.kind === 'write') ||
    (request.statements.length > 1 && !request.readOnly)
  const run = () => dispatchTenant(deps, request, route, write, limit, early)
  const answers = deps.readCache
  if (!answers) return run()
  if (write) return bumpingAfter(answers, tenant, route.shard, classified, run)
  const [statement] = classified
  // Only reads that waited for the tenant's last write (session consistency) may be kept or served;
  // and only when the versions are read before admission reads that write's LSN (not when the request
  // was admitted before its parse): otherwise a write could bump between the two, and a lagging replica's
  // older rows would be kept under the new versions.
  const relations = answers.relations(route.shard)
  const plan =
    statement && request.statements.length === 1 && request.consistency === 'session' && !early
      ? planCache(
          deps.topology.router.cache,
          statement,
          request.cache ?? DEFAULT_ASK,
          relations,
          request.params[0],
        )
      : undefined
  if (!plan || 'bypass' in plan || !relations) {
    const admitted = await run()
    // A "read" that wrote (a function the policy could not see into): its writes may be anything's.
    if (admitted.outcome.lsn !== null)
      await answers.bump(tenant, { shard: route.shard, statements: null, lsn: admitted.outcome.lsn })
    return { ...admitted, cache: 'bypass' }
  }
  const lookup = await answers.lookup(
    tenant,
    route.shard,
    relations,
    plan,
    request.statements[0] as Statement,
    request.params[0],
  )
  if (!lookup) return { ...(await run()), cache: 'bypass' }
  let ran: Admitted | undefined
  const { answer, hit } = await answers
    .answer(
      lookup,
      async () => {
        ran = await run()
        const { outcome } = ran
        const result = outcome.results[0]
        if (!result || outcome.lsn !== null) throw new NotCacheable()
        return {
          answer: { result, node: outcome.node.name, role: outcome.node.role },
          replayedLsn: outcome.replayedLsn,
        }
      },
      signal,
    )
    .catch(async (error: unknown) => {
      if (!(error instanceof NotCacheable) || !ran) throw error
      await answers.bump(tenant, { shard: route.shard, statements: null, lsn: ran.outcome.lsn })
      return { answer: undefined, hit: false }
    })
  if (ran) return { ...ran, cache: answer ? 'miss' : 'bypass' }
  if (!answer) throw new Error('the read cache answered nothing')
  // Answered without the shard: the request still counts against the tenant's rate limit.
  const admission = early ?? (await deps.admission.admit(tenant, route.shard, limit))
  const node = { name: answer.node, role: answer.role, shard: route.shard, url: '' }
  const outcome = {
    results: [answer.result],
    lsn: null,
    tainted: false,
    replayed: false,
    node,
    route,
    replayedLsn: null,
  }
  return { admission, outcome, cache: hit ? 'hit' : 'miss' }
}

/** A cached read's run that turned out to write (or gave no result): not kept, and its writes bump. */
class NotCacheable extends Error {}

/**
 * A write, then its tables' versions bumped before the answer leaves: any read after it, through any
 * router, misses what was cached before. Bumped also when the write failed (a lost COMMIT's answer).
 */
async function bumpingAfter(
  answers: AnswerCache,
  tenant: string,
  routed: string,
  classified: readonly Classified[],
  run: () => Promise<Admitted>,
): Promise<Admitted & { cache?: CacheStatus }> {
  let lsn: Change['lsn'] | 'rolled back' = 'unknown'
  let shard = routed
  try {
    const admitted = await run()
    const { outcome } = admitted
    // Committed without its LSN (the step after COMMIT failed): where the write is, is not known. An
    // idempotent replay wrote nothing now.
    lsn = outcome.lsn ?? (outcome.replayed ? null : 'unknown')
    // Where it ran: a route that changed under the write (a cutover) sent it to another shard.
    shard = outcome.node.shard
    return { ...admitted, cache: 'bypass' }
  } catch (error) {
    // PostgreSQL's own error (or a refusal before the shard): the transaction did not commit.
    if (isSwitchyardError(error) && ROLLED_BACK.has(error.code)) lsn = 'rolled back'
    throw error
  } finally {
    // Also when it failed otherwise: a lost COMMIT's answer may hide a write.
    if (lsn !== 'rolled back') await answers.bump(tenant, { shard, statements: classified, lsn })
  }
}

/** Errors after which the write surely did not commit: PostgreSQL said so, or the router refused it. */
const ROLLED_BACK = new Set([
  'sql_error',
  'quota_exceeded',
  'idempotency_key_reused',
  'idempotency_replay_unavailable',
  'rate_limited',
  'not_allowed',
  'syntax_error',
])

function dispatchTenant(
  deps: TenantRequestDeps,
  request: TenantRequest,
  route: TenantRoute,
  write: boolean,
  limit: Quota,
  early: Awaited<ReturnType<TenantRequestDeps['admission']['admit']>> | undefined,
): Promise<Admitted> {
  const { signal } = request
  // Limits and the Idempotency-Key apply to writes only, and go along with reads too: a "read" that
  // turns out to write (the replica refuses it) runs again as a write, with both.
  return dispatchAdmitted(
    deps,
    {
      route,
      statements: request.statements,
      params: request.params,
      write,
      consistency: request.consistency,
      isolation: request.isolation,
      readOnly: request.readOnly,
      deferrable: request.deferrable,
      limits: effectiveLimits(deps.topology, route.limits),
      idempotency: request.idempotencyKey
        ? {
            key: request.idempotencyKey,
            requestHash: requestHash(request),
            ttlSeconds: deps.topology.router.idempotencyTtlSeconds,
            maxBytes: deps.topology.router.idempotencyMaxBytes,
          }
        : undefined,
      signal,
    },
    limit,
    early,
  )
}

/** What an Idempotency-Key names: the protocol and shape, every statement and parameter, the isolation. */
function requestHash(request: TenantRequest): string {
  const params = request.params
  const named = {
    protocol: request.protocol,
    statements: request.statements.map((statement, i) => [statement.sql, params[i]]),
    isolation: request.isolation ?? null,
    readOnly: request.readOnly ?? null,
    deferrable: request.deferrable ?? null,
  }
  return createHash('sha256').update(JSON.stringify(named)).digest('hex')
}

/**
 * The tenant's hourly quota (src/router/admission.ts): its api_rate_limit in API requests, and for
 * statements that name none, that many times `statementsPerApiRequest`.
 */
export function quotaOf(topology: Topology, route: TenantRoute, request?: string): Quota {
  const apiRequests =
    topology.router.rateLimitOverride ?? route.limits.api_rate_limit ?? topology.tenantLimits.api_rate_limit
  const perApiRequest = topology.router.statementsPerApiRequest
  return { apiRequests, statements: apiRequests * perApiRequest, perApiRequest, request }
}

/** Statements by count and length, parameters by count: before anything is parsed. */
function checkShapes(config: Topology['router'], statements: Statement[], params: unknown[][]) {
  checkSizes(statements, config)
  for (const list of params)
    if (list.length > config.maxParams)
      throw new SwitchyardError('too_many_params', `at most ${config.maxParams} parameters per statement`)
}

/**
 * The policy's verdict on statements that run outside a tenant request (an interactive transaction's,
 * admitted when it began): the same checks and the same parse turns, reads and writes alike.
 */
export async function checkStatements(
  deps: TenantRequestDeps,
  tenant: string,
  statements: Statement[],
  params: unknown[][],
  signal: CancelSignal,
): Promise<readonly Classified[]> {
  checkShapes(deps.topology.router, statements, params)
  return cachedClassified(statements) ?? (await classifyInTurn(tenant, statements, signal))
}

/** The policy's verdicts on a request's statements if it has every one cached (a refusal is thrown); else undefined. */
function cachedClassified(statements: Statement[]): Classified[] | undefined {
  const verdicts: Classified[] = []
  for (const statement of statements) {
    const known = classifyCached(statement.sql)
    if (!known) return undefined
    verdicts.push(known)
  }
  return verdicts
}

/**
 * A tenant's parses: the tail of its queue, its requests in it, and the event loop time its parses took
 * that it has not yet paid back (a token bucket counted as debt: paid back at PARSE_MS_PER_SECOND, at most
 * MAX_PARSE_DEBT_MS owed).
 */
interface Parsing {
  tail: Promise<unknown>
  queued: number
  debtMs: number
  /** When debtMs was last paid down (performance.now()). */
  at: number
}
const parsing = new Map<string, Parsing>()

/** Event loop time one tenant's parses may take per second: the rest of the second is everyone else's. */
const PARSE_MS_PER_SECOND = 150
/** A tenant's requests that may wait to parse at once; past it, 429 `tenant_busy`. */
const PARSE_QUEUE = 16

/**
 * Classifies the statements of a request that has some the policy has not cached. A parse runs on the
 * event loop (up to ~100 ms for the longest, densest statement allowed): a tenant's are parsed one per
 * turn of the loop, in its own queue of at most PARSE_QUEUE requests, and for at most
 * PARSE_MS_PER_SECOND each second, so other tenants' requests are read and answered between them. A
 * request whose deadline passes or whose client leaves while it waits leaves the queue, unparsed.
 */
async function classifyInTurn(
  tenant: string,
  statements: Statement[],
  signal: CancelSignal,
): Promise<Classified[]> {
  const books = queueFor(tenant)
  try {
    const verdicts: Classified[] = []
    for (const statement of statements) {
      const cached = classifyCached(statement.sql)
      if (cached) {
        verdicts.push(cached)
        continue
      }
      verdicts.push(await inTurn(books, signal, () => classify(statement.sql)))
    }
    return verdicts
  } finally {
    books.queued--
  }
}

/**
 * Other parses of a tenant's SQL (the PostgreSQL front end splits a Query and parses each Parse) in the
 * same turns and within the same budget as the policy's, so they cannot stall the loop either.
 */
export async function parseInTurn<T>(tenant: string, signal: CancelSignal, parse: () => T): Promise<T> {
  const books = queueFor(tenant)
  try {
    return await inTurn(books, signal, parse)
  } finally {
    books.queued--
  }
}

/** The tenant's place in its parse queue (given back with `queued--`), or 429 `tenant_busy` when it is full. */
function queueFor(tenant: string): Parsing {
  let books = parsing.get(tenant)
  if (!books) {
    // Kept after the queue drains, with its debt: one small entry per tenant that ever parsed.
    books = { tail: Promise.resolve(), queued: 0, debtMs: 0, at: performance.now() }
    parsing.set(tenant, books)
  }
  if (books.queued >= PARSE_QUEUE)
    throw new SwitchyardError(
      'tenant_busy',
      `tenant ${tenant} already has ${PARSE_QUEUE} requests waiting for their statements to be checked; retry shortly`,
      { retryAfterSeconds: 1 },
    )
  books.queued++
  return books
}

/** Runs one parse in the tenant's next turn, its time counted against the tenant's second. */
async function inTurn<T>(books: Parsing, signal: CancelSignal, parse: () => T): Promise<T> {
  await parseTurn(books, signal)
  const started = performance.now()
  try {
    return parse()
  } finally {
    books.debtMs = Math.min(MAX_PARSE_DEBT_MS, books.debtMs + performance.now() - started)
  }
}

/**
 * The most of a tenant's parse time carried forward: with it, a tenant waits at most a second for its next
 * turn, as it did when the budget was per calendar second, and a parse that overran still costs it that
 * second (the old budget forgot it at the second's end). With the longest parses (~0.5 s at 64 KiB) a
 * tenant takes about a third of the loop, no more.
 */
const MAX_PARSE_DEBT_MS = 2 * PARSE_MS_PER_SECOND

/** The tenant's debt paid down for the time since it was last: PARSE_MS_PER_SECOND for every second. */
function payDown(books: Parsing): void {
  const now = performance.now()
  books.debtMs = Math.max(0, books.debtMs - ((now - books.at) * PARSE_MS_PER_SECOND) / 1000)
  books.at = now
}

/**
 * Resolves when it is the tenant's turn to parse: the next turn of the loop, once the tenant's parses owe
 * less than PARSE_MS_PER_SECOND. A parse that overran is paid back (up to MAX_PARSE_DEBT_MS) before the
 * next one, so a tenant whose parses are slow takes a bounded share of the loop over time.
 */
async function parseTurn(books: Parsing, signal: CancelSignal): Promise<void> {
  const turn = books.tail.then(async () => {
    if (signal.aborted) return
    payDown(books)
    if (books.debtMs >= PARSE_MS_PER_SECOND) {
      const waitMs = ((books.debtMs - PARSE_MS_PER_SECOND) * 1000) / PARSE_MS_PER_SECOND
      await new Promise((resolve) => setTimeout(resolve, Math.ceil(waitMs) + 1))
      payDown(books)
    }
    await new Promise<void>((resolve) => setImmediate(resolve))
  })
  books.tail = turn
  await abortable(turn, signal)
}

/** `promise`, or the request's cancellation (its deadline's 504, its gone client's 499) if that comes first. */
function abortable<T>(promise: Promise<T>, signal: CancelSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(cancelled(signal.reason, false))
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(cancelled(signal.reason, false))
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (error: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(error)
      },
    )
  })
}

/** A request's statements, by count and by length, before any of them is parsed. */
export function checkSizes(statements: Statement[], config: Topology['router']) {
  if (statements.length > config.maxBatchStatements)
    throw new SwitchyardError(
      'too_many_statements',
      `at most ${config.maxBatchStatements} statements per request (this one has ${statements.length})`,
      { max: config.maxBatchStatements },
    )
  statements.forEach((statement, i) => {
    // A UTF-16 unit is at most 3 bytes of UTF-8: most statements need no byte count at all.
    const length = statement.sql.length
    if (
      length * 3 > config.maxStatementBytes &&
      (length > config.maxStatementBytes || Buffer.byteLength(statement.sql) > config.maxStatementBytes)
    )
      throw new SwitchyardError(
        'statement_too_large',
        `statement ${i} is longer than ${config.maxStatementBytes} bytes: send values as parameters, or split it`,
        { max: config.maxStatementBytes, statementIndex: i },
      )
  })
}
