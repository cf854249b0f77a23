import { describe, expect } from 'vitest'
import type { RunningRouter } from '../src/router/server.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { query, runningQueries } from './router-support.ts'
import { eventually, shard } from './support.ts'

/**
 * Issue 12, Build 3: no tenant can take the router or a pool down. Every request is bounded in rows and
 * bytes (streamed and stopped early), in time (a deadline that cancels the query on the shard), in its
 * wait for a connection, and in its share of a node's pool; a client that goes away takes its query along.
 */

const SHARD = 'shard-1'
let admin: ReturnType<typeof connect>
let replicaAdmin: ReturnType<typeof connect>

it.beforeAll(() => {
  admin = connect(shard(SHARD).primary)
  replicaAdmin = connect(shard(SHARD).replicas[0] as string)
})

const mb = (bytes: number) => `${Math.round(bytes / 1024 / 1024)} MB`

/** Queries still running on either node of the shard whose text holds `marker`. */
const running = (marker: string) => runningQueries(marker, [admin, replicaAdmin])

describe('result budgets: streamed, stopped early, the shard query cancelled', () => {
  let router: RunningRouter
  let tenant: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter()
    tenant = await tenantWithKey(SHARD)
  })

  it.each([
    ['a 600 MB value', "select repeat('x', 600000000) as v", 'bytes'],
    ['50 million rows', 'select g from generate_series(1, 50000000) g', 'rows'],
  ])('%s gets 413 result_too_large and the router serves everyone on', async (_what, sql, limit) => {
    const marker = `budget-${Math.random().toString(36).slice(2)}`
    const before = process.memoryUsage().rss
    const started = performance.now()
    const answer = await query<{ error: { code: string; limit: string } }>(
      router,
      tenant,
      `/* ${marker} */ ${sql}`,
    )
    const ms = performance.now() - started
    const after = process.memoryUsage().rss
    console.log(`${_what}: ${answer.status} in ${Math.round(ms)} ms; RSS ${mb(before)} -> ${mb(after)}`)
    expect(answer.status).toBe(413)
    expect(answer.body.error).toMatchObject({ code: 'result_too_large', limit })
    // Never buffered whole: the process did not take the value (or the rows) in.
    expect(after - before).toBeLessThan(200 * 1024 * 1024)
    expect(await eventually(async () => ((await running(marker)) === 0 ? true : undefined))).toBe(true)
    const next = await query(router, tenant, 'select 1 as one')
    expect(next.status).toBe(200)
  })
})

describe('the deadline and the client: a cancelled query leaves nothing running', () => {
  let router: RunningRouter
  let tenant: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ requestTimeoutMs: 500 })
    tenant = await tenantWithKey(SHARD)
  })

  it.each([
    ['a read', 'read'],
    ['a write', 'write'],
  ])('%s past the deadline gets 504 query_timeout and the shard shows it cancelled', async (_what, kind) => {
    const marker = `deadline-${Math.random().toString(36).slice(2)}`
    const sql =
      kind === 'read'
        ? `/* ${marker} */ select pg_sleep(5)`
        : `/* ${marker} */ insert into businesses (tenant_id, name) select $1, 'never' from pg_sleep(5)`
    const started = performance.now()
    const answer = await query<{ error: { code: string } }>(
      router,
      tenant,
      sql,
      kind === 'write' ? [tenant.id] : [],
    )
    console.log(
      `${_what} past a 500 ms deadline: ${answer.status} after ${Math.round(performance.now() - started)} ms`,
    )
    expect(answer.status).toBe(504)
    expect(answer.body.error.code).toBe('query_timeout')
    expect(await running(marker)).toBe(0)
    const [written] = await admin`select count(*)::int as n from businesses where tenant_id = ${tenant.id}`
    expect(written?.n).toBe(0)
    // The connection that was cancelled serves the next request, which the cancel does not reach.
    const next = await query(router, tenant, 'select 1 as one', [], {
      headers: kind === 'write' ? { 'x-switchyard-consistency': 'strong' } : {},
    })
    expect(next.status).toBe(200)
  })

  it('a client that disconnects mid-query leaves no running query behind', async () => {
    const marker = `gone-${Math.random().toString(36).slice(2)}`
    const controller = new AbortController()
    const request = fetch(`${router.url}/v1/query`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${tenant.key}`,
        'x-tenant-id': tenant.id,
        'content-type': 'application/json',
      },
      body: JSON.stringify({ sql: `/* ${marker} */ select pg_sleep(20)`, params: [], method: 'all' }),
      signal: controller.signal,
    }).catch((error: Error) => error.name)
    await eventually(async () => ((await running(marker)) > 0 ? true : undefined))
    controller.abort()
    expect(await request).toBe('AbortError')
    // Within 5 s (eventually's bound), long before the 20 s sleep would have ended on its own.
    const started = performance.now()
    await eventually(async () => ((await running(marker)) === 0 ? true : undefined), 5_000)
    console.log(`client gone: the shard's query ended ${Math.round(performance.now() - started)} ms later`)
  })
})

describe("a tenant's share of a node's pool", () => {
  it('one tenant running 50 concurrent pg_sleep(5) holds a quarter of the pool; another tenant is served as before', async () => {
    const router = await startTestRouter({ poolSize: 20, tenantQueue: 64, requestTimeoutMs: 6_000 })
    const hog = await tenantWithKey(SHARD)
    const victim = await tenantWithKey(SHARD)
    const marker = `hog-${Math.random().toString(36).slice(2)}`
    const point = 'select id, name from customers where tenant_id = $1 limit 1'
    const timings = async (n: number) => {
      const ms: number[] = []
      for (let i = 0; i < n; i++) {
        const started = performance.now()
        const answer = await query(router, victim, point, [victim.id], {
          headers: { 'x-switchyard-consistency': 'strong' },
        })
        ms.push(performance.now() - started)
        expect(answer.status).toBe(200)
      }
      return ms.sort((a, b) => a - b)
    }
    const p99 = (ms: number[]) => ms[Math.min(ms.length - 1, Math.floor(ms.length * 0.99))] ?? 0
    const quiet = await timings(200)
    const hogging = Array.from({ length: 50 }, () =>
      query(router, hog, `/* ${marker} */ select pg_sleep(5)`, [], {
        headers: { 'x-switchyard-consistency': 'strong' },
      }),
    )
    await eventually(async () => ((await running(marker)) >= 5 ? true : undefined))
    const busy = await timings(200)
    const holding = await running(marker)
    console.log(
      `victim p99 ${p99(quiet).toFixed(1)} ms alone, ${p99(busy).toFixed(1)} ms with the hog's 50 pg_sleep(5) running (the hog holds ${holding} of 20 connections)`,
    )
    // The structure, not a timing: the hog never holds more than its quarter of the primary's pool.
    expect(holding).toBe(5)
    const answers = await Promise.all(hogging)
    expect(answers.every((answer) => answer.status === 200)).toBe(false)
    expect(answers.filter((answer) => answer.status === 200).length).toBeGreaterThanOrEqual(5)
  }, 120_000)

  it('past its queue a tenant gets 429 tenant_busy with Retry-After; a full pool gives 503 pool_timeout', async () => {
    const router = await startTestRouter({
      poolSize: 2,
      tenantConnections: 1,
      tenantQueue: 1,
      poolWaitMs: 200,
      requestTimeoutMs: 5_000,
    })
    const a = await tenantWithKey(SHARD)
    const b = await tenantWithKey(SHARD)
    const c = await tenantWithKey(SHARD)
    const strong = { headers: { 'x-switchyard-consistency': 'strong' } }
    const sleepA = [0, 1, 2].map(() => query(router, a, 'select pg_sleep(0.6)', [], strong))
    const sleepB = query(router, b, 'select pg_sleep(0.6)', [], strong)
    await new Promise((resolve) => setTimeout(resolve, 150))
    const third = await query<{ error: { code: string } }>(router, c, 'select 1', [], strong)
    const answersA = await Promise.all(sleepA)
    expect((await sleepB).status).toBe(200)
    const statusesA = answersA.map((answer) => answer.status).sort()
    expect(statusesA).toEqual([200, 200, 429])
    const busy = answersA.find((answer) => answer.status === 429)
    expect(busy?.headers.get('retry-after')).toBe('1')
    expect(third.status).toBe(503)
    expect(third.body.error.code).toBe('pool_timeout')
    expect(third.headers.get('retry-after')).toBe('1')
  })
})
