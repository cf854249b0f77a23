import { describe, expect } from 'vitest'
import { seedDemoTenant } from '../examples/appointments/demo.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { openRedis, redisReady } from '../src/directory/redis.ts'
import { createAdmission } from '../src/router/admission.ts'
import type { RunningRouter } from '../src/router/server.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { newApiRequest, post, query, wireClient } from './router-support.ts'
import { eventually, newTenantId, shard, topology } from './support.ts'

/** A quota of `n` for statements that name no API request (as every request here). */
const untagged = (n: number) => ({ apiRequests: n, statements: n, perApiRequest: n })

let routerA: RunningRouter
let routerB: RunningRouter
let alice: TestTenant
let bob: TestTenant

it.beforeAll(async () => {
  routerA = await startTestRouter()
  routerB = await startTestRouter()
  alice = await tenantWithKey('shard-1')
  bob = await tenantWithKey('shard-1')
  const admin = connect(shard('shard-1').primary)
  await seedDemoTenant(admin, alice.id, 'Alice')
  await seedDemoTenant(admin, bob.id, 'Bob')
  // Reads go to a replica only once it has replayed the seed: wait for that, so the tests below see it.
  const replica = connect(shard('shard-1').replicas[0] as string)
  await eventually(async () =>
    (await replica`select 1 from customers where tenant_id = ${bob.id} limit 1`).length ? true : undefined,
  )
})

describe('routing (invariant 4)', () => {
  it('reads land on the shard replica, writes on the primary, with the shard and node named', async () => {
    const read = await query(routerA, alice, 'select count(*)::int as n from customers', [], {
      headers: { 'x-switchyard-consistency': 'eventual' },
    })
    expect(read.status).toBe(200)
    expect(read.body).toEqual({ rows: [{ n: 30 }] })
    expect(read.headers.get('x-switchyard-shard')).toBe('shard-1')
    expect(read.headers.get('x-switchyard-node')).toBe('shard-1-replica-1')
    expect(read.headers.get('x-switchyard-lsn')).toBeNull()

    const write = await query(
      routerA,
      alice,
      'insert into customers (tenant_id, name) values ($1, $2) returning id',
      [alice.id, 'Nueva'],
    )
    expect(write.status).toBe(200)
    expect(write.headers.get('x-switchyard-node')).toBe('shard-1-primary')
    expect(write.headers.get('x-switchyard-lsn')).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/)
  })

  it('strong consistency sends a read to the primary', async () => {
    const read = await query(routerA, alice, 'select 1 as one', [], {
      headers: { 'x-switchyard-consistency': 'strong' },
    })
    expect(read.headers.get('x-switchyard-node')).toBe('shard-1-primary')
  })

  it('locking reads and data-modifying CTEs go to the primary', async () => {
    const locking = await query(routerA, alice, 'select id from customers order by id limit 1 for update')
    expect(locking.headers.get('x-switchyard-node')).toBe('shard-1-primary')
    const cte = await query(
      routerA,
      alice,
      "with c as (update customers set notes = 'cte' where name = 'Customer 001' returning id) select count(*)::int as n from c",
    )
    expect(cte.body).toEqual({ rows: [{ n: 1 }] })
    expect(cte.headers.get('x-switchyard-node')).toBe('shard-1-primary')
  })

  it('a write through one router is seen by the next read through another (read-your-writes)', async () => {
    for (let round = 0; round < 20; round++) {
      const name = `ryw-${round}-${Date.now()}`
      const write = await query(routerA, alice, 'insert into customers (tenant_id, name) values ($1, $2)', [
        alice.id,
        name,
      ])
      expect(write.status).toBe(200)
      const read = await query(
        routerB,
        alice,
        'select name from customers where tenant_id = $1 and name = $2',
        [alice.id, name],
      )
      expect(read.status).toBe(200)
      expect(read.body).toEqual({ rows: [{ name }] })
    }
  })

  it('a statement given the wrong number of parameters is the client’s error, and the replica stays in use', async () => {
    const wrong = await query(routerA, alice, 'select name from customers where tenant_id = $1 and id = $2', [
      alice.id,
    ])
    expect(wrong.status).toBe(400)
    expect(wrong.body).toMatchObject({ error: { code: 'sql_error', sqlstate: '08P01' } })
    // `eventual`: earlier tests' writes may not have replayed yet on a busy machine, and that is not
    // what this checks; the replica must still be healthy and in use.
    const next = await query(routerA, alice, 'select 1 as one', [], {
      headers: { 'x-switchyard-consistency': 'eventual' },
    })
    expect(next.status).toBe(200)
    expect(next.headers.get('x-switchyard-node')).toBe('shard-1-replica-1')
  })

  it('a read routed to a replica before admission reported another router’s newer write runs again where the write is', async () => {
    // Replay paused: the replica stays a candidate (tiny lag) but cannot have the write. Router B knows
    // nothing of the write locally, so it reads the replica while admission is under way, then must read
    // again once admission tells it about the write.
    const replica = connect(shard('shard-1').replicas[0] as string)
    const reruns = async () => (await routerB.app.metrics.readsRerun.get()).values[0]?.value ?? 0
    const before = await reruns()
    await replica`select pg_wal_replay_pause()`
    try {
      const name = `rerun-${Date.now()}`
      const write = await query(routerA, alice, 'insert into customers (tenant_id, name) values ($1, $2)', [
        alice.id,
        name,
      ])
      expect(write.status).toBe(200)
      const read = await query(
        routerB,
        alice,
        'select name from customers where tenant_id = $1 and name = $2',
        [alice.id, name],
      )
      expect(read.status).toBe(200)
      expect(read.body).toEqual({ rows: [{ name }] })
      expect(read.headers.get('x-switchyard-node')).toBe('shard-1-primary')
      expect(await reruns()).toBe(before + 1)
    } finally {
      await replica`select pg_wal_replay_resume()`
    }
  })
})

describe('isolation through the router (invariant 3)', () => {
  it("statements naming tenant B's ids return and change nothing for tenant A", async () => {
    const admin = connect(shard('shard-1').primary)
    const [victim] =
      await admin`select id, name from customers where tenant_id = ${bob.id} order by id limit 1`
    const asAlice = (sql: string, params: unknown[]) =>
      query<{ rows: unknown[] }>(routerA, alice, sql, params, {
        headers: { 'x-switchyard-consistency': 'strong' },
      })
    expect((await asAlice('select * from customers where tenant_id = $1', [bob.id])).body.rows).toEqual([])
    expect((await asAlice('select * from customers where id = $1', [victim?.id])).body.rows).toEqual([])
    expect(
      (await asAlice('update customers set name = $2 where tenant_id = $1 returning id', [bob.id, 'pwned']))
        .body.rows,
    ).toEqual([])
    expect(
      (await asAlice('delete from appointments where tenant_id = $1 returning id', [bob.id])).body.rows,
    ).toEqual([])
    const planted = await asAlice('insert into customers (tenant_id, name) values ($1, $2)', [
      bob.id,
      'planted',
    ])
    expect(planted.status).toBe(400)
    expect(planted.body).toMatchObject({ error: { code: 'sql_error', sqlstate: '42501' } })
    const [after] = await admin`
      select (select name from customers where id = ${victim?.id}) as name,
             (select count(*)::int from appointments where tenant_id = ${bob.id}) as appointments,
             (select count(*)::int from customers where tenant_id = ${bob.id} and name in ('pwned', 'planted')) as tampered`
    expect(after).toEqual({ name: victim?.name, appointments: 60, tampered: 0 })
  })

  const forbidden = [
    ['SET', "set app.current_tenant = '00000000-0000-0000-0000-000000000000'"],
    ['RESET', 'reset app.current_tenant'],
    ['SET ROLE', 'set role switchyard'],
    ['set_config inside a SELECT', "select set_config('app.current_tenant', $1, false)"],
    ['DO', 'do $$ begin perform 1; end $$'],
    ['BEGIN', 'begin'],
    ['COMMIT', 'commit'],
    ['DDL', 'create table stolen (id int)'],
    ['DROP', 'drop table customers'],
    ['COPY', 'copy customers to stdout'],
    ['two statements', 'select 1; select 2'],
    ['switchyard.* call', "select switchyard.enter('00000000-0000-0000-0000-000000000000', 1, true)"],
    ['switchyard.* table', 'select * from switchyard.tenant_ownership'],
  ] as const

  it.each(forbidden)(
    '%s is rejected with 400 statement_not_allowed before any shard sees it',
    async (_name, sql) => {
      const marker = `forbidden-${Math.random().toString(36).slice(2)}`
      const text = `/* ${marker} */ ${sql}`
      const answer = await query<{ error: { code: string; message: string } }>(
        routerA,
        alice,
        text,
        sql.includes('$1') ? [alice.id] : [],
      )
      expect(answer.status).toBe(400)
      expect(answer.body.error.code).toBe('statement_not_allowed')
      expect(answer.body.error.message.length).toBeGreaterThan(5)
      for (const node of [shard('shard-1').primary, shard('shard-1').replicas[0] as string]) {
        const seen = await connect(
          node,
        )`select count(*)::int as n from switchyard_stats.pg_stat_statements where query like ${`%${marker}%`}`
        expect(seen[0]?.n).toBe(0)
      }
    },
  )

  it('an app key limited to tenants cannot act for another tenant (403), a bad key gets 401', async () => {
    const other = await query(routerA, { ...alice, id: bob.id }, 'select 1')
    expect(other.status).toBe(403)
    expect(other.body).toMatchObject({ error: { code: 'forbidden' } })
    const bad = await query(routerA, { ...alice, key: `${alice.key.slice(0, -1)}x` }, 'select 1')
    expect(bad.status).toBe(401)
    expect(bad.body).toMatchObject({ error: { code: 'unauthorized' } })
  })

  it('an unknown tenant is a 404', async () => {
    const admin = await withDirectory(topology(), (directory) => createKey(directory, { scope: 'admin' }))
    const nobody = { id: newTenantId(), shard: 'none', key: admin.key }
    const unknown = await query(routerA, nobody, 'select 1')
    expect(unknown.status).toBe(404)
    expect(unknown.body).toMatchObject({ error: { code: 'tenant_unknown' } })
  })
})

describe('rate limits', () => {
  it('with limit N and concurrent clients, exactly N requests pass in the window, then 429', async () => {
    const limit = 25
    const limited = await tenantWithKey('shard-2', { api_rate_limit: limit })
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        query(i % 2 ? routerA : routerB, limited, 'select 1 as one', [], { headers: newApiRequest() }),
      ),
    )
    const passed = answers.filter((a) => a.status === 200)
    const refused = answers.filter((a) => a.status === 429)
    expect(passed).toHaveLength(limit)
    expect(refused).toHaveLength(60 - limit)
    const last = refused[0]
    expect(last?.body).toMatchObject({ error: { code: 'rate_limited' } })
    expect(Number(last?.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(last?.headers.get('ratelimit-limit')).toBe(String(limit))
    expect(passed.map((a) => Number(a.headers.get('ratelimit-remaining'))).sort((x, y) => x - y)).toEqual(
      Array.from({ length: limit }, (_, i) => i),
    )
  })

  it("a tenant's last write is kept per shard: a position in one server's WAL says nothing of another's", async () => {
    const redis = openRedis(topology().redis as string)
    try {
      expect(await redisReady(redis)).toBe(true)
      const admission = createAdmission(redis)
      const tenant = newTenantId()
      await admission.recordWrite(tenant, 'shard-1', 1n << 40n)
      expect((await admission.admit(tenant, 'shard-1', untagged(100))).lastWriteLsn).toBe(1n << 40n)
      expect((await admission.admit(tenant, 'shard-2', untagged(100))).lastWriteLsn).toBeNull()
      expect(admission.localLastWrite(tenant, 'shard-2')).toBeNull()
      // Another router knows it only through Redis, per shard too.
      const other = createAdmission(redis)
      expect((await other.admit(tenant, 'shard-1', untagged(100))).lastWriteLsn).toBe(1n << 40n)
      expect((await other.admit(tenant, 'shard-2', untagged(100))).lastWriteLsn).toBeNull()
    } finally {
      redis.disconnect()
    }
  })

  it('admissions of several tenants sent together count each tenant on its own', async () => {
    const redis = openRedis(topology().redis as string)
    try {
      expect(await redisReady(redis)).toBe(true)
      const admission = createAdmission(redis)
      const [first, second] = [newTenantId(), newTenantId()]
      await admission.recordWrite(second, 'shard-1', 42n)
      // One turn of the event loop: these go to Redis as one script call.
      const answers = await Promise.allSettled([
        ...Array.from({ length: 10 }, () => admission.admit(first, 'shard-1', untagged(7))),
        ...Array.from({ length: 4 }, () => admission.admit(second, 'shard-1', untagged(7))),
      ])
      const passed = (from: number, to: number) =>
        answers.slice(from, to).filter((answer) => answer.status === 'fulfilled') as PromiseFulfilledResult<
          Awaited<ReturnType<typeof admission.admit>>
        >[]
      expect(passed(0, 10).map((answer) => answer.value.remaining)).toEqual([6, 5, 4, 3, 2, 1, 0])
      expect(answers.slice(0, 10).filter((answer) => answer.status === 'rejected')).toHaveLength(3)
      expect(passed(10, 14).map((answer) => answer.value.remaining)).toEqual([6, 5, 4, 3])
      expect(passed(10, 14).every((answer) => answer.value.lastWriteLsn === 42n)).toBe(true)
      expect(passed(0, 10).every((answer) => answer.value.lastWriteLsn === null)).toBe(true)
      expect(admission.overLimit(first)).toBe(true)
      expect(admission.overLimit(second)).toBe(false)
    } finally {
      redis.disconnect()
    }
  })

  it('the global override replaces every tenant limit', async () => {
    const router = await startTestRouter({ rateLimitOverride: 3 })
    const tenant = await tenantWithKey('shard-3')
    const statuses = []
    for (let i = 0; i < 5; i++)
      statuses.push((await query(router, tenant, 'select 1', [], { headers: newApiRequest() })).status)
    expect(statuses).toEqual([200, 200, 200, 429, 429])
  })
})

describe('API requests per hour, as the seed counts them (issue 19)', () => {
  const tag = (id: string) => ({ headers: { 'x-switchyard-request': id } })
  const statusesOf = (answers: { status: number }[]) => answers.map((answer) => answer.status)

  it('a tenant limited to 5 API requests sends 20 statements of 5 through two routers; a 6th request is 429', async () => {
    const limited = await tenantWithKey('shard-2', { api_rate_limit: 5 })
    const ids = Array.from({ length: 5 }, (_, i) => `${limited.id}-api-${i}`)
    const answers = []
    for (let i = 0; i < 20; i++)
      answers.push(
        await query(i % 2 ? routerA : routerB, limited, 'select 1 as one', [], tag(ids[i % 5] as string)),
      )
    expect(statusesOf(answers)).toEqual(answers.map(() => 200))
    expect(answers.every((answer) => answer.headers.get('ratelimit-limit') === '5')).toBe(true)
    expect(answers.map((answer) => answer.headers.get('ratelimit-remaining')).slice(0, 5)).toEqual([
      '4',
      '3',
      '2',
      '1',
      '0',
    ])
    const sixth = await query<{ error: { code: string; message: string } }>(
      routerA,
      limited,
      'select 1 as one',
      [],
      tag('sixth'),
    )
    expect(sixth.status).toBe(429)
    expect(sixth.body.error.code).toBe('rate_limited')
    expect(sixth.body.error.message).toContain('5 API requests per hour')
    expect(Number(sixth.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(sixth.headers.get('ratelimit-limit')).toBe('5')
    expect(sixth.headers.get('ratelimit-remaining')).toBe('0')
    expect(Number(sixth.headers.get('ratelimit-reset'))).toBeGreaterThan(0)
    // The five API requests' further statements still pass, on either router.
    expect((await query(routerB, limited, 'select 2 as two', [], tag(ids[3] as string))).status).toBe(200)
    // A request id that is not 1 to 128 visible ASCII characters is refused before anything counts.
    const bad = await query<{ error: { code: string } }>(routerA, limited, 'select 1', [], tag('a b'))
    expect([bad.status, bad.body.error.code]).toEqual([400, 'invalid_input'])
  })

  it('statements naming no API request count against their own budget (api_rate_limit x statementsPerApiRequest)', async () => {
    const router = await startTestRouter({ statementsPerApiRequest: 2 })
    const limited = await tenantWithKey('shard-2', { api_rate_limit: 5 })
    const untaggedAnswers = []
    for (let i = 0; i < 11; i++)
      untaggedAnswers.push(await query<{ error?: { message: string } }>(router, limited, 'select 1 as one'))
    expect(statusesOf(untaggedAnswers)).toEqual([...Array.from({ length: 10 }, () => 200), 429])
    expect(untaggedAnswers[0]?.headers.get('ratelimit-limit')).toBe('10')
    expect(untaggedAnswers[10]?.body.error?.message).toContain('x-switchyard-request')
    // The API request budget is apart: still whole.
    expect(
      (await query(router, limited, 'select 1', [], tag('first'))).headers.get('ratelimit-remaining'),
    ).toBe('4')
  })

  it('one API request id on everything buys statementsPerApiRequest of them, then the budget, then 429', async () => {
    const router = await startTestRouter({ statementsPerApiRequest: 2 })
    const limited = await tenantWithKey('shard-2', { api_rate_limit: 2 })
    const answers = []
    for (let i = 0; i < 7; i++)
      answers.push(await query<{ error?: { message: string } }>(router, limited, 'select 1', [], tag('same')))
    expect(statusesOf(answers)).toEqual([200, 200, 200, 200, 200, 200, 429])
    // Two as the API request (limit 2), then four of the budget (2 x 2), then refused.
    expect(answers.map((answer) => answer.headers.get('ratelimit-limit'))).toEqual([
      '2',
      '2',
      '4',
      '4',
      '4',
      '4',
      '4',
    ])
    expect(answers[6]?.body.error?.message).toContain('more than 2 of one')
    // On the PostgreSQL port too, with the session's switchyard.request.
    const wire = await startTestRouter({ statementsPerApiRequest: 2 })
    const other = await tenantWithKey('shard-2', { api_rate_limit: 2 })
    const client = wireClient(wire, other)
    await client.connect()
    try {
      await client.query("set switchyard.request = 'page-1'")
      expect((await client.query('show switchyard.request')).rows).toEqual([
        { 'switchyard.request': 'page-1' },
      ])
      for (let i = 0; i < 6; i++) await client.query('select 1')
      await expect(client.query('select 1')).rejects.toMatchObject({ code: '53400' })
      await expect(client.query("set switchyard.request = 'a b'")).rejects.toThrow(/visible ASCII/)
    } finally {
      await client.end()
    }
  })

  it('both hold exactly under concurrency: 50 requests at once through two routers', async () => {
    const limited = await tenantWithKey('shard-3', { api_rate_limit: 10 })
    // 25 API requests of 2 statements each, all at once: exactly 10 requests' statements pass, both of each.
    const ids = Array.from({ length: 25 }, (_, i) => `concurrent-${i}`)
    const sent = ids.flatMap((id) => [id, id])
    const answers = await Promise.all(
      sent.map((id, i) => query(i % 2 ? routerA : routerB, limited, 'select 1 as one', [], tag(id))),
    )
    const passedIds = sent.filter((_, i) => answers[i]?.status === 200)
    expect(passedIds).toHaveLength(20)
    expect(new Set(passedIds).size).toBe(10)
    expect(answers.filter((answer) => answer.status === 429)).toHaveLength(30)
    // Untagged, on a router whose budget is 10 x 2 = 20 statements: 50 at once, exactly 20 pass.
    const budgeted = await startTestRouter({ statementsPerApiRequest: 2 })
    const other = await tenantWithKey('shard-3', { api_rate_limit: 10 })
    const untaggedAnswers = await Promise.all(
      Array.from({ length: 50 }, () => query(budgeted, other, 'select 1 as one')),
    )
    expect(untaggedAnswers.filter((answer) => answer.status === 200)).toHaveLength(20)
    expect(untaggedAnswers.filter((answer) => answer.status === 429)).toHaveLength(30)
  })

  it('POST /v1/limits/consume counts an API request for the application; its statements then pass', async () => {
    const limited = await tenantWithKey('shard-1', { api_rate_limit: 2 })
    const headers = (id?: string) => ({
      authorization: `Bearer ${limited.key}`,
      'x-tenant-id': limited.id,
      ...(id ? { 'x-switchyard-request': id } : {}),
    })
    const consume = (id?: string) =>
      post<{ limit: number; remaining: number; resetSeconds: number; error?: { code: string } }>(
        routerA,
        '/v1/limits/consume',
        {},
        headers(id),
      )
    const first = await consume('checkout-1')
    expect(first.status).toBe(200)
    expect(first.body).toMatchObject({ limit: 2, remaining: 1 })
    expect(first.headers.get('ratelimit-remaining')).toBe('1')
    // The same API request again (a retry of the middleware): not counted twice.
    expect((await consume('checkout-1')).body.remaining).toBe(1)
    // Its statements pass on either router; no id counts a new request each time.
    expect((await query(routerB, limited, 'select 1', [], tag('checkout-1'))).status).toBe(200)
    expect((await consume()).body.remaining).toBe(0)
    const refused = await consume()
    expect(refused.status).toBe(429)
    expect(refused.body.error?.code).toBe('rate_limited')
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect((await query(routerA, limited, 'select 1', [], tag('checkout-1'))).status).toBe(200)
    // Refused, and nothing counted: no key (401, before the header is looked at), a bad id, a bad tenant.
    const refusedAs = async (extra: Record<string, string>) => {
      const answer = await post<{ error: { code: string } }>(
        routerB,
        '/v1/limits/consume',
        {},
        { ...headers(), ...extra },
      )
      return [answer.status, answer.body.error.code]
    }
    expect(await refusedAs({ authorization: '', 'x-switchyard-request': 'a b' })).toEqual([
      401,
      'unauthorized',
    ])
    expect(await refusedAs({ 'x-switchyard-request': 'x'.repeat(129) })).toEqual([400, 'invalid_input'])
    expect(await refusedAs({ 'x-tenant-id': 'not-a-uuid' })).toEqual([400, 'invalid_input'])
    // Another tenant's key cannot spend this tenant's limit.
    const stranger = await post<{ error: { code: string } }>(
      routerA,
      '/v1/limits/consume',
      {},
      {
        ...headers(),
        authorization: `Bearer ${alice.key}`,
      },
    )
    expect(stranger.status).toBe(403)
  })
})

describe('stale routes (invariant 2)', () => {
  it('a router whose cache points at the old shard never writes there and ends up on the right one', async () => {
    const mover = await tenantWithKey('shard-1')
    const warm = await query(routerA, mover, 'select count(*)::int as n from customers', [], {
      headers: { 'x-switchyard-consistency': 'strong' },
    })
    expect(warm.headers.get('x-switchyard-shard')).toBe('shard-1')
    // Move ownership behind the router's back: no invalidation is published.
    const directory = connect(topology().directory)
    const oldShard = connect(shard('shard-1').primary)
    const newShard = connect(shard('shard-2').primary)
    await newShard`insert into switchyard.tenant_ownership (tenant_id, epoch, state) values (${mover.id}, 2, 'owner')`
    await oldShard`update switchyard.tenant_ownership set state = 'moved' where tenant_id = ${mover.id}`
    await directory`update tenants set shard_id = 'shard-2', epoch = 2 where id = ${mover.id}`

    const write = await query(
      routerA,
      mover,
      'insert into customers (tenant_id, name) values ($1, $2) returning name',
      [mover.id, 'after the move'],
    )
    expect(write.status).toBe(200)
    expect(write.headers.get('x-switchyard-shard')).toBe('shard-2')
    const onOld = await oldShard`select count(*)::int as n from customers where tenant_id = ${mover.id}`
    const onNew =
      await newShard`select count(*)::int as n from customers where tenant_id = ${mover.id} and name = 'after the move'`
    expect({ old: onOld[0]?.n, new: onNew[0]?.n }).toEqual({ old: 0, new: 1 })
    // The other router (its cache warmed before too) also lands on the right shard.
    const read = await query(routerB, mover, 'select name from customers', [], {
      headers: { 'x-switchyard-consistency': 'strong' },
    })
    expect(read.body).toEqual({ rows: [{ name: 'after the move' }] })
  })
})
