import { Redis } from 'ioredis'
import { describe, expect } from 'vitest'
import { withDirectory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { keys } from '../src/directory/redis.ts'
import { createApp } from '../src/router/app.ts'
import { createMetrics } from '../src/router/metrics.ts'
import type { RunningRouter } from '../src/router/server.ts'
import { answers, withAdmin } from '../src/shard/connection.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { post, query, startNode, stopNode } from './router-support.ts'
import { eventually, shard, topology } from './support.ts'

/**
 * The router under faults (invariants 1 and 4): nodes of the shared topology are stopped for a moment
 * and every test starts them again, in `finally`, and waits until they answer (and replicas stream)
 * before it ends.
 */

interface ErrorBody {
  error: { code: string; message: string }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const eventual = { headers: { 'x-switchyard-consistency': 'eventual' } }
const insertCustomer = (router: RunningRouter, tenant: TestTenant, name: string) =>
  query(router, tenant, 'insert into customers (tenant_id, name) values ($1, $2) returning name', [
    tenant.id,
    name,
  ])

async function timedQuery<T = { rows: unknown[] }>(run: () => ReturnType<typeof query<T>>) {
  const started = performance.now()
  const answer = await run()
  return { ...answer, ms: performance.now() - started }
}

/** Starts a stopped node again and waits until it answers. */
async function restart(name: string, url?: string): Promise<void> {
  await startNode(name)
  if (url) await eventually(async () => ((await answers(url)) ? true : undefined), 30_000)
}

/** Until the shard's replica streams from its primary again and has replayed what the primary has now. */
async function replicaCaughtUp(shardId: string): Promise<void> {
  const { primary, replicas } = shard(shardId)
  const replica = replicas[0] as string
  await eventually(async () => {
    try {
      const streaming = await withAdmin(replica, async (sql) => {
        const [row] = await sql<{ status: string }[]>`select status from pg_stat_wal_receiver`
        return row?.status === 'streaming'
      })
      if (!streaming) return undefined
      const [head] = await withAdmin(primary, (sql) => sql`select pg_current_wal_lsn()::text as lsn`)
      const replayed = await withAdmin(
        replica,
        (sql) => sql`select pg_last_wal_replay_lsn() >= ${head?.lsn}::pg_lsn as ok`,
      )
      return replayed[0]?.ok ? true : undefined
    } catch {
      return undefined
    }
  }, 60_000)
}

/** The value of one sample of `/metrics` text whose labels include `labels` (any order). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (!match || match[1] !== name) continue
    const present = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/([a-zA-Z_]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]),
    )
    if (Object.entries(labels).every(([key, value]) => present[key] === value)) return Number(match[3])
  }
  return undefined
}

const metricsOf = async (router: RunningRouter) => (await fetch(`${router.url}/metrics`)).text()

/** A short-lived client of the topology's Redis, for looking at what the router stored there. */
async function inRedis<T>(use: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis(topology().redis as string, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  })
  try {
    await redis.connect()
    return await use(redis)
  } finally {
    redis.disconnect()
  }
}

const rateKey = (tenant: TestTenant) => keys.rate(tenant.id, Math.floor(Date.now() / 1000 / 3600))

describe('health and metrics endpoints', () => {
  it('/healthz and /readyz answer, /metrics exposes the router figures with samples', async () => {
    const router = await startTestRouter()
    const tenant = await tenantWithKey('shard-1')
    const health = await fetch(`${router.url}/healthz`)
    expect(health.status).toBe(200)
    expect(await health.json()).toEqual({ ok: true })
    const ready = await fetch(`${router.url}/readyz`)
    expect(ready.status).toBe(200)
    expect(await ready.json()).toEqual({ ready: true })

    expect((await insertCustomer(router, tenant, 'metrics')).status).toBe(200)
    expect((await query(router, tenant, 'select 1 as one', [], eventual)).status).toBe(200)
    expect((await post(router, '/v1/query', '{nope', { 'x-tenant-id': tenant.id })).status).toBe(400)

    const response = await fetch(`${router.url}/metrics`)
    expect(response.status).toBe(200)
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/)
    const text = await response.text()
    for (const name of [
      'switchyard_request_duration_seconds',
      'switchyard_errors_total',
      'switchyard_route_lookups_total',
      'switchyard_replica_lag_bytes',
      'switchyard_pool_connections_in_use',
      'switchyard_buffer_wait_seconds',
    ]) {
      expect(text, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'))
    }
    expect(
      sample(text, 'switchyard_request_duration_seconds_count', {
        protocol: 'pg-proxy',
        shard: 'shard-1',
        role: 'primary',
        outcome: 'ok',
      }),
    ).toBeGreaterThanOrEqual(1)
    expect(sample(text, 'switchyard_errors_total', { code: 'invalid_json' })).toBe(1)
    expect(sample(text, 'switchyard_route_lookups_total', { layer: 'directory' })).toBeGreaterThanOrEqual(1)
    expect(
      sample(text, 'switchyard_replica_lag_bytes', { node: 'shard-1-replica-1' }),
    ).toBeGreaterThanOrEqual(0)
    // Nothing is in flight any more: every connection taken for a transaction was given back.
    expect(sample(text, 'switchyard_pool_connections_in_use', { node: 'shard-1-primary' })).toBe(0)
  })
})

describe('bad input never crashes the router', () => {
  it('answers 4xx JSON with stable codes, then serves a normal request', async () => {
    const router = await startTestRouter({ maxBodyBytes: 1024, maxParams: 3 })
    const tenant = await tenantWithKey('shard-1')
    const auth = { authorization: `Bearer ${tenant.key}`, 'x-tenant-id': tenant.id }
    const send = async (path: string, init: RequestInit) => {
      const response = await fetch(`${router.url}${path}`, init)
      return {
        status: response.status,
        type: response.headers.get('content-type'),
        body: (await response.json()) as ErrorBody,
      }
    }
    const postJson = (body: string, headers: Record<string, string> = auth) =>
      send('/v1/query', { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
    const valid = (extra: object = {}) => JSON.stringify({ sql: 'select 1 as one', method: 'all', ...extra })
    // A body without content-length (chunked): the limit must hold while streaming too.
    const chunked = () => {
      const chunk = new TextEncoder().encode(`"${'x'.repeat(500)}",`)
      let sent = 0
      return new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent++ < 10) controller.enqueue(chunk)
          else controller.close()
        },
      })
    }

    const cases: [string, () => ReturnType<typeof send>, number, string][] = [
      ['invalid JSON', () => postJson('{"sql": "select 1",'), 400, 'invalid_json'],
      ['an empty body', () => postJson(''), 400, 'invalid_json'],
      ['a body that is not a query', () => postJson('{"query": "select 1"}'), 400, 'invalid_input'],
      [
        'a body over maxBodyBytes',
        () => postJson(valid({ params: ['x'.repeat(2000)] })),
        413,
        'body_too_large',
      ],
      [
        'a chunked body over maxBodyBytes',
        () =>
          send('/v1/query', {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...auth },
            body: chunked(),
            duplex: 'half',
          } as RequestInit),
        413,
        'body_too_large',
      ],
      [
        'too many params',
        () => postJson(JSON.stringify({ sql: 'select $1, $2, $3, $4', params: [1, 2, 3, 4], method: 'all' })),
        400,
        'too_many_params',
      ],
      [
        'a missing x-tenant-id',
        () => postJson(valid(), { authorization: auth.authorization }),
        400,
        'invalid_input',
      ],
      [
        'a malformed tenant id',
        () => postJson(valid(), { ...auth, 'x-tenant-id': `${tenant.id}'; drop table customers; --` }),
        400,
        'invalid_input',
      ],
      [
        'an unknown consistency',
        () => postJson(valid(), { ...auth, 'x-switchyard-consistency': 'linearizable' }),
        400,
        'invalid_input',
      ],
      [
        'an unknown path',
        () => send('/v2/query', { method: 'POST', headers: auth, body: valid() }),
        404,
        'not_found',
      ],
      ['a wrong method', () => send('/v1/query', { method: 'GET', headers: auth }), 404, 'not_found'],
      ['a wrong method on /healthz', () => send('/healthz', { method: 'DELETE' }), 404, 'not_found'],
    ]
    for (const [name, run, status, code] of cases) {
      const answer = await run()
      expect({ name, status: answer.status, code: answer.body.error?.code }).toEqual({ name, status, code })
      expect(answer.type, name).toMatch(/^application\/json/)
      expect(answer.body.error.message.length, name).toBeGreaterThan(0)
    }

    const normal = await query(router, tenant, 'select $1::int + $2::int as sum', [2, 3])
    expect(normal.status).toBe(200)
    expect(normal.body).toEqual({ rows: [{ sum: 5 }] })
    expect((await fetch(`${router.url}/healthz`)).status).toBe(200)
    const text = await metricsOf(router)
    expect(sample(text, 'switchyard_errors_total', { code: 'internal' })).toBeUndefined()
  })
})

describe('buffering while a tenant is frozen (invariant 6)', () => {
  it('holds a write for the buffer window, then 503 tenant_moving with Retry-After', async () => {
    const router = await startTestRouter({ bufferWindowMs: 300 })
    const tenant = await tenantWithKey('shard-3')
    const directory = connect(topology().directory)
    expect((await insertCustomer(router, tenant, 'before the fence')).status).toBe(200)
    try {
      await directory`update tenants set state = 'frozen' where id = ${tenant.id}`
      await router.app.routes.invalidate(tenant.id)
      const held = await timedQuery<ErrorBody>(() =>
        query(router, tenant, 'insert into customers (tenant_id, name) values ($1, $2)', [tenant.id, 'held']),
      )
      console.log(
        `write held while frozen answered ${held.status} after ${held.ms.toFixed(0)} ms (window 300 ms)`,
      )
      expect(held.status).toBe(503)
      expect(held.body.error.code).toBe('tenant_moving')
      expect(Number(held.headers.get('retry-after'))).toBeGreaterThan(0)
      expect(held.ms).toBeGreaterThanOrEqual(250)
      expect(held.ms).toBeLessThan(2_000)
    } finally {
      await directory`update tenants set state = 'active' where id = ${tenant.id}`
      await router.app.routes.invalidate(tenant.id)
    }
    const admin = connect(shard('shard-3').primary)
    const [rows] =
      await admin`select count(*)::int as n from customers where tenant_id = ${tenant.id} and name = 'held'`
    expect(rows?.n).toBe(0)
    expect(
      sample(await metricsOf(router), 'switchyard_buffer_wait_seconds_count', { outcome: 'timeout' }),
    ).toBe(1)
  })

  it('releases a held write with 200 when the tenant turns active within the window', async () => {
    const router = await startTestRouter({ bufferWindowMs: 300 })
    const tenant = await tenantWithKey('shard-3')
    const directory = connect(topology().directory)
    expect((await insertCustomer(router, tenant, 'before the fence')).status).toBe(200)
    try {
      await directory`update tenants set state = 'frozen' where id = ${tenant.id}`
      await router.app.routes.invalidate(tenant.id)
      const pending = timedQuery(() => insertCustomer(router, tenant, 'released'))
      await sleep(150)
      await directory`update tenants set state = 'active' where id = ${tenant.id}`
      await router.app.routes.invalidate(tenant.id)
      const released = await pending
      console.log(
        `write held while frozen released with ${released.status} after ${released.ms.toFixed(0)} ms`,
      )
      expect(released.status).toBe(200)
      expect(released.body).toEqual({ rows: [{ name: 'released' }] })
      expect(released.ms).toBeGreaterThanOrEqual(140)
    } finally {
      await directory`update tenants set state = 'active' where id = ${tenant.id}`
      await router.app.routes.invalidate(tenant.id)
    }
    expect(
      sample(await metricsOf(router), 'switchyard_buffer_wait_seconds_count', { outcome: 'released' }),
    ).toBe(1)
  })
})

describe('graceful shutdown', () => {
  it('lets a slow request in flight finish with 200 and refuses new connections', async () => {
    const router = await startTestRouter()
    const tenant = await tenantWithKey('shard-1')
    const marker = `slow-${Math.random().toString(36).slice(2)}`
    let slowDoneAt = 0
    // A wait is a read: `strong` keeps it on the primary, where the test looks for it.
    const slow = query(router, tenant, `/* ${marker} */ select pg_sleep(0.5)::text as slept`, [], {
      headers: { 'x-switchyard-consistency': 'strong' },
    }).then((answer) => {
      slowDoneAt = performance.now()
      return answer
    })
    // In flight means running on the shard, not just sent.
    const admin = connect(shard('shard-1').primary)
    await eventually(async () => {
      const rows =
        await admin`select 1 from pg_stat_activity where query like ${`%${marker}%`} and pid <> pg_backend_pid()`
      return rows.length ? true : undefined
    })

    const closing = router.close().then(() => performance.now())
    expect(router.app.ready()).toBe(false)
    // The listener closes in the same tick, so /readyz cannot be asked over a new connection: ask the app.
    // A second app on the same dependencies needs its own registry: the admin API registers the mover's
    // metrics on the one it is given.
    const readyz = await createApp({ ...router.app, metrics: createMetrics() }).request('/readyz')
    expect(readyz.status).toBe(503)
    expect(await readyz.json()).toEqual({ ready: false })
    const refused = await fetch(`${router.url}/healthz`).then(
      (response) => `answered ${response.status}`,
      (error: Error & { cause?: { code?: string } }) => error.cause?.code,
    )
    expect(refused).toBe('ECONNREFUSED')

    const answer = await slow
    expect(answer.status).toBe(200)
    expect(answer.body).toEqual({ rows: [{ slept: '' }] })
    // The connection that carried it closes too: a keep-alive client cannot go on sending requests.
    expect(answer.headers.get('connection')).toBe('close')
    const after = await fetch(`${router.url}/healthz`).then(
      (response) => `answered ${response.status}`,
      (error: Error & { cause?: { code?: string } }) => error.cause?.code,
    )
    expect(after).toBe('ECONNREFUSED')
    const closedAt = await closing
    console.log(`close() resolved ${(closedAt - slowDoneAt).toFixed(0)} ms after the slow request answered`)
    expect(closedAt).toBeGreaterThanOrEqual(slowDoneAt)
    expect(closedAt - slowDoneAt).toBeLessThan(1_000)
  })
})

describe('a replica stopped (invariant 4)', () => {
  it('reads go to the primary meanwhile and come back to the replica once it has caught up', async () => {
    const router = await startTestRouter({ healthIntervalMs: 50 })
    // Its health monitor will not poll again during the test: only the failing request can tell it.
    const unpolled = await startTestRouter({ healthIntervalMs: 60_000 })
    const tenant = await tenantWithKey('shard-1')
    expect((await insertCustomer(router, tenant, 'before')).status).toBe(200)
    const readNode = async (through: RunningRouter) => {
      const answer = await query(through, tenant, 'select name from customers order by name', [], eventual)
      expect(answer.status).toBe(200)
      return answer.headers.get('x-switchyard-node')
    }
    for (const through of [router, unpolled])
      await eventually(async () => ((await readNode(through)) === 'shard-1-replica-1' ? true : undefined))

    await stopNode('shard-1-replica-1')
    try {
      // A replica that dies between two health polls: the read that finds it gone is retried on the primary.
      const between = await query(unpolled, tenant, 'select name from customers', [], eventual)
      expect(between.status, JSON.stringify(between.body)).toBe(200)
      expect(between.body).toEqual({ rows: [{ name: 'before' }] })
      expect(between.headers.get('x-switchyard-node')).toBe('shard-1-primary')
      const nodes = []
      for (let i = 0; i < 10; i++) {
        const answer = await timedQuery(() =>
          query(router, tenant, 'select name from customers', [], eventual),
        )
        expect(answer.status, JSON.stringify(answer.body)).toBe(200)
        expect(answer.body).toEqual({ rows: [{ name: 'before' }] })
        nodes.push(answer.headers.get('x-switchyard-node'))
        if (i === 0) console.log(`first read after the replica stopped: ${answer.ms.toFixed(1)} ms`)
      }
      expect(new Set(nodes)).toEqual(new Set(['shard-1-primary']))
      // A write and a read-your-writes read while the replica is away.
      expect((await insertCustomer(router, tenant, 'during')).status).toBe(200)
      const read = await query(router, tenant, 'select name from customers order by name')
      expect(read.body).toEqual({ rows: [{ name: 'before' }, { name: 'during' }] })
      expect(read.headers.get('x-switchyard-node')).toBe('shard-1-primary')
    } finally {
      await restart('shard-1-replica-1', shard('shard-1').replicas[0])
      await replicaCaughtUp('shard-1')
    }

    expect((await insertCustomer(router, tenant, 'after')).status).toBe(200)
    const back = await eventually(async () => {
      const answer = await query<{ rows: { name: string }[] }>(
        router,
        tenant,
        'select name from customers order by name',
      )
      return answer.headers.get('x-switchyard-node') === 'shard-1-replica-1' ? answer : undefined
    })
    // Session consistency: the replica serves the read only once it has the write.
    expect(back.body.rows.map((row) => row.name)).toEqual(['after', 'before', 'during'])
  })
})

describe('Redis stopped (invariant 1)', () => {
  it('reads and writes keep working on process-local state, and Redis is used again once it is back', async () => {
    const router = await startTestRouter()
    const tenant = await tenantWithKey('shard-2')
    expect((await insertCustomer(router, tenant, 'before')).status).toBe(200)
    // The router uses Redis while it is there: the hourly counter and the last-write LSN are in it.
    expect(Number(await inRedis((redis) => redis.get(rateKey(tenant))))).toBe(1)
    expect(await inRedis((redis) => redis.exists(keys.lastWrite(tenant.id, tenant.shard)))).toBe(1)

    await stopNode('redis')
    try {
      const fresh = await tenantWithKey('shard-2')
      const outcomes = []
      for (const [who, sql] of [
        [tenant, 'select count(*)::int as n from customers'],
        [fresh, 'select count(*)::int as n from customers'],
      ] as const) {
        outcomes.push(await timedQuery(() => query(router, who, sql)))
        outcomes.push(await timedQuery(() => insertCustomer(router, who, 'without redis')))
        outcomes.push(await timedQuery(() => query(router, who, sql)))
      }
      console.log(`requests with Redis stopped: ${outcomes.map((a) => a.ms.toFixed(1)).join(', ')} ms`)
      expect(outcomes.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200])
      expect(outcomes.map((a) => a.body)).toEqual([
        { rows: [{ n: 1 }] },
        { rows: [{ name: 'without redis' }] },
        { rows: [{ n: 2 }] },
        { rows: [{ n: 0 }] },
        { rows: [{ name: 'without redis' }] },
        { rows: [{ n: 1 }] },
      ])
    } finally {
      await startNode('redis')
    }

    // Redis came back empty: the counter key shows up again only if the router uses Redis again.
    await eventually(async () => {
      expect((await query(router, tenant, 'select 1 as one')).status).toBe(200)
      return (await inRedis((redis) => redis.exists(rateKey(tenant)))) ? true : undefined
    }, 15_000)
    const before = Number(await inRedis((redis) => redis.get(rateKey(tenant))))
    expect((await insertCustomer(router, tenant, 'redis back')).status).toBe(200)
    expect(Number(await inRedis((redis) => redis.get(rateKey(tenant))))).toBe(before + 1)
    expect(await inRedis((redis) => redis.exists(keys.lastWrite(tenant.id, tenant.shard)))).toBe(1)
  })
})

describe('directory stopped (invariant 1)', () => {
  it('serves cached tenants past the route TTL, refuses uncached ones with 503 directory_unavailable', async () => {
    // Without Redis, so a route past its TTL can only come from this process's stale copy.
    const router = await startTestRouter({ routeCacheTtlMs: 200 }, { withoutRedis: true })
    const withRedis = await startTestRouter({ routeCacheTtlMs: 200 })
    const warm = await tenantWithKey('shard-1')
    const cold = await tenantWithKey('shard-1')
    const admin = await withDirectory(topology(), (directory) => createKey(directory, { scope: 'admin' }))
    const warmAsAdmin = { ...warm, key: admin.key }
    const coldAsAdmin = { ...cold, key: admin.key }
    for (const r of [router, withRedis]) {
      expect((await insertCustomer(r, warm, 'before')).status).toBe(200)
      // The admin key is seen (and cached) too.
      expect((await query(r, warmAsAdmin, 'select 1 as one')).status).toBe(200)
    }

    await stopNode('directory')
    try {
      await sleep(400)
      for (const r of [router, withRedis]) {
        const read = await timedQuery(() => query(r, warm, 'select count(*)::int as n from customers'))
        const write = await timedQuery(() => insertCustomer(r, warm, 'directory down'))
        const asAdmin = await query(r, warmAsAdmin, 'select 1 as one')
        console.log(
          `directory down, route past its TTL: read ${read.ms.toFixed(1)} ms, write ${write.ms.toFixed(1)} ms`,
        )
        expect([read.status, write.status, asAdmin.status]).toEqual([200, 200, 200])
        expect(write.headers.get('x-switchyard-shard')).toBe('shard-1')

        // A seen key, an uncached route: the route lookup is what fails.
        const uncached = await query<ErrorBody>(r, coldAsAdmin, 'select 1 as one')
        expect(uncached.status).toBe(503)
        expect(uncached.body.error.code).toBe('directory_unavailable')
        expect(uncached.body.error.message).toMatch(/^the directory is unavailable/)
        expect(Number(uncached.headers.get('retry-after'))).toBeGreaterThan(0)
        // An unseen key cannot be checked either.
        const unseen = await query<ErrorBody>(r, cold, 'select 1 as one')
        expect(unseen.status).toBe(503)
        expect(unseen.body.error.code).toBe('directory_unavailable')
        expect((await fetch(`${r.url}/healthz`)).status).toBe(200)
      }
      expect(
        sample(await metricsOf(router), 'switchyard_route_lookups_total', { layer: 'stale' }),
      ).toBeGreaterThan(0)
      // Stale reads went through the TTL again and again: past it, still served.
      await sleep(300)
      expect((await query(router, warm, 'select 1 as one')).status).toBe(200)
    } finally {
      await restart('directory', topology().directory)
    }

    const [rows] = await withAdmin(
      shard('shard-1').primary,
      (sql) => sql`select count(*)::int as n from customers where tenant_id = ${warm.id}`,
    )
    expect(rows?.n).toBe(4)
    // Once the directory is back, the tenant that could not be served is.
    await eventually(async () =>
      (await query(router, cold, 'select 1 as one')).status === 200 ? true : undefined,
    )
    expect((await query(withRedis, cold, 'select 1 as one')).status).toBe(200)
  })
})

describe('a shard primary stopped (invariant 4)', () => {
  it("fails that shard's writes fast with 503, serves its reads from the replica, leaves other shards alone", async () => {
    const router = await startTestRouter({ healthIntervalMs: 100 })
    // Its health monitor will not poll again during the test: only the failing request can tell it.
    const unpolled = await startTestRouter({ healthIntervalMs: 60_000 })
    const victim = await tenantWithKey('shard-2')
    const others = [await tenantWithKey('shard-1'), await tenantWithKey('shard-3')]
    for (const tenant of [victim, ...others])
      expect((await insertCustomer(router, tenant, 'before')).status).toBe(200)
    expect(
      (
        await query(unpolled, victim, 'select 1 as one', [], {
          headers: { 'x-switchyard-consistency': 'strong' },
        })
      ).status,
    ).toBe(200)
    await replicaCaughtUp('shard-2')

    await stopNode('shard-2-primary')
    try {
      const writes = []
      // A primary that dies between two health polls (first two), then one the monitor saw go.
      for (const [i, through] of [unpolled, unpolled, router, router, router].entries()) {
        writes.push(
          await timedQuery<ErrorBody>(() =>
            query(through, victim, 'insert into customers (tenant_id, name) values ($1, $2)', [
              victim.id,
              `lost ${i}`,
            ]),
          ),
        )
      }
      const figures = writes.map((w) => w.ms.toFixed(1)).join(', ')
      console.log(`writes to a stopped primary failed after ${figures} ms (buffer window 5000 ms)`)
      for (const write of writes) {
        expect(write.status).toBe(503)
        expect(write.body.error.code).toBe('shard_unavailable')
        expect(Number(write.headers.get('retry-after'))).toBeGreaterThan(0)
        expect(write.ms).toBeLessThan(2_000)
      }

      // Reads keep going to the replica, round after round of the health monitor (every 100 ms here).
      for (let i = 0; i < 10; i++) {
        const read = await query(router, victim, 'select name from customers', [], eventual)
        expect(read.status, JSON.stringify(read.body)).toBe(200)
        expect(read.body).toEqual({ rows: [{ name: 'before' }] })
        expect(read.headers.get('x-switchyard-node')).toBe('shard-2-replica-1')
        await sleep(50)
      }

      for (const tenant of others) {
        const write = await timedQuery(() => insertCustomer(router, tenant, 'during'))
        expect(write.status).toBe(200)
        expect(write.headers.get('x-switchyard-node')).toBe(`${tenant.shard}-primary`)
        const read = await query(router, tenant, 'select name from customers order by name')
        expect(read.status).toBe(200)
        expect(read.body).toEqual({ rows: [{ name: 'before' }, { name: 'during' }] })
      }
    } finally {
      await restart('shard-2-primary', shard('shard-2').primary)
    }

    const started = performance.now()
    const back = await eventually(async () => {
      const write = await insertCustomer(router, victim, 'after')
      return write.status === 200 ? write : undefined
    }, 15_000)
    console.log(
      `writes succeed again ${(performance.now() - started).toFixed(0)} ms after the primary answered`,
    )
    expect(back.headers.get('x-switchyard-node')).toBe('shard-2-primary')
    await replicaCaughtUp('shard-2')
    const [rows] = await withAdmin(
      shard('shard-2').primary,
      (sql) =>
        sql`select array_agg(name order by name) as names from customers where tenant_id = ${victim.id}`,
    )
    expect(rows?.names).toEqual(['after', 'before'])
  })
})
