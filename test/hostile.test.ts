import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import pg from 'pg'
import { describe, expect } from 'vitest'
import { seedDemoTenant } from '../examples/appointments/demo.ts'
import { readRouterCapability } from '../src/directory/capability.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { addTenant } from '../src/directory/tenants.ts'
import { runTransaction } from '../src/router/execute.ts'
import type { RunningRouter } from '../src/router/server.ts'
import type { Sql } from '../src/shard/connection.ts'
import { routerNodes } from '../src/shard/nodes.ts'
import { createPools } from '../src/shard/pools.ts'
import type { WireConnection } from '../src/shard/wire/connection.ts'
import { connect, it, startTestRouter } from './fixtures.ts'
import { post } from './router-support.ts'
import { eventually, newTenantId, shard, topology } from './support.ts'

/**
 * The hostile-tenant suite (issue 12). Tenant A runs every attack in test/hostile/attacks.sql as one
 * transaction, twice: through a real router (statement policy on), and straight at the shard as the
 * router's role inside the router's own framing (BEGIN, enter() with the capability, the statements,
 * COMMIT: `runTransaction`) with the statement policy OFF, on a primary and on a replica. After each:
 * - nothing A got back (rows or errors) holds B's secret marker;
 * - B's rows are what they were (a hash of every one of B's rows, read as the admin);
 * - B's next transaction ON THE SAME CONNECTION finds the session as a fresh connection has it (every
 *   setting, listen, cursor, advisory lock, temporary object, sequence state, role default), and sees its
 *   own rows and only those.
 * Statements A prepares with SQL PREPARE may outlive A's transaction when the policy is off (dropping
 * them at every enter() costs ~70 µs with a warm statement cache); they are invisible to later requests
 * (pg_prepared_statements is revoked) and run under the later request's own context. The router closes
 * a connection on which anything but DML ran.
 */

const SHARD = 'shard-1'
const marker = `secret-${randomBytes(6).toString('hex')}`
const tenantA = newTenantId()
const tenantB = newTenantId()
let bCustomer = ''
let capability = ''
let keyA = ''
let keyB = ''
let admin: Sql
let router: RunningRouter

interface Attack {
  title: string
  steps: string[]
}

/** Entries of attacks.sql: `-- category: name`, SQL, `-- then` between statements, a blank line after. */
function readAttacks(): Attack[] {
  const text = readFileSync(new URL('./hostile/attacks.sql', import.meta.url), 'utf8')
  const attacks: Attack[] = []
  for (const block of text.split(/\n\s*\n/)) {
    const lines = block.split('\n')
    const title = /^-- ([a-z0-9 ]+: .+)$/.exec(lines[0] ?? '')?.[1]
    if (!title) continue
    const steps: string[][] = [[]]
    for (const line of lines.slice(1)) {
      if (line === '-- then') steps.push([])
      else steps.at(-1)?.push(line)
    }
    attacks.push({ title, steps: steps.map((step) => step.join('\n')) })
  }
  return attacks
}

const attacks = readAttacks()

function fill(sql: string): string {
  return sql
    .replaceAll('{{A}}', tenantA)
    .replaceAll('{{B}}', tenantB)
    .replaceAll('{{B_CUSTOMER}}', bCustomer)
    .replaceAll('{{GUESS}}', randomBytes(32).toString('hex'))
    .replaceAll('{{ROUTER_ROLE}}', topology().router.role.name)
}

/**
 * Everything of this session a request could leave behind, read as the shard's admin (SECURITY DEFINER)
 * but about the calling session only. Placeholder settings with an empty value are what RESET ALL
 * leaves of a custom setting: the same as unset to anyone reading them (current_setting gives '').
 */
const PROBE = `
create or replace function public.hostile_session_probe() returns jsonb
language plpgsql security definer as $$
declare
  tenant_key bigint := switchyard.tenant_lock_key(switchyard.current_tenant());
  last bigint;
begin
  begin
    last := pg_catalog.lastval();
  exception when others then
    last := null;
  end;
  return pg_catalog.jsonb_build_object(
    'tenant', switchyard.current_tenant(),
    'user', current_user,
    'session_user', session_user,
    'settings', (select pg_catalog.jsonb_object_agg(name, setting) from pg_catalog.pg_settings
                 where name not in ('switchyard.context')
                   and not (name like '%.%' and coalesce(setting, '') = '')),
    'cursors', (select pg_catalog.jsonb_agg(name order by name) from pg_catalog.pg_cursors where name <> ''),
    'listening', (select pg_catalog.jsonb_agg(c order by c) from pg_catalog.pg_listening_channels() c),
    'advisory_locks', (select pg_catalog.count(*) from pg_catalog.pg_locks l
                       where l.pid = pg_catalog.pg_backend_pid() and l.locktype = 'advisory'
                         and not (l.classid::bigint = (tenant_key >> 32) & 4294967295
                                  and l.objid::bigint = tenant_key & 4294967295 and l.objsubid = 1)),
    'temporary_objects', (select pg_catalog.count(*) from pg_catalog.pg_class c
                          where c.relnamespace = pg_catalog.pg_my_temp_schema()),
    'lastval', last,
    'sql_prepared', (select pg_catalog.jsonb_agg(name order by name) from pg_catalog.pg_prepared_statements
                     where from_sql));
end
$$`

/** Hash of every row of B per tenant table: B's rows unchanged means this is unchanged. */
async function bFingerprint(): Promise<Record<string, string>> {
  const [row] = await admin<{ fingerprint: Record<string, string> }[]>`
    select jsonb_build_object(
      'businesses', (select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from businesses t where tenant_id = ${tenantB}),
      'services', (select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from services t where tenant_id = ${tenantB}),
      'staff', (select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from staff t where tenant_id = ${tenantB}),
      'customers', (select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from customers t where tenant_id = ${tenantB}),
      'appointments', (select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from appointments t where tenant_id = ${tenantB}),
      'working_hours', (select md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from working_hours t where tenant_id = ${tenantB})
    ) as fingerprint`
  return row?.fingerprint ?? {}
}

let fingerprint: Record<string, string>
let bCustomers = 0

it.beforeAll(async () => {
  await withDirectory(topology(), async (directory) => {
    await addTenant(directory, topology(), { id: tenantA, shard: SHARD })
    await addTenant(directory, topology(), { id: tenantB, shard: SHARD })
    capability = await readRouterCapability(directory)
    keyA = (await createKey(directory, { scope: 'app', tenants: [tenantA] })).key
    keyB = (await createKey(directory, { scope: 'app', tenants: [tenantB] })).key
  })
  admin = connect(shard(SHARD).primary)
  await seedDemoTenant(admin, tenantA, 'Hostile A')
  await seedDemoTenant(admin, tenantB, `B ${marker}`)
  await admin`
    insert into customers (tenant_id, name, email, notes)
    select ${tenantB}, ${`Customer ${marker} `} || n, ${`${marker}@example.com`}, ${marker}
    from generate_series(1, 5) n`
  const [customer] = await admin<
    { id: string }[]
  >`select id from customers where tenant_id = ${tenantB} limit 1`
  bCustomer = customer?.id as string
  const [count] = await admin<
    { n: number }[]
  >`select count(*)::int as n from customers where tenant_id = ${tenantB}`
  bCustomers = count?.n ?? 0
  await admin.unsafe(PROBE)
  await admin.unsafe(
    `grant execute on function public.hostile_session_probe() to ${topology().router.role.name}`,
  )
  fingerprint = await bFingerprint()
  // Tenant B checks three times per attack per path: far past the default 1000 requests an hour.
  router = await startTestRouter({ poolSize: 1, rateLimitOverride: 10_000_000 })
  // The replica must have the probe and B's rows before the replica runs are compared with it.
  const replica = connect(shard(SHARD).replicas[0] as string)
  for (let tries = 0; tries < 200; tries++) {
    const [seen] = await replica<{ n: number }[]>`
      select count(*)::int as n from customers where tenant_id = ${tenantB}
        and exists (select 1 from pg_proc where proname = 'hostile_session_probe')`
    if (seen?.n === bCustomers) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
})

it.afterAll(async () => {
  await admin`drop function if exists public.hostile_session_probe()`
  // What no router session may keep, whatever an attack left (the routers reset it too, on their own).
  await admin.unsafe(`alter role ${topology().router.role.name} reset all`)
  await admin.unsafe(`alter role ${topology().router.role.name} in database app reset all`)
})

it('reads at least 100 attacks from test/hostile/attacks.sql', () => {
  expect(attacks.length).toBeGreaterThanOrEqual(100)
  expect(new Set(attacks.map((attack) => attack.title)).size).toBe(attacks.length)
})

interface Probe {
  tenant: string
  settings: Record<string, string>
  sql_prepared: string[] | null
  [other: string]: unknown
}

/** B's check, as the router frames it: its own rows, and the session's state. */
const B_CHECK = [
  { sql: 'select public.hostile_session_probe() as probe', params: [] },
  {
    sql: 'select count(*)::int as n, count(*) filter (where tenant_id <> $1)::int as foreign from customers',
    params: [] as string[],
  },
]

/**
 * What a session left by A must look like to B: as fresh, apart from SQL-level prepared statements, and
 * (in B's first transaction only) a LISTEN: enter()'s UNLISTEN *, like LISTEN, takes effect when the
 * transaction commits (the channel is invisible to B, pg_listening_channels being revoked, and the
 * router drops notifications), so B's second transaction must find no channel either.
 */
async function expectFresh(check: () => Promise<Probe>, baseline: Probe) {
  const { sql_prepared: _none, ...fresh } = baseline
  const { sql_prepared: _left, listening: _pending, ...first } = await check()
  const { listening: _fresh, ...withoutListening } = fresh
  expect(first).toEqual(withoutListening)
  const { sql_prepared: _still, ...second } = await check()
  expect(second).toEqual(fresh)
}

describe('through the router (statement policy on)', () => {
  let baseline: Probe

  it.beforeAll(async () => {
    baseline = await routerCheck()
  })

  async function routerCheck(): Promise<Probe> {
    const answer = await post<{ results: { rows: unknown[][] }[] }>(
      router,
      '/v1/batch',
      { queries: B_CHECK.map((step, i) => ({ ...step, params: i === 1 ? [tenantB] : [], method: 'all' })) },
      { authorization: `Bearer ${keyB}`, 'x-tenant-id': tenantB },
    )
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    const [probeRows, countRows] = answer.body.results.map((result) => result.rows)
    const probe = probeRows?.[0]?.[0] as Probe
    const [n, foreign] = countRows?.[0] ?? []
    expect({ n, foreign }).toEqual({ n: bCustomers, foreign: 0 })
    expect(probe.tenant).toBe(tenantB)
    return probe
  }

  it.each(attacks.map((attack) => [attack.title, attack] as const))('%s', async (_title, attack) => {
    const answer = await post(
      router,
      '/v1/batch',
      { queries: attack.steps.map((sql) => ({ sql: fill(sql), params: [], method: 'all' })) },
      { authorization: `Bearer ${keyA}`, 'x-tenant-id': tenantA },
    )
    // The router answers every attack itself, in its own words: never a crash, never a 500.
    expect(answer.status).not.toBe(500)
    expect(JSON.stringify(answer.body)).not.toContain(marker)
    expect(await bFingerprint()).toEqual(fingerprint)
    await expectFresh(routerCheck, baseline)
    expect((await fetch(`${router.url}/healthz`)).status).toBe(200)
  })
})

describe('through the PostgreSQL protocol (statement policy on), each attack in BEGIN … COMMIT', () => {
  let baseline: Probe

  it.beforeAll(async () => {
    baseline = await httpCheck()
  })

  // B checks over HTTP, on the same router and so on the same pooled connection A's block used.
  async function httpCheck(): Promise<Probe> {
    const answer = await post<{ results: { rows: unknown[][] }[] }>(
      router,
      '/v1/batch',
      { queries: B_CHECK.map((step, i) => ({ ...step, params: i === 1 ? [tenantB] : [], method: 'all' })) },
      { authorization: `Bearer ${keyB}`, 'x-tenant-id': tenantB },
    )
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    const probe = answer.body.results[0]?.rows[0]?.[0] as Probe
    expect(probe.tenant).toBe(tenantB)
    return probe
  }

  it.each(attacks.map((attack) => [attack.title, attack] as const))('%s', async (_title, attack) => {
    const client = new pg.Client({
      host: '127.0.0.1',
      port: router.pgPort as number,
      user: tenantA,
      password: keyA,
      database: 'switchyard',
    })
    const seen: unknown[] = []
    client.on('error', (error) => seen.push(String(error)))
    client.on('notice', (notice) => seen.push(notice.message))
    await client.connect()
    try {
      for (const sql of ['begin', ...attack.steps.map(fill), 'commit']) {
        // Errors are the attack's business: they are kept, as its answers are.
        seen.push(
          await client.query(sql).then(
            (result) => result.rows,
            (error: Error) => error.message,
          ),
        )
      }
      await client.query('rollback').catch(() => {})
    } finally {
      await client.end().catch(() => {})
    }
    expect(JSON.stringify(seen)).not.toContain(marker)
    expect(await bFingerprint()).toEqual(fingerprint)
    await expectFresh(httpCheck, baseline)
    expect((await fetch(`${router.url}/healthz`)).status).toBe(200)
  })
})

/**
 * The router's framing without the router: a transaction as runTransaction sends it, and the pool's
 * rollback of a transaction left open. Errors are the attack's business: they come back as values.
 */
async function framed(
  connection: WireConnection,
  tenant: string,
  write: boolean,
  statements: { sql: string; params: (string | null)[] }[],
): Promise<unknown> {
  try {
    return await runTransaction(connection, {
      tenant,
      epoch: 1,
      capability,
      write,
      statements: statements.map(({ sql, params }) => ({ sql, params })),
      params: statements.map((statement) => statement.params),
    })
  } catch (error) {
    return { error: String(error), cause: (error as { cause?: unknown }).cause }
  } finally {
    if (!connection.broken && connection.transactionStatus !== 'I')
      await connection.execute('rollback').catch(() => {})
  }
}

/**
 * A connection as a router opens one: the router's startup parameters and its check of a new session
 * (session defaults the role gave itself are reset). Each call is a new pool, so a new session.
 */
async function routerSession(node: string): Promise<{ connection: WireConnection; close(): Promise<void> }> {
  const found = routerNodes(topology()).find((candidate) => candidate.name === node)
  if (!found) throw new Error(`no node ${node}`)
  const router = topology().router
  const pools = createPools([found], {
    size: 1,
    statementTimeoutMs: router.statementTimeoutMs,
    tls: router.tls,
    searchPath: topology().tenantSchema.schemas,
  })
  const connection = await pools.pool(node).reserve()
  return {
    connection,
    close: async () => {
      pools.pool(node).release(connection)
      await pools.close()
    },
  }
}

describe.each([
  ['primary', `${SHARD}-primary`, true],
  ['replica', `${SHARD}-replica-1`, false],
] as const)('straight at the %s as the router role, statement policy off', (_node, node, write) => {
  let connection: WireConnection
  let session: { close(): Promise<void> } | undefined
  let baseline: Probe
  const open = async () => {
    await session?.close()
    const opened = await routerSession(node)
    session = opened
    connection = opened.connection
    return connection
  }

  async function directCheck(on: WireConnection): Promise<Probe> {
    const outcome = (await framed(on, tenantB, false, [
      B_CHECK[0] as { sql: string; params: string[] },
      { ...(B_CHECK[1] as { sql: string }), params: [tenantB] },
    ])) as { results?: { rows: (string | null)[][] }[]; error?: string }
    expect(outcome.error, JSON.stringify(outcome)).toBeUndefined()
    const probe = JSON.parse(outcome.results?.[0]?.rows[0]?.[0] ?? '{}') as Probe
    expect(outcome.results?.[1]?.rows[0]).toEqual([String(bCustomers), '0'])
    expect(probe.tenant).toBe(tenantB)
    return probe
  }

  it.beforeAll(async () => {
    baseline = await directCheck(await open())
  })
  it.afterAll(() => session?.close())

  it.each(attacks.map((attack) => [attack.title, attack] as const))('%s', async (_title, attack) => {
    if (connection.broken) await open()
    const used = connection
    const outcome = await framed(
      used,
      tenantA,
      write,
      attack.steps.map((sql) => ({ sql: fill(sql), params: [] })),
    )
    expect(
      JSON.stringify(outcome, (_key, value) => (typeof value === 'bigint' ? String(value) : value)),
    ).not.toContain(marker)
    expect(await bFingerprint()).toEqual(fingerprint)
    // The same connection when it survived; a lost one is a fresh one, which is fresh by definition.
    const next = used.broken ? await open() : used
    await expectFresh(() => directCheck(next), baseline)
    // And a session a router opens next starts as fresh: role defaults A gave the router's role
    // (ALTER ROLE … SET) are found and reset before it serves anyone (on a replica, once replayed).
    const fresh = await eventually(async () => {
      const opened = await routerSession(node).catch(() => undefined)
      return opened
    })
    try {
      await expectFresh(() => directCheck(fresh.connection), baseline)
    } finally {
      await fresh.close()
    }
  })
})

const show = (value: unknown) =>
  JSON.stringify(value, (_key, item) => (typeof item === 'bigint' ? String(item) : item))

/** The server's SQLSTATE under the router's wrappers (TransactionError → PipelineError → PostgresError). */
function sqlstate(outcome: unknown): string | undefined {
  for (let at = (outcome as { cause?: unknown }).cause; at; at = (at as { cause?: unknown }).cause) {
    const code = (at as { code?: unknown }).code
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code
  }
  return undefined
}

describe.each([
  ['primary', `${SHARD}-primary`, true],
  ['replica', `${SHARD}-replica-1`, false],
] as const)(
  'on the %s as the router role, statement policy off (shard migration 0006)',
  (_node, node, write) => {
    // libxml2 evaluates XPath without checking for a cancel (minutes through statement_timeout and
    // pg_terminate_backend); currtid2() follows any row's update chain without RLS.
    it.each([
      "select xpath('/a', '<a/>'::xml)",
      "select xpath('/n:a', '<a/>'::xml, array[array['n', 'urn:n']])",
      "select xpath_exists('/a', '<a/>'::xml)",
      "select xpath_exists('/n:a', '<a/>'::xml, array[array['n', 'urn:n']])",
      "select xmlexists('/a' passing by ref ('<a/>'::xml))",
      "select currtid2('customers', '(0,1)'::tid)",
    ])('%s is refused (42501)', async (sql) => {
      const session = await routerSession(node)
      try {
        const outcome = await framed(session.connection, tenantA, write, [{ sql, params: [] }])
        expect(sqlstate(outcome), show(outcome)).toBe('42501')
      } finally {
        await session.close()
      }
    })

    it("a SET seed in a failed transaction does not choose the next tenant's random()", async () => {
      // `seed` survives RESET ALL (GUC_NO_RESET_ALL) and is hidden from pg_settings; its assign hook
      // reseeds at once, so a rollback restores the setting's value but not the generator's state.
      const expected = await admin.begin(async (sql) => {
        await sql`set local seed = 0.5`
        const [row] = await sql<{ r: string }[]>`select random()::text as r`
        return row?.r
      })
      const session = await routerSession(node)
      try {
        const a = await framed(session.connection, tenantA, write, [
          { sql: 'set seed = 0.5', params: [] },
          { sql: 'select 1 / 0', params: [] },
        ])
        expect(sqlstate(a)).toBe('22012')
        expect(session.connection.broken).toBe(false)
        const b = (await framed(session.connection, tenantB, write, [
          { sql: 'select random()::text', params: [] },
        ])) as { results?: { rows: string[][] }[] }
        const drawn = b.results?.[0]?.rows[0]?.[0]
        expect(drawn).toBeTypeOf('string')
        expect(drawn).not.toBe(expected)
      } finally {
        await session.close()
      }
    })
  },
)

describe("role defaults only a superuser may set are the operator's", () => {
  const role = () => topology().router.role.name
  const roleSettings = async () => {
    const rows = await admin<{ setting: string }[]>`
      select c as setting from pg_db_role_setting s, unnest(s.setconfig) c
      where s.setrole = (select oid from pg_roles where rolname = ${role()})`
    return rows.map((row) => row.setting).sort()
  }
  it.afterAll(async () => {
    await admin.unsafe(`alter role ${role()} reset temp_file_limit`)
  })

  it('new router sessions keep temp_file_limit and serve; a default the role could set itself is reset', async () => {
    // temp_file_limit is superuser-only: the router's role cannot reset it, so refusing every session
    // that starts with it refused them all.
    await admin.unsafe(`alter role ${role()} set temp_file_limit = '8GB'`)
    await admin.unsafe(`alter role ${role()} set synchronous_commit = off`)
    const read = "select current_setting('temp_file_limit'), current_setting('synchronous_commit')"
    const primary = await routerSession(`${SHARD}-primary`)
    try {
      const outcome = (await framed(primary.connection, tenantB, true, [{ sql: read, params: [] }])) as {
        results?: { rows: string[][] }[]
      }
      expect(outcome.results?.[0]?.rows, show(outcome)).toEqual([['8GB', 'on']])
    } finally {
      await primary.close()
    }
    expect(await roleSettings()).toEqual(['temp_file_limit=8GB'])
    // The replica's sessions, once the reset has replayed.
    const replica = await eventually(async () => routerSession(`${SHARD}-replica-1`).catch(() => undefined))
    try {
      const outcome = (await framed(replica.connection, tenantB, false, [{ sql: read, params: [] }])) as {
        results?: { rows: string[][] }[]
      }
      expect(outcome.results?.[0]?.rows, show(outcome)).toEqual([['8GB', 'on']])
    } finally {
      await replica.close()
    }
    // A router started now opens its sessions with the operator's limit on the role, and serves. (B's
    // requests this hour, counted in Redis by every router, are past the default limit by now.)
    const started = await startTestRouter({ rateLimitOverride: 10_000_000 })
    const answer = await post(
      started,
      '/v1/batch',
      { queries: [{ sql: 'select 1 as one', params: [], method: 'all' }] },
      { authorization: `Bearer ${keyB}`, 'x-tenant-id': tenantB, 'x-switchyard-consistency': 'strong' },
    )
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
  })
})
