import { readFileSync } from 'node:fs'
import net from 'node:net'
import { describe, expect } from 'vitest'
import type { RunningRouter } from '../src/router/server.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { post, query, runningQueries } from './router-support.ts'
import { eventually, shard, topology } from './support.ts'

/**
 * The router's bounds against a hostile tenant, from two adversarial reviews of issue 12: each describe
 * names a finding, and its tests fail while the finding stands. They do not fit test/hostile/attacks.sql,
 * which runs one request at a time and checks B's rows and session: these need sizes, concurrency, time.
 */

// Later files find shard-1 with the room it had.
it.override('madeTenants', 'remove')

const SHARD = 'shard-1'
let admin: ReturnType<typeof connect>
let replicaAdmin: ReturnType<typeof connect>

it.beforeAll(() => {
  admin = connect(shard(SHARD).primary)
  replicaAdmin = connect(shard(SHARD).replicas[0] as string)
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** One raw HTTP/1.1 POST /v1/query as `tenant` (for pipelining and for clients that do not read). */
function rawQuery(tenant: TestTenant, sql: string): string {
  const body = JSON.stringify({ sql, params: [], method: 'all' })
  return (
    `POST /v1/query HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${tenant.key}\r\nx-tenant-id: ${tenant.id}\r\n` +
    `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  )
}

async function openSocket(router: RunningRouter): Promise<net.Socket> {
  const socket = net.connect(router.port, '127.0.0.1')
  socket.on('error', () => {})
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  return socket
}

/** 1,660 NULL columns, each named with 63 characters (NAMEDATALEN - 1): 4 bytes of DataRow per column. */
const WIDE_COLUMNS = Array.from({ length: 1660 }, (_, i) => `null::int as "${`c${i}`.padEnd(63, 'x')}"`).join(
  ', ',
)
const wideRows = (rows: number) => `select ${WIDE_COLUMNS} from generate_series(1, ${rows})`

async function postRaw(
  router: RunningRouter,
  route: string,
  body: unknown,
  headers: Record<string, string>,
): Promise<{ status: number; bytes: number; text: string }> {
  const response = await fetch(`${router.url}${route}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  })
  const text = await response.text()
  return { status: response.status, bytes: Buffer.byteLength(text), text: text.slice(0, 2000) }
}

describe('finding: the result budget bounds the bytes PostgreSQL sends, not what the router builds and sends', () => {
  const budget = 1024 * 1024
  let router: RunningRouter
  let tenant: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ maxResultBytes: budget, maxStatementBytes: 256 * 1024 })
    tenant = await tenantWithKey(SHARD)
  })

  it('pg-proxy `execute`: wide NULL rows with long column names are charged as rendered (~18x their DataRows): 413', async () => {
    // 150 rows x 1,660 columns x 4 bytes = ~1 MB of DataRows (within the budget); each column becomes
    // `"<63 characters>":null,` in the answer.
    const answer = await postRaw(
      router,
      '/v1/query',
      { sql: wideRows(150), params: [], method: 'execute' },
      { authorization: `Bearer ${tenant.key}`, 'x-tenant-id': tenant.id },
    )
    console.log(`wide rows: ${answer.status}, ${answer.bytes} bytes of answer for a ${budget}-byte budget`)
    expect(answer.status).toBe(413)
    expect(answer.text).toContain('result_too_large')
    // Fewer of the same rows fit, and the answer stays near the budget.
    const fits = await postRaw(
      router,
      '/v1/query',
      { sql: wideRows(5), params: [], method: 'execute' },
      { authorization: `Bearer ${tenant.key}`, 'x-tenant-id': tenant.id },
    )
    console.log(`5 wide rows: ${fits.status}, ${fits.bytes} bytes of answer`)
    expect(fits.status).toBe(200)
    expect(fits.bytes).toBeLessThan(budget)
  })

  it('Neon batch: statements that return no rows are charged for their 1,632 field descriptions', async () => {
    // `a.*` 48 times: 1,632 columns (pg_class has 34), no rows, ~230 bytes of SQL per statement.
    const sql = `select ${Array.from({ length: 48 }, () => 'a.*').join(',')} from pg_class a limit 0`
    const answer = await postRaw(
      router,
      '/sql',
      { queries: Array.from({ length: 300 }, () => ({ query: sql, params: [] })) },
      { 'neon-connection-string': `postgresql://${tenant.id}:${tenant.key}@127.0.0.1/app` },
    )
    console.log(`neon fields: ${answer.status}, ${answer.bytes} bytes of answer for a ${budget}-byte budget`)
    // Neon's client reads error bodies only from a 400: the code is in the body.
    expect(answer.status).toBe(400)
    expect(answer.text).toContain('result_too_large')
  })
})

describe('finding: answers that are never read pile up in the router until it dies (invariant 8)', () => {
  const unread = 32 * 1024 * 1024
  let router: RunningRouter
  let tenant: TestTenant
  let other: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ maxUnreadBytes: unread, rateLimitOverride: 1_000_000 })
    tenant = await tenantWithKey(SHARD)
    other = await tenantWithKey(SHARD)
  })

  it("a tenant's clients that never read hold at most a quarter of maxUnreadBytes; then 429, and others are served", async () => {
    // 12 MB answers (within the 16 MiB budget); the kernel's socket buffers take the first few MB of each.
    const sockets: net.Socket[] = []
    const statuses: string[] = []
    try {
      for (let i = 0; i < 12; i++) {
        const socket = await openSocket(router)
        sockets.push(socket)
        const head = new Promise<string>((resolve) => {
          socket.once('data', (chunk: Buffer) => resolve(chunk.toString('latin1').split('\r\n')[0] ?? ''))
          socket.once('close', () => resolve('closed'))
        })
        socket.write(rawQuery(tenant, "select repeat('x', 12000000) as x"))
        statuses.push(await head)
        socket.pause() // the attacker never reads the rest
      }
      const held = router.app.answers.bytes
      console.log(`unread answers: ${statuses.join(', ')}; the router holds ${held} bytes unread`)
      expect(statuses.some((status) => status.includes('429'))).toBe(true)
      expect(held).toBeLessThanOrEqual(unread / 4 + 2 * 12_100_000)
      const served = await query(router, other, 'select 1 as one')
      expect(served.status).toBe(200)
    } finally {
      for (const socket of sockets) socket.destroy()
    }
    // Gone clients free what they left unread.
    await eventually(async () => (router.app.answers.bytes === 0 ? true : undefined))
    expect((await query(router, tenant, 'select 1 as one')).status).toBe(200)
  }, 60_000)
})

/** Queries still running on either node of the shard whose text holds `marker`. */
const running = (marker: string) => runningQueries(marker, [admin, replicaAdmin])

describe('finding: a query that does not honour the cancel outlives its deadline (and its connection)', () => {
  let router: RunningRouter
  let tenant: TestTenant
  let other: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ requestTimeoutMs: 500 })
    tenant = await tenantWithKey(SHARD)
    other = await tenantWithKey(SHARD)
    // A query the cancel cannot stop (as libxml2's XPath, now refused): an application function that
    // catches query_canceled. The router's cancel never settles; after its grace it drops the connection.
    await admin.unsafe(`
      create or replace function public.stubborn(seconds float8) returns int language plpgsql as $$
      declare until timestamptz := clock_timestamp() + make_interval(secs => seconds);
      begin
        while clock_timestamp() < until loop
          begin perform pg_sleep(0.05); exception when query_canceled then null; end;
        end loop;
        return 1;
      end $$`)
    await eventually(async () => {
      const [seen] = await replicaAdmin`select 1 as ok from pg_proc where proname = 'stubborn'`
      return seen ? true : undefined
    })
  })
  it.afterAll(async () => {
    await admin`drop function if exists public.stubborn(float8)`
  })

  it('XPath, which libxml2 runs without checking for a cancel, is refused', async () => {
    const answer = await query<{ error: { code: string } }>(
      router,
      tenant,
      `select xpath('count(//b[count(//b[count(//b) > 0]) > 0])', ('<a>' || repeat('<b/>', 1000) || '</a>')::xml)`,
    )
    expect(answer.status).toBe(400)
    expect(answer.body.error.code).toBe('statement_not_allowed')
  })

  it("a write past its deadline does not make the router call the primary down for other tenants' writes", async () => {
    const marker = `stubborn-${Math.random().toString(36).slice(2)}`
    const attack = post<{ error: { code: string } }>(
      router,
      '/v1/batch',
      { queries: [{ sql: `/* ${marker} */ select stubborn(4)`, params: [], method: 'all' }] },
      { authorization: `Bearer ${tenant.key}`, 'x-tenant-id': tenant.id },
    )
    const refusals: string[] = []
    let done = false
    void attack.finally(() => {
      done = true
    })
    const write = async () => {
      const answer = await post<{ error?: { code: string } }>(
        router,
        '/v1/batch',
        { queries: [{ sql: 'select 1', params: [], method: 'all' }] },
        { authorization: `Bearer ${other.key}`, 'x-tenant-id': other.id },
      )
      if (answer.status !== 200) refusals.push(answer.body.error?.code ?? String(answer.status))
    }
    while (!done) {
      await write()
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    // One more second of the other tenant's writes, past the moment the attacker's connection was dropped.
    for (let i = 0; i < 50; i++) {
      await write()
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const answer = await attack
    console.log(
      `attacker: ${answer.status} ${answer.body.error?.code}; the other tenant was refused: ${refusals.join(', ') || 'never'}`,
    )
    // The COMMIT went out with the statement, and the connection was dropped before its answer.
    expect(answer.body.error?.code).toBe('commit_unknown')
    expect(refusals).toEqual([])
    await eventually(async () => ((await running(marker)) === 0 ? true : undefined), 30_000)
  }, 90_000)
})

describe("finding: one tenant's requests stall the router's event loop for every tenant", () => {
  let router: RunningRouter
  let tenant: TestTenant
  let other: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ rateLimitOverride: 1_000_000 })
    tenant = await tenantWithKey(SHARD)
    other = await tenantWithKey(SHARD)
  })

  it('statements past maxStatementBytes are refused before they are parsed (413)', async () => {
    const sql = `select ${Array.from({ length: 340_000 }, () => '1').join(',')}`
    const answer = await query<{ error: { code: string } }>(router, tenant, sql)
    expect(answer.status).toBe(413)
    expect(answer.body.error.code).toBe('statement_too_large')
  })

  it("eight of the densest statements that fit (60 KB) are parsed in turns: another tenant's requests are answered between them", async () => {
    // libpg-query's parse of 30,000 target entries, its JSON and the scan: ~100 ms of the event loop each.
    const sql = `select ${Array.from({ length: 30_000 }, () => '1').join(',')}`
    // The other tenant's key and route are cached first: each of its requests then needs a few turns.
    expect((await query(router, other, 'select 1 as one')).status).toBe(200)
    const attacks = Array.from({ length: 8 }, () => query(router, tenant, sql))
    const latencies: number[] = []
    let settled = false
    void Promise.allSettled(attacks).then(() => {
      settled = true
    })
    while (!settled) {
      const started = performance.now()
      const answer = await query(router, other, 'select 1 as one')
      latencies.push(performance.now() - started)
      expect(answer.status).toBe(200)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const worst = Math.max(...latencies)
    console.log(`other tenant: ${latencies.length} requests, worst ${Math.round(worst)} ms`)
    // The structure, not a timing (the machine is shared): parsed in one burst, the eight would leave
    // room for one of the other tenant's requests at most; in turns, several go between them.
    expect(latencies.length).toBeGreaterThanOrEqual(2)
  }, 60_000)
})

describe("finding: statements nested past the WASM parser's stack break it for every tenant", () => {
  let router: RunningRouter
  let tenant: TestTenant
  let other: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ rateLimitOverride: 1_000_000 })
    tenant = await tenantWithKey(SHARD)
    other = await tenantWithKey(SHARD)
  })

  it('400 chains of 12,000 operators (24 KB each) are refused unparsed; every tenant is served after them', async () => {
    // Measured on libpg-query 18.1.5 without the nesting guard: each such parse overflows the engine's
    // stack inside the WASM, and after ~300 every later parse fails with "memory access out of bounds".
    const chain = (i: number) => `select ${Array.from({ length: 12_000 }, () => `c${i}`).join('+')}`
    for (let batch = 0; batch < 400; batch += 4) {
      const answers = await Promise.all(
        Array.from({ length: 4 }, (_, i) =>
          query<{ error: { code: string; message: string } }>(router, tenant, chain(batch + i)),
        ),
      )
      for (const answer of answers) {
        expect(answer.body.error.code).toBe('statement_not_allowed')
        expect(answer.body.error.message).toMatch(/nested too deeply/)
      }
    }
    // A tree 1,000 deep is still checked and run, and both tenants' ordinary statements are.
    const deep = await query<{ rows: { deep: number }[] }>(
      router,
      other,
      `select ${Array.from({ length: 1000 }, () => '1').join('+')} as deep`,
    )
    expect(deep.body.rows).toEqual([{ deep: 1000 }])
    for (const who of [tenant, other]) {
      const answer = await query<{ rows: { one: number }[] }>(router, who, 'select 1 + 1 as one')
      expect(answer.status).toBe(200)
    }
  }, 120_000)
})

describe('finding: a "read" that writes is retried on the primary without the tenant\'s limits', () => {
  let router: RunningRouter
  it.beforeAll(async () => {
    router = await startTestRouter()
    // An application function whose name falls in the policy's read families (`make_`, `to_`, `json_`,
    // `date_`, `has_`, …): the policy calls it a read; the replica (or READ ONLY) refuses its INSERT with
    // 25006; dispatch retries it as a write, but `tx.limits` was computed for a read (undefined), so
    // enter() gets no limits and the quota trigger lets every row in.
    await admin.unsafe(`
      create or replace function public.make_customer(customer_name text) returns uuid
      language sql as $$
        insert into public.customers (tenant_id, name) values ((select switchyard.current_tenant()), customer_name)
        returning id
      $$`)
    await eventually(async () => {
      const [seen] = await replicaAdmin`select 1 as ok from pg_proc where proname = 'make_customer'`
      return seen ? true : undefined
    })
  })
  it.afterAll(async () => {
    await admin`drop function if exists public.make_customer(text)`
  })

  it('max_customers = 1 holds for rows inserted by such a function', async () => {
    const tenant = await tenantWithKey(SHARD, { max_customers: 1 })
    const plain = await query(router, tenant, 'insert into customers (tenant_id, name) values ($1, $2)', [
      tenant.id,
      'first',
    ])
    expect(plain.status).toBe(200)
    const direct = await query<{ error: { code: string } }>(
      router,
      tenant,
      'insert into customers (tenant_id, name) values ($1, $2)',
      [tenant.id, 'second'],
    )
    expect(direct.body.error?.code).toBe('quota_exceeded')
    for (let i = 0; i < 3; i++)
      await query(router, tenant, 'select make_customer($1)', [`through a read ${i}`])
    const [count] = await admin<{ n: number }[]>`
      select count(*)::int as n from customers where tenant_id = ${tenant.id}`
    console.log(`max_customers = 1; the tenant has ${count?.n} customers`)
    expect(count?.n).toBe(1)
  })

  it('an Idempotency-Key makes such a write exactly-once', async () => {
    // The upgraded write also loses its Idempotency-Key (computed for a read: undefined): no claim, no
    // replay, a retry writes again.
    const tenant = await tenantWithKey(SHARD)
    const key = `review-${Math.random().toString(36).slice(2)}`
    const replays: (string | null)[] = []
    for (let i = 0; i < 2; i++) {
      const response = await fetch(`${router.url}/v1/query`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${tenant.key}`,
          'x-tenant-id': tenant.id,
          'idempotency-key': key,
        },
        body: JSON.stringify({ sql: 'select make_customer($1)', params: ['once'], method: 'all' }),
      })
      await response.text()
      replays.push(response.headers.get('x-switchyard-idempotent-replay'))
    }
    const [count] = await admin<{ n: number }[]>`
      select count(*)::int as n from customers where tenant_id = ${tenant.id}`
    console.log(
      `the same request twice with one Idempotency-Key: ${count?.n} rows, replay headers ${replays}`,
    )
    expect(count?.n).toBe(1)
  })
})

describe('finding: values and parameters that nest deeply end in a 500 (the router never answers in its own words)', () => {
  let router: RunningRouter
  let tenant: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter()
    tenant = await tenantWithKey(SHARD)
  })

  it('a json value nested 5,000 deep (JSON.stringify runs out of stack): 413', async () => {
    const answer = await query<{ error: { code: string } }>(
      router,
      tenant,
      'select (repeat($1, 5000) || repeat($2, 5000))::json as j',
      ['[', ']'],
    )
    expect(answer.status).toBe(413)
    expect(answer.body.error.code).toBe('result_too_large')
  })

  it('a parameter nested 200,000 deep (arrayLiteral recurses)', async () => {
    const deep = '['.repeat(200_000) + ']'.repeat(200_000)
    const answer = await post<{ error: { code: string } }>(
      router,
      '/v1/query',
      `{"sql":"select $1::text","params":[${deep}],"method":"all"}`,
      { authorization: `Bearer ${tenant.key}`, 'x-tenant-id': tenant.id },
    )
    expect(answer.status).toBe(400)
    expect(answer.body.error.code).toBe('invalid_input')
    // Six dimensions, PostgreSQL's most, still go through.
    const six = await query<{ rows: Record<string, string>[] }>(router, tenant, 'select $1::int[] as a', [
      [[[[[[1]]]]]],
    ])
    expect(six.status).toBe(200)
  })
})

/** Resident memory (VmRSS, kB) of every backend of the router's role on a node, by pid. */
async function backendMemory(sql: ReturnType<typeof connect>): Promise<Map<number, number>> {
  const rows = await sql<{ pid: number }[]>`
    select pid from pg_stat_activity where usename = ${topology().router.role.name}`
  const sizes = new Map<number, number>()
  for (const { pid } of rows) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8')
      sizes.set(pid, Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0))
    } catch {}
  }
  return sizes
}

describe('finding: a 660 KB batch makes one shard backend hold ~45,000 prepared statements', () => {
  let router: RunningRouter
  let tenant: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ rateLimitOverride: 1_000_000 })
    tenant = await tenantWithKey(SHARD)
  })

  it('45,000 statements are refused (413); the most a request may send grows no backend by 100 MB', async () => {
    const refused = await post<{ error: { code: string } }>(
      router,
      '/v1/batch',
      { queries: Array.from({ length: 45_000 }, (_, i) => `select ${i}`) },
      { authorization: `Bearer ${tenant.key}`, 'x-tenant-id': tenant.id },
    )
    expect(refused.status).toBe(413)
    expect(refused.body.error.code).toBe('too_many_statements')
    // Each distinct text is prepared; past the connection's cache size they run unnamed.
    const before = await backendMemory(admin)
    const answer = await post(
      router,
      '/v1/batch',
      { queries: Array.from({ length: 1000 }, (_, i) => `select ${i} as "${'n'.repeat(60)}"`) },
      { authorization: `Bearer ${tenant.key}`, 'x-tenant-id': tenant.id },
    )
    const after = await backendMemory(admin)
    const growth = Math.max(0, ...[...after].map(([pid, kb]) => kb - (before.get(pid) ?? 20_000)))
    console.log(
      `batch of 1000: ${answer.status}; the largest backend grew by ${Math.round(growth / 1024)} MB`,
    )
    expect(answer.status).toBe(200)
    expect(growth).toBeLessThan(100 * 1024)
  }, 60_000)
})

describe('finding: pipelined requests whose socket closes leave their answers counted as unread forever', () => {
  const unread = 32 * 1024 * 1024
  let router: RunningRouter
  let tenant: TestTenant
  let other: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ maxUnreadBytes: unread, rateLimitOverride: 1_000_000 })
    tenant = await tenantWithKey(SHARD)
    other = await tenantWithKey(SHARD)
  })

  it('a closed socket frees every answer built for it: the tenant, then everyone, is not refused forever', async () => {
    // Node answers pipelined requests in order: a response waiting behind the first is never given the
    // socket, so when the socket closes it gets no 'close' event, and UnreadAnswers.hold never releases.
    // Six pipelined requests are all admitted at once (nothing is held yet); those queued behind the socket leak.
    const sql = "select repeat('x', 6000000) as x"
    const leak = async (attacker: TestTenant) => {
      const socket = await openSocket(router)
      socket.write(Array.from({ length: 6 }, () => rawQuery(attacker, sql)).join(''))
      await new Promise<void>((resolve) => socket.once('data', () => resolve()))
      socket.destroy()
    }
    await leak(tenant)
    // Every query has long finished; the socket is gone.
    await sleep(3000)
    const held = router.app.answers.bytes
    const after = await query<{ error?: { code: string } }>(router, tenant, 'select 1 as one')
    console.log(
      `after one closed pipelined socket: the router counts ${held} bytes unread; the tenant's select 1: ${after.status} ${after.body.error?.code ?? ''}`,
    )
    // A second tenant does the same: past maxUnreadBytes in all, 503 router_busy for every tenant.
    await leak(await tenantWithKey(SHARD))
    await sleep(3000)
    const innocent = await query<{ error?: { code: string } }>(router, other, 'select 1 as one')
    console.log(
      `after 2 tenants did so: ${router.app.answers.bytes} bytes counted unread (max ${unread}); an innocent tenant's select 1: ${innocent.status} ${innocent.body.error?.code ?? ''}`,
    )
    expect(held).toBe(0)
    expect(after.status).toBe(200)
    expect(innocent.status).toBe(200)
  }, 60_000)

  it("concurrent requests are all admitted before any answer is held: the tenant's quarter is not a bound", async () => {
    // A router of its own: the test above leaves this file's router refusing everyone.
    const own = await startTestRouter({ maxUnreadBytes: unread, rateLimitOverride: 1_000_000 })
    const fresh = await tenantWithKey(SHARD)
    const sockets = await Promise.all(Array.from({ length: 10 }, () => openSocket(own)))
    try {
      const heads = sockets.map(
        (socket) =>
          new Promise<string>((resolve) => {
            socket.once('data', (chunk: Buffer) => {
              socket.pause() // never reads the rest
              resolve(chunk.toString('latin1').split('\r\n')[0] ?? '')
            })
            socket.once('close', () => resolve('closed'))
          }),
      )
      const before = own.app.answers.bytes
      for (const socket of sockets) socket.write(rawQuery(fresh, "select repeat('x', 6000000) as x"))
      const statuses = await Promise.all(heads)
      const held = own.app.answers.bytes - before
      console.log(
        `10 sockets at once: ${statuses.filter((status) => status.includes('200')).length} answered 200; ${held} bytes held unread for a quarter of ${unread / 4}`,
      )
      expect(held).toBeLessThanOrEqual(unread / 4 + 6_000_100)
    } finally {
      for (const socket of sockets) socket.destroy()
    }
  }, 60_000)
})

describe("finding: a tenant's parse queue ignores the request's deadline and its client", () => {
  let router: RunningRouter
  let tenant: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ requestTimeoutMs: 1500, rateLimitOverride: 1_000_000 })
    tenant = await tenantWithKey(SHARD)
  })

  /** A statement over 4 KiB (never cached by the policy), distinct per `n`. */
  const wide = (n: number) =>
    `select ${Array.from({ length: 150 }, (_, i) => `c.name as "customer_field_${i}"`).join(', ')} from customers c where c.id = $1::uuid /* ${n} */`
  /** ~60 KB of the densest SQL (within maxStatementBytes): tens of ms of parse each. */
  const dense = (n: number) => `select ${Array.from({ length: 30_000 }, () => '1').join(',')} /* ${n} */`

  it('every request is answered by its deadline (requestTimeoutMs), even when its statements wait for parse turns', async () => {
    // 8 batches of 10 uncached 60 KB statements (~20-50 ms of parse each), at 150 ms of parse per second
    // for the tenant. Parse turns never look at the request's signal.
    let n = 0
    const started = performance.now()
    const batches = Array.from({ length: 8 }, async () => {
      const ms = () => Math.round(performance.now() - started)
      try {
        const answer = await post<{ error?: { code: string } }>(
          router,
          '/v1/batch',
          {
            queries: Array.from({ length: 10 }, () => ({ sql: dense(n++), params: [], method: 'all' })),
          },
          { authorization: `Bearer ${tenant.key}`, 'x-tenant-id': tenant.id },
        )
        return { status: String(answer.status), code: answer.body.error?.code, ms: ms() }
      } catch (error) {
        // The server's socket timeout (requestTimeoutMs + 15 s without traffic) closes it: no answer at all.
        return { status: 'connection closed', code: (error as Error).cause?.toString(), ms: ms() }
      }
    })
    const answers = await Promise.all(batches)
    console.log(
      `deadline 1500 ms; answers: ${answers.map((a) => `${a.status} ${a.code ?? ''} after ${a.ms} ms`).join('; ')}`,
    )
    // Answered, by the deadline's 504 if not sooner (unbounded, they waited for the socket timeout: 16.7 s).
    for (const answer of answers) expect(answer.status).not.toBe('connection closed')
    expect(Math.max(...answers.map((a) => a.ms))).toBeLessThan(10_000)
  }, 60_000)

  it("requests whose clients left are not parsed: the tenant's next request is not queued behind them", async () => {
    let n = 1_000_000
    const controllers = Array.from({ length: 8 }, () => new AbortController())
    const gone = controllers.map((controller) =>
      fetch(`${router.url}/v1/batch`, {
        method: 'POST',
        signal: controller.signal,
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${tenant.key}`,
          'x-tenant-id': tenant.id,
        },
        body: JSON.stringify({
          queries: Array.from({ length: 10 }, () => ({ sql: dense(n++), params: [], method: 'all' })),
        }),
      }).catch(() => undefined),
    )
    await sleep(300)
    for (const controller of controllers) controller.abort()
    await Promise.all(gone)
    const started = performance.now()
    const next = await query(router, tenant, wide(n++), ['00000000-0000-0000-0000-000000000000'])
    const ms = Math.round(performance.now() - started)
    console.log(`after 8 abandoned batches, the tenant's next uncached query: ${next.status} in ${ms} ms`)
    // Queued behind the abandoned ones it would pass its 1.5 s deadline: 504.
    expect(next.status).toBe(200)
  }, 60_000)
})

describe("finding: a tenant's parse queue has no bound: its requests pile up in the router's memory", () => {
  let router: RunningRouter
  let tenant: TestTenant
  let other: TestTenant
  it.beforeAll(async () => {
    // The tenant may make 10 requests an hour: admission (and so the rate limit) comes after the parse.
    router = await startTestRouter({ rateLimitOverride: 10 })
    tenant = await tenantWithKey(SHARD)
    other = await tenantWithKey(SHARD)
  })

  it('150 requests of 1 MB of uncached SQL, their clients gone, hold under 100 MB of the router', async () => {
    const { setFlagsFromString } = await import('node:v8')
    const { runInNewContext } = await import('node:vm')
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const used = () => {
      gc()
      const memory = process.memoryUsage()
      return memory.heapUsed + memory.external + memory.arrayBuffers
    }
    const dense = (n: number) => `select ${Array.from({ length: 30_000 }, () => '1').join(',')} /* ${n} */`
    let n = 0
    const send = (key: string) =>
      Array.from({ length: 150 }, () => {
        const body = JSON.stringify({
          queries: Array.from({ length: 16 }, () => ({ sql: dense(n++), params: [], method: 'all' })),
        })
        return new Promise<void>((resolve) => {
          const socket = net.connect(router.port, '127.0.0.1')
          socket.on('error', () => resolve())
          socket.write(
            `POST /v1/batch HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${key}\r\nx-tenant-id: ${tenant.id}\r\n` +
              `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
            () => {
              // The whole body is sent; the client goes away.
              setTimeout(() => {
                socket.destroy()
                resolve()
              }, 200)
            },
          )
        })
      })
    // The control: the same requests with a wrong key are refused before any parse, and leave nothing.
    const start = used()
    await Promise.all(send('wrong'))
    await sleep(2000)
    const before = used()
    await Promise.all(send(tenant.key))
    await sleep(2000)
    const held = used() - before
    console.log(`control (refused before the parse): ${Math.round((before - start) / 1e6)} MB`)
    const started = performance.now()
    const served = await query(router, other, 'select 1 as one')
    console.log(
      `150 abandoned 1 MB requests of a tenant limited to 10 an hour: the router holds ${Math.round(held / 1e6)} MB more; another tenant's select 1: ${served.status} in ${Math.round(performance.now() - started)} ms`,
    )
    expect(held).toBeLessThan(100e6)
  }, 60_000)
})

describe('finding: parsing XML is libxml2 too: it ignores the cancel as XPath did', () => {
  let router: RunningRouter
  let tenant: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ requestTimeoutMs: 500 })
    tenant = await tenantWithKey(SHARD)
  })

  it('xml_is_well_formed_document of an 80 MB document built in SQL stops at the deadline', async () => {
    // 20 million empty elements: libxml2 parses (and builds a tree of) them without a CHECK_FOR_INTERRUPTS,
    // ~10 s here; the same goes for XMLPARSE and ::xml. The router's policy lets xml_* and XMLPARSE through.
    const marker = `xmlparse-${Math.random().toString(36).slice(2)}`
    const started = performance.now()
    const answer = await query<{ error?: { code: string } }>(
      router,
      tenant,
      `/* ${marker} */ select xml_is_well_formed_document('<a>' || repeat('<b/>', 20000000) || '</a>') as ok`,
    )
    const answered = Math.round(performance.now() - started)
    await sleep(1000)
    const still = await runningQueries(marker, [admin, replicaAdmin])
    let rssMb = 0
    for (const node of [admin, replicaAdmin]) {
      const rows = await node<{ pid: number }[]>`
        select pid from pg_stat_activity where state = 'active' and query like ${`%${marker}%`} and pid <> pg_backend_pid()`
      for (const { pid } of rows) {
        try {
          const status = readFileSync(`/proc/${pid}/status`, 'utf8')
          rssMb = Math.max(rssMb, Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024))
        } catch {}
      }
    }
    console.log(`the backend still parsing holds ${rssMb} MB`)
    console.log(
      `deadline 500 ms: ${answer.status} ${answer.body.error?.code ?? ''} after ${answered} ms; 1 s later ${still} backend(s) still run it`,
    )
    expect(answer.status).not.toBe(200)
    expect(still).toBe(0)
    await eventually(
      async () => ((await runningQueries(marker, [admin, replicaAdmin])) === 0 ? true : undefined),
      30_000,
    )
  }, 60_000)
})

describe("finding: only parses take turns: building one tenant's answers stalls every tenant (the answer bound)", () => {
  let router: RunningRouter
  let tenant: TestTenant
  let other: TestTenant
  it.beforeAll(async () => {
    router = await startTestRouter({ rateLimitOverride: 1_000_000 })
    tenant = await tenantWithKey(SHARD)
    other = await tenantWithKey(SHARD)
  })

  it('eight answers of 10 MB of control characters (60 MB of JSON each) are refused past 2 x maxResultBytes; another tenant is served throughout', async () => {
    // Each is 10 MB of DataRow (within the 16 MiB budget): JSON.stringify writes \u0001 for each byte,
    // in one go on the event loop, and the answer (under 64 MiB) is sent.
    const attacks = Array.from({ length: 8 }, () =>
      fetch(`${router.url}/v1/query`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          authorization: `Bearer ${tenant.key}`,
          'x-tenant-id': tenant.id,
        },
        body: JSON.stringify({ sql: 'select repeat(chr(1), 10000000) as x', params: [], method: 'all' }),
      }).then(async (response) => ({
        status: response.status,
        bytes: (await response.arrayBuffer()).byteLength,
      })),
    )
    const latencies: number[] = []
    let settled = false
    const all = Promise.all(attacks).finally(() => {
      settled = true
    })
    const refused: string[] = []
    while (!settled) {
      const started = performance.now()
      const answer = await query<{ error?: { code: string } }>(router, other, 'select 1 as one')
      latencies.push(performance.now() - started)
      if (answer.status !== 200) refused.push(`${answer.status} ${answer.body.error?.code}`)
      await sleep(20)
    }
    const answers = await all
    const worst = Math.max(...latencies)
    console.log(
      `attacker: ${answers.map((a) => `${a.status} ${a.bytes}`).join(', ')}; other tenant: ${latencies.length} requests, worst ${Math.round(worst)} ms, refused: ${refused.join(', ') || 'never'}`,
    )
    // Not a timing assertion (the machine is shared): the figures are printed above. Each answer is
    // refused: 413 past 2 x maxResultBytes, or, when enough of the eight are in flight at once to hold
    // the tenant's quarter of maxUnreadBytes (64 MiB), 429 tenant_busy before it is built. Which one
    // depends on how the shared machine schedules them; the other tenant is served either way.
    expect(answers.filter((answer) => answer.status !== 413 && answer.status !== 429)).toEqual([])
    expect(answers.some((answer) => answer.status === 413)).toBe(true)
    expect(refused).toEqual([])
  }, 60_000)
})
