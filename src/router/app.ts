import { randomUUID } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import { type Context, Hono, type MiddlewareHandler } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import type { Topology } from '../config/topology.ts'
import { isSwitchyardError, SwitchyardError } from '../errors.ts'
import { formatLsn } from '../shard/lsn.ts'
import { Cancellation, type CancelSignal } from '../shard/wire/cancel.ts'
import type { AdminDeps } from './admin/context.ts'
import { createAdminApi } from './admin/index.ts'
import { API_REQUEST_HEADER, apiRequestHeader, rateHeaders } from './admission.ts'
import type { Outgoing, UnreadAnswers } from './answers.ts'
import { authenticatedTenant, bearerKey, type KeyCheck } from './auth.ts'
import { parseCacheAsk } from './cache/plan.ts'
import type { AnswerCache } from './cache/store.ts'
import { createConsole } from './console/index.ts'
import { CONSUME_PATH, consumeApiRequest } from './consume.ts'
import { CLIENT_GONE, DEADLINE, type DispatchDeps, type Dispatched, failedOn } from './dispatch.ts'
import { retryAfter, statusOf } from './errors.ts'
import { HTTP_PROTOCOLS, type ProtocolRequest } from './protocols/index.ts'
import { normalizeParams } from './protocols/pg-proxy.ts'
import type { StatementStats } from './stats/recorder.ts'
import { runTenantRequest } from './tenant-request.ts'

// The admin API takes any object with the registry; the router passes its whole Metrics.
export interface RouterApp extends DispatchDeps, Omit<AdminDeps, 'metrics' | 'pools'> {
  topology: Topology
  keys: KeyCheck
  answers: UnreadAnswers
  /** Read answers cached per tenant in Redis (src/router/cache); absent without Redis. */
  readCache?: AnswerCache | undefined
  /** Per-tenant statement statistics (src/router/stats); absent without Redis or when turned off. */
  statementStats?: StatementStats | undefined
  /** False while starting and once shutting down: /readyz answers 503. */
  ready(): boolean
}

type Protocol = 'pg-proxy' | 'neon' | 'admin' | 'meta'

/** What one request has learnt on its way, for its response headers, its log line and its metrics. */
interface RequestTrace {
  requestId: string
  protocol: Protocol
  tenant?: string
  shard?: string
  node?: string
  role?: string
  /**
   * Response headers of a tenant request, as a plain object: the answer is built from them in one go
   * (`respond`). Hono's `c.header()` would build a web `Headers` per request and @hono/node-server would
   * copy it back into a plain object: measured as a visible share of the router's CPU per request.
   */
  headers: Record<string, string>
}

type Env = { Variables: { trace: RequestTrace } }

/**
 * The router's HTTP surface. Data flows one way: request → auth → tenant → policy → route → shard →
 * response; every error becomes a response in one place (`onError`), in the protocol's own shape.
 */
export function createApp(deps: RouterApp): Hono<Env> {
  const app = new Hono<Env>()
  const limits = deps.topology.router

  app.use('*', async (c, next) => {
    const started = performance.now()
    const requestId = c.req.header('x-request-id') ?? randomUUID()
    const protocol = protocolOf(c.req.path)
    const trace: RequestTrace = { requestId, protocol, headers: { 'x-request-id': requestId } }
    c.set('trace', trace)
    const tenantRequest = protocol === 'pg-proxy' || protocol === 'neon'
    // Set before next(): a header added to a finished response makes Hono rebuild it. Tenant requests
    // carry it in `trace.headers` instead.
    if (!tenantRequest) c.header('x-request-id', requestId)
    await next()
    // Shutting down: close the connection after this response, or a keep-alive client that keeps
    // sending on it is still served and holds the router's close() open.
    if (!deps.ready()) c.header('connection', 'close')
    if (!tenantRequest) return
    const seconds = (performance.now() - started) / 1000
    const status = c.res.status
    deps.metrics.requestDuration.observe(
      {
        protocol,
        shard: trace.shard ?? 'none',
        role: trace.role ?? 'none',
        outcome: status < 400 ? 'ok' : 'error',
      },
      seconds,
    )
    if (deps.logger.isLevelEnabled('info')) {
      const { requestId, tenant, shard, node } = trace
      const ms = Math.round(seconds * 10_000) / 10
      deps.logger.info({ requestId, protocol, tenant, shard, node, status, ms }, 'request')
    }
  })

  const limitBody = bodyLimit({
    maxSize: limits.maxBodyBytes,
    onError: () => {
      throw new SwitchyardError('body_too_large', `the body is larger than ${limits.maxBodyBytes} bytes`)
    },
  })
  // With a Content-Length, the header decides (cheap); only chunked bodies go through bodyLimit, which
  // makes @hono/node-server build a web Request and stream the body through it.
  const checkBodySize: MiddlewareHandler<Env> = async (c, next) => {
    const declared = c.req.header('content-length')
    if (declared === undefined) return limitBody(c, next)
    if (Number(declared) > limits.maxBodyBytes) {
      throw new SwitchyardError('body_too_large', `the body is larger than ${limits.maxBodyBytes} bytes`)
    }
    await next()
  }

  app.get('/healthz', (c) => c.json({ ok: true }))
  app.get('/readyz', (c) => (deps.ready() ? c.json({ ready: true }) : c.json({ ready: false }, 503)))
  app.get('/metrics', async (c) =>
    c.text(await deps.metrics.scrape(), 200, { 'content-type': deps.metrics.registry.contentType }),
  )

  for (const protocol of HTTP_PROTOCOLS) {
    app.use(protocol.path, checkBodySize)
    app.post(protocol.path, async (c) => {
      const header = (name: string) => c.req.header(name)
      const parsed = protocol.parse(await readJson(c), header, c.req.raw.headers)
      const outcome = await runForTenant(c, deps, parsed.request)
      return respond(c, deps, outcome, parsed.answer(outcome.results))
    })
  }

  app.post(CONSUME_PATH, async (c) => {
    const trace = c.get('trace')
    const { tenant, admission } = await consumeApiRequest(deps, {
      key: bearerKey(c.req.header('authorization')),
      tenant: c.req.header('x-tenant-id'),
      request: c.req.header(API_REQUEST_HEADER),
    })
    trace.tenant = tenant
    Object.assign(trace.headers, rateHeaders(admission))
    const { limit, remaining, resetSeconds } = admission
    return c.json({ limit, remaining: Math.max(0, remaining), resetSeconds }, 200, trace.headers)
  })
  app.route('/admin/v1', createAdminApi(deps))
  app.route('/console', createConsole())

  app.notFound((c) =>
    c.json(
      { error: { code: 'not_found', message: `no route for ${c.req.method} ${c.req.path}` } },
      404,
      c.get('trace').headers,
    ),
  )

  app.onError((error, c) => {
    const trace = c.get('trace')
    // A tenant request's headers so far (its request id, and the rate limit once admission answered).
    for (const [name, value] of Object.entries(trace.headers)) c.header(name, value)
    const known = toSwitchyardError(error)
    // A request that failed on a node is counted under that node's shard and role, not `none`.
    const node = failedOn(error)
    if (node) {
      trace.shard = node.shard
      trace.node = node.name
      trace.role = node.role
    }
    if (known.code === 'internal')
      deps.logger.error({ err: error, requestId: trace.requestId }, 'internal error')
    deps.metrics.errors.inc({
      code: known.code === 'sql_error' ? `sql_${known.details?.sqlstate ?? 'unknown'}` : known.code,
    })
    const status = statusOf(known)
    const wait = retryAfter(known)
    if (wait !== undefined) c.header('Retry-After', String(wait))
    if (known.code === 'rate_limited') {
      c.header('RateLimit-Limit', String(known.details?.limit))
      c.header('RateLimit-Remaining', '0')
      c.header('RateLimit-Reset', String(known.details?.resetSeconds))
    }
    const own = HTTP_PROTOCOLS.find((protocol) => protocol.family === trace.protocol)?.error
    if (own) {
      const shaped = own(known, status)
      return c.json(shaped.body as object, shaped.status as 400)
    }
    const { retryAfterSeconds: _hidden, ...details } = known.details ?? {}
    return c.json({ error: { code: known.code, message: known.message, ...details } }, status as 400)
  })

  return app
}

/** A tenant request as HTTP gives it: its tenant and key still to check, its parameters as JSON. */
type HttpTenantRequest = ProtocolRequest

/**
 * auth → tenant → policy → route → admission and dispatch (side by side for reads); sets the response
 * headers every protocol shares.
 */
async function runForTenant(
  c: Context<Env>,
  deps: RouterApp,
  request: HttpTenantRequest,
): Promise<Dispatched> {
  const bounds = requestBounds(c, deps.topology.router.requestTimeoutMs)
  try {
    return await runBounded(c, deps, request, bounds.signal)
  } finally {
    bounds.end()
  }
}

/**
 * The request's signal: it aborts at the deadline (the router's requestTimeoutMs, from the request's
 * arrival) or when the client goes away, and dispatch cancels the shard's query on it. The client's
 * leaving is its response's 'close' before the response finished (on Node's server); `c.req.raw.signal`
 * would build an AbortController and a web Request per request just to learn it.
 */
function requestBounds(c: Context<Env>, timeoutMs: number): { signal: CancelSignal; end(): void } {
  const cancellation = new Cancellation()
  const timer = setTimeout(() => cancellation.abort(DEADLINE), timeoutMs)
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing
  if (!outgoing) {
    // Called without Node's server (app.fetch with a web Request): its own signal says it.
    const client = c.req.raw.signal
    const left = () => cancellation.abort(CLIENT_GONE)
    client.addEventListener('abort', left, { once: true })
    return {
      signal: cancellation,
      end() {
        clearTimeout(timer)
        client.removeEventListener('abort', left)
      },
    }
  }
  const gone = () => {
    if (!outgoing.writableFinished) cancellation.abort(CLIENT_GONE)
  }
  outgoing.once('close', gone)
  return {
    signal: cancellation,
    end() {
      clearTimeout(timer)
      outgoing.off('close', gone)
    },
  }
}

async function runBounded(
  c: Context<Env>,
  deps: RouterApp,
  request: HttpTenantRequest,
  signal: CancelSignal,
): Promise<Dispatched> {
  const tenant = await authenticatedTenant(deps.keys, request.key, request.tenant)
  const trace = c.get('trace')
  trace.tenant = tenant
  deps.answers.admit(tenant)
  const { outcome, admission, cache } = await runTenantRequest(deps, {
    ...request,
    tenant,
    params: request.statements.map((statement) => normalizeParams(statement.params)),
    idempotencyKey: idempotencyKeyOf(c),
    apiRequest: apiRequestHeader(c.req.header(API_REQUEST_HEADER)),
    cache: parseCacheAsk(c.req.header('x-switchyard-cache'), deps.topology.router.cache.maxAskedSeconds),
    signal,
  })
  Object.assign(trace.headers, rateHeaders(admission))
  if (cache) trace.headers['x-switchyard-cache'] = cache
  trace.shard = outcome.route.shard
  trace.node = outcome.node.name
  trace.role = outcome.node.role
  trace.headers['x-switchyard-shard'] = outcome.route.shard
  trace.headers['x-switchyard-node'] = outcome.node.name
  if (outcome.lsn !== null) trace.headers['x-switchyard-lsn'] = formatLsn(outcome.lsn)
  if (outcome.replayed) trace.headers['x-switchyard-idempotent-replay'] = 'true'
  return outcome
}

/** `Idempotency-Key`: 1 to 255 visible ASCII characters (as Stripe's), on writes; absent is fine. */
function idempotencyKeyOf(c: Context<Env>): string | undefined {
  const key = c.req.header('idempotency-key')
  if (key === undefined) return undefined
  if (!/^[\x21-\x7e]{1,255}$/.test(key))
    throw new SwitchyardError(
      'invalid_input',
      'Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good one)',
    )
  return key
}

/**
 * A tenant request's JSON answer with the headers it collected, without Hono's `Headers` round trip.
 * The byte budget bounds it (rows, their column names, the descriptions) up to JSON's escapes, which
 * can make a string six times longer: past `ANSWER_FACTOR` budgets, or nested past what JSON.stringify
 * can walk, it is a 413 rather than a process out of memory or stack. Held until the client reads it.
 */
function respond(c: Context<Env>, deps: RouterApp, outcome: Dispatched, body: unknown): Response {
  const max = ANSWER_FACTOR * deps.limits.maxResultBytes
  let text: string | undefined
  try {
    text = JSON.stringify(body)
  } catch (error) {
    if (!(error instanceof RangeError)) throw error
  }
  if (text === undefined || text.length > max) {
    const committed = outcome.lsn !== null
    throw new SwitchyardError(
      'result_too_large',
      `the answer ${text === undefined ? 'nests too deeply to send' : `passed ${max} bytes`}${committed ? ' (the write committed)' : ''}`,
      { limit: 'bytes', max, ...(committed ? { committed } : {}) },
    )
  }
  const trace = c.get('trace')
  const tenant = trace.tenant ?? ''
  // A read's answer that would pass the tenant's (or everyone's) unread bound is refused: nothing changed.
  if (outcome.lsn === null && !outcome.replayed) deps.answers.admit(tenant, text.length)
  deps.answers.hold(tenant, text.length, (c.env as { outgoing?: Outgoing } | undefined)?.outgoing)
  return new Response(text, {
    status: 200,
    headers: { 'content-type': 'application/json', ...trace.headers },
  })
}

/** An answer may be this many times the byte budget (JSON escapes) before it is refused. */
const ANSWER_FACTOR = 2

async function readJson(c: Context<Env>): Promise<unknown> {
  // Neon's client sends JSON as text/plain: parse the body whatever its content type says.
  const text = await c.req.text()
  try {
    return JSON.parse(text)
  } catch {
    throw new SwitchyardError('invalid_json', 'the body is not valid JSON')
  }
}

function protocolOf(path: string): Protocol {
  const protocol = HTTP_PROTOCOLS.find((candidate) => candidate.path === path)
  if (protocol) return protocol.family
  if (path.startsWith('/admin/')) return 'admin'
  return 'meta'
}

function toSwitchyardError(error: unknown): SwitchyardError {
  if (isSwitchyardError(error)) return error
  return new SwitchyardError('internal', 'internal error')
}
