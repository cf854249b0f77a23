import pg from 'pg'
import { describe, expect } from 'vitest'
import { bumpCacheEpoch, versionsKey } from '../src/directory/cache-versions.ts'
import { runMove, startMove } from '../src/migrate-tenant/mover.ts'
import type { RunningRouter } from '../src/router/server.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { moverDeps } from './move-support.ts'
import { post, query } from './router-support.ts'
import { cli, eventually, shard } from './support.ts'

const SHARD = 'shard-1'
const CACHE = {
  enabled: true,
  tables: { businesses: 3600, services: 1800, menus: 3600, menu_items: 3600, menu_notes: 3600 },
  maxAskedSeconds: 600,
  dependencies: {},
  maxEntryBytes: 1_048_576,
  tenantBytes: 2_097_152,
  localBytes: 8_388_608,
}

/** The same statement and parameters for every tenant: RLS alone tells whose rows it reads. */
const SERVICES = 'select id, name, price::text as price from services order by id'

describe('the read cache (issue 17)', () => {
  let routers: RunningRouter[]
  let tenants: TestTenant[]
  it.beforeAll(async () => {
    routers = [await startTestRouter({ cache: CACHE }), await startTestRouter({ cache: CACHE })]
    tenants = [await tenantWithKey(SHARD), await tenantWithKey(SHARD), await tenantWithKey(SHARD)]
    for (const tenant of tenants) {
      const made = await query(
        routers[0] as RunningRouter,
        tenant,
        'insert into businesses (tenant_id, id, name) values ($1, $1, $2)',
        [tenant.id, `b-${tenant.id}`],
      )
      expect(made.status, JSON.stringify(made.body)).toBe(200)
    }
  })

  it("never answers older than the tenant's last acknowledged write, through either router, nor with another tenant's rows", async () => {
    const primary = connect(shard(SHARD).primary)
    const statuses: Record<string, number> = {}
    // Each tenant in its own sequence (so "its last acknowledged write" is well defined), all at once.
    await Promise.all(
      tenants.map(async (tenant, t) => {
        let seed = 17 + t
        const random = () => {
          seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
          return seed / 2_147_483_648
        }
        const router = () => routers[Math.floor(random() * routers.length)] as RunningRouter
        for (let step = 0; step < 120; step++) {
          const roll = random()
          if (roll < 0.25) {
            const wrote = await query(
              router(),
              tenant,
              'insert into services (tenant_id, business_id, name, duration_minutes, price) values ($1, $1, $2, 30, $3)',
              [tenant.id, `s${step}`, String(step)],
            )
            expect(wrote.status, JSON.stringify(wrote.body)).toBe(200)
          } else if (roll < 0.35) {
            const changed = await query(
              router(),
              tenant,
              'update services set price = price + 1 where tenant_id = $1',
              [tenant.id],
            )
            expect(changed.status, JSON.stringify(changed.body)).toBe(200)
          } else {
            const read = await query<{ rows: string[][] }>(router(), tenant, SERVICES, [], { method: 'all' })
            expect(read.status, JSON.stringify(read.body)).toBe(200)
            const status = read.headers.get('x-switchyard-cache') ?? 'none'
            statuses[status] = (statuses[status] ?? 0) + 1
            const truth = await primary<{ id: string; name: string; price: string }[]>`
              select id, name, price::text as price from services where tenant_id = ${tenant.id} order by id`
            expect(read.body.rows, `tenant ${t} step ${step} (${status})`).toEqual(
              truth.map((row) => [row.id, row.name, row.price]),
            )
          }
        }
      }),
    )
    console.log(`read cache: ${JSON.stringify(statuses)}`)
    // The test means something only if reads were answered from the cache.
    expect(statuses.hit ?? 0).toBeGreaterThan(20)
    expect(statuses.miss ?? 0).toBeGreaterThan(0)
  })

  it('a read of a table not configured, or asking no-cache, or reading the clock, is not cached', async () => {
    const [tenant] = tenants as [TestTenant]
    const router = routers[0] as RunningRouter
    const cases: [string, Record<string, string>][] = [
      ['select count(*) from staff', {}],
      [SERVICES, { 'x-switchyard-cache': 'no-cache' }],
      // It skips the wait for the tenant's last write: what it reads may predate it.
      [SERVICES, { 'x-switchyard-consistency': 'eventual' }],
      ['select name, now() from businesses', {}],
    ]
    for (const [sql, headers] of cases)
      for (let i = 0; i < 2; i++) {
        const answer = await query(router, tenant, sql, [], { headers })
        expect(answer.status).toBe(200)
        expect(answer.headers.get('x-switchyard-cache')).toBe('bypass')
      }
    const bad = await query(router, tenant, SERVICES, [], { headers: { 'x-switchyard-cache': 'forever' } })
    expect(bad.status).toBe(400)
    expect(bad.body).toMatchObject({ error: { code: 'invalid_input' } })
  })

  it('x-switchyard-cache: <seconds> caches any read for that long', async () => {
    const [tenant] = tenants as [TestTenant]
    const router = routers[1] as RunningRouter
    const asked = { 'x-switchyard-cache': '1' }
    const report = 'select count(*)::int as n, max(start_time) as last from appointments'
    const status = async (on: RunningRouter) =>
      (await query(on, tenant, report, [], { headers: asked })).headers.get('x-switchyard-cache')
    // A statement's first request is parsed in it, and admitted before its versions are read: not cached.
    expect(await status(router)).toBe('bypass')
    expect(await status(router)).toBe('miss')
    expect(await status(router)).toBe('hit')
    await new Promise((resolve) => setTimeout(resolve, 1500))
    // Gone from Redis after its TTL; the local copy is keyed the same way and is not consulted alone.
    const later = await query(routers[0] as RunningRouter, tenant, report, [], { headers: asked })
    expect(later.headers.get('x-switchyard-cache')).toBe('miss')
  })

  it('a versions hash that is lost (evicted, expired, a failover) does not bring back an answer from before a write', async ({
    redis,
  }) => {
    const tenant = tenants[1] as TestTenant
    const router = routers[0] as RunningRouter
    const read = async () => {
      const answer = await query<{ rows: string[][] }>(router, tenant, 'select name from businesses', [], {
        method: 'all',
      })
      return {
        status: answer.headers.get('x-switchyard-cache'),
        names: answer.body.rows.map(([name]) => name),
      }
    }
    // Parsed in the first, kept by the second, answered from the cache by the third.
    await read()
    await read()
    const before = await read()
    expect(before.status).toBe('hit')
    const rename = async () => {
      const renamed = await query(
        router,
        tenant,
        "update businesses set name = name || ' (new)' where tenant_id = $1",
        [tenant.id],
      )
      expect(renamed.status).toBe(200)
    }
    await rename()
    // The counters start again from 0, and the next write takes businesses back to 1: without a new
    // generation, that is the key the first answer was kept under.
    await redis.del(versionsKey(tenant.id))
    await rename()
    expect((await read()).names).toEqual(before.names.map((name) => `${name} (new) (new)`))
  })

  it('over the PostgreSQL protocol too: a write in a BEGIN … COMMIT block is never followed by an older answer', async () => {
    const tenant = tenants[2] as TestTenant
    const router = routers[0] as RunningRouter
    const client = await wireClient(router, tenant)
    try {
      const names = async () =>
        (await client.query('select name from businesses order by name')).rows.map((row) => row.name)
      const before = await names()
      expect(await names()).toEqual(before)
      // The same read again over the wire is answered from the cache (once the shard's catalog is read).
      await eventually(async () => {
        const hitsBefore = await cacheHits(router)
        expect(await names()).toEqual(before)
        return (await cacheHits(router)) > hitsBefore || undefined
      })
      await client.query('begin')
      await client.query("update businesses set name = name || ' (renamed)' where tenant_id = $1", [
        tenant.id,
      ])
      await client.query('commit')
      expect(await names()).toEqual(before.map((name: string) => `${name} (renamed)`))
      // And through HTTP on the other router.
      const http = await query<{ rows: string[][] }>(
        routers[1] as RunningRouter,
        tenant,
        'select name from businesses order by name',
        [],
        { method: 'all' },
      )
      expect(http.body.rows.map(([name]) => name)).toEqual(before.map((name: string) => `${name} (renamed)`))
    } finally {
      await client.end()
    }
  })
})

describe("writes outside the routers: a move's cutover and set-limits", () => {
  let router: RunningRouter
  it.beforeAll(async () => {
    router = await startTestRouter({ cache: CACHE })
  })

  /** Reads the tenant's businesses until the router answers from the cache (its shard's catalog is read first). */
  const untilHit = async (tenant: TestTenant) => {
    for (let attempt = 0; attempt < 50; attempt++) {
      const read = await query(router, tenant, 'select name from businesses', [])
      expect(read.status, JSON.stringify(read.body)).toBe(200)
      if (read.headers.get('x-switchyard-cache') === 'hit') return
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    throw new Error('never answered from the cache')
  }
  const status = async (tenant: TestTenant) =>
    (await query(router, tenant, 'select name from businesses', [])).headers.get('x-switchyard-cache')

  it("a cutover forgets the tenant's cached reads", async ({ directory, redis }) => {
    const tenant = await tenantWithKey(SHARD)
    // The target shard's catalog known too, so only the bump can make the read after the move miss.
    await untilHit(await tenantWithKey('shard-2'))
    await untilHit(tenant)
    const move = await startMove(moverDeps(directory, redis), { tenant: tenant.id, target: 'shard-2' })
    expect((await runMove(moverDeps(directory, redis), move.id)).state).toBe('done')
    expect(await status(tenant)).toBe('miss')
  })

  it('an answer a lagging replica gave is not kept, even when the last-write LSN key is gone', async ({
    redis,
  }) => {
    const tenant = await tenantWithKey(SHARD)
    const other = await startTestRouter({ cache: CACHE })
    const rename = (name: string) =>
      query(
        other,
        tenant,
        'insert into businesses (tenant_id, id, name) values ($1, $1, $2) on conflict (tenant_id, id) do update set name = $2',
        [tenant.id, name],
      )
    expect((await rename('v1')).status).toBe(200)
    await untilHit(tenant)
    const replica = connect(shard(SHARD).replicas[0] as string)
    await replica`select pg_wal_replay_pause()`
    try {
      expect((await rename('v2')).status).toBe(200)
      // Without it the router cannot tell the replica is behind the write (read-your-writes is lost).
      await redis.del(`switchyard:lsn:${tenant.id}:${SHARD}`)
      // The case under test: the miss ran on the replica that lacks v2 (and is not kept).
      const lagging = await query<{ rows: { name: string }[] }>(
        router,
        tenant,
        'select name from businesses',
        [],
      )
      expect(lagging.headers.get('x-switchyard-node')).toBe(`${SHARD}-replica-1`)
      expect(lagging.body.rows).toEqual([{ name: 'v1' }])
    } finally {
      await replica`select pg_wal_replay_resume()`
    }
    await eventually(async () => {
      const answer = await query<{ rows: { name: string }[] }>(
        router,
        tenant,
        'select name from businesses',
        [],
      )
      return answer.body.rows[0]?.name === 'v2' ? true : undefined
    })
    // Whatever it read while the replica lagged, nothing older than v2 is ever served again.
    for (let i = 0; i < 5; i++) {
      const answer = await query<{ rows: { name: string }[] }>(
        router,
        tenant,
        'select name from businesses',
        [],
      )
      expect(answer.body.rows).toEqual([{ name: 'v2' }])
    }
  })

  it('Redis out of memory: a write acknowledged without its bump is not followed by an older cached answer', async ({
    redis,
  }) => {
    const tenant = await tenantWithKey(SHARD)
    const other = await startTestRouter({ cache: CACHE })
    const read = () => query<{ rows: { name: string }[] }>(router, tenant, 'select name from businesses', [])
    const made = await query(
      other,
      tenant,
      'insert into businesses (tenant_id, id, name) values ($1, $1, $2)',
      [tenant.id, 'before'],
    )
    expect(made.status).toBe(200)
    await untilHit(tenant)
    await redis.config('SET', 'maxmemory', '1')
    try {
      const renamed = await query(
        other,
        tenant,
        "update businesses set name = 'after' where tenant_id = $1",
        [tenant.id],
      )
      expect(renamed.status).toBe(200)
      // Redis refuses writes, so the lookup fails closed. (Without Redis the last-write LSN is not
      // recorded either: an uncached read may lag, as every read does without Redis.)
      expect((await read()).headers.get('x-switchyard-cache')).toBe('bypass')
    } finally {
      await redis.config('SET', 'maxmemory', '0')
    }
    await eventually(async () => ((await read()).body.rows[0]?.name === 'after' ? true : undefined))
    for (let i = 0; i < 5; i++) expect((await read()).body.rows).toEqual([{ name: 'after' }])
  })

  it("set-limits forgets the tenant's cached reads", async () => {
    const tenant = await tenantWithKey(SHARD)
    await untilHit(tenant)
    const set = await cli(['tenants', 'set-limits', tenant.id, '--max-services', '7'])
    expect(set.code, set.stderr).toBe(0)
    expect(await status(tenant)).toBe('miss')
  })
})

it("a tenant's answers in Redis stay within its budget, and other tenants' still get kept", async ({
  redis,
}) => {
  const router = await startTestRouter({ cache: { ...CACHE, tenantBytes: 5000 } })
  const [greedy, other] = [await tenantWithKey(SHARD), await tenantWithKey(SHARD)] as [TestTenant, TestTenant]
  // About 1.5 KB an answer, a new key each time: the third cannot fit in 5,000 bytes.
  const big = "select repeat('x', 1500) || $1 as filler from businesses where tenant_id is not null or true"
  const kept = async (tenant: TestTenant, n: number) => {
    const sent = () => query(router, tenant, big, [String(n)], { headers: { 'x-switchyard-cache': '600' } })
    await sent()
    await sent()
    return (await sent()).headers.get('x-switchyard-cache') === 'hit'
  }
  await query(router, greedy, 'insert into businesses (tenant_id, id, name) values ($1, $1, $2)', [
    greedy.id,
    'g',
  ])
  await query(router, other, 'insert into businesses (tenant_id, id, name) values ($1, $1, $2)', [
    other.id,
    'o',
  ])
  // Until the router has read the shard's catalog nothing is kept: wait for that on the other tenant.
  await eventually(async () => (await kept(other, 100)) || undefined)
  const greedyKept: boolean[] = []
  for (let n = 0; n < 8; n++) greedyKept.push(await kept(greedy, n))
  // Kept until the budget is spent, then never again (until the longest TTL passes).
  const spent = greedyKept.indexOf(false)
  expect(spent).toBeGreaterThan(0)
  expect(greedyKept.slice(spent)).toEqual(greedyKept.slice(spent).map(() => false))
  const counted = Number(await redis.get(`switchyard:cache:${greedy.id}:kept-bytes`))
  expect(counted).toBeGreaterThan(0)
  expect(counted).toBeLessThanOrEqual(5000)
  expect(await kept(other, 0)).toBe(true)
})

/**
 * Tables the parse does not see whole, made on the shard as a migration would (then the epoch is bumped,
 * as `switchyard migrate` does): a partitioned table written through its partitions, a child table whose
 * foreign key cascades, an updatable view, a trigger that writes another table, a function named like a
 * catalog one. Test-only names, so other files' tests do not meet them.
 */
const CATALOG_DDL = `
  create table menus (tenant_id uuid not null, id int not null, name text not null,
    primary key (tenant_id, id)) partition by range (id);
  create table menus_low partition of menus for values from (minvalue) to (1000);
  create table menus_high partition of menus for values from (1000) to (maxvalue);
  create table menu_items (tenant_id uuid not null, menu_id int not null, name text not null,
    foreign key (tenant_id, menu_id) references menus (tenant_id, id) on delete cascade);
  create view menus_cheap with (security_invoker = true) as select * from menus where id < 1000;
  create table menu_log (tenant_id uuid not null, note text not null);
  create function menu_log_renames() returns trigger language plpgsql as $$
    begin update menus set name = name || new.note where tenant_id = new.tenant_id; return new; end $$;
  create trigger menu_log_renames after insert on menu_log for each row execute function menu_log_renames();
  create table menu_notes (tenant_id uuid not null, note text not null);
  create function menus_low_touches_notes() returns trigger language plpgsql as $$
    begin update menu_notes set note = note || '~' where tenant_id = new.tenant_id; return new; end $$;
  create trigger menus_low_touches_notes after update on menus_low for each row
    execute function menus_low_touches_notes();
  create function menu_log_default() returns text language plpgsql as $$
    begin update menu_notes set note = note || 'd'; return 'n'; end $$;
  create table menu_defaults (tenant_id uuid not null, note text not null default menu_log_default());
  create function make_menu_rename() returns void language sql as $$ update menus set name = name || '#' $$;
  create function upper(integer) returns text language sql volatile as $$ select clock_timestamp()::text $$;
  do $$ declare t text; begin
    foreach t in array array['menus', 'menus_low', 'menus_high', 'menu_items', 'menu_log', 'menu_notes', 'menu_defaults'] loop
      execute format('alter table %I enable row level security', t);
      execute format('alter table %I force row level security', t);
      execute format('create policy tenant_isolation on %I using (tenant_id = (select switchyard.current_tenant())) with check (tenant_id = (select switchyard.current_tenant()))', t);
    end loop; end $$;`

describe('the read cache against what the parse cannot see (the shard catalog)', () => {
  let router: RunningRouter
  let tenant: TestTenant
  it.beforeAll(async ({ redis }) => {
    const admin = connect(shard(SHARD).primary)
    await admin.unsafe(CATALOG_DDL)
    await bumpCacheEpoch(redis)
    router = await startTestRouter({ cache: CACHE })
    tenant = await tenantWithKey(SHARD)
    for (const [sql, params] of [
      ['insert into menus (tenant_id, id, name) values ($1, 1, $2), ($1, 2000, $3)', ['low', 'high']],
      [
        'insert into menu_items (tenant_id, menu_id, name) values ($1, 1, $2), ($1, 2000, $3)',
        ['soup', 'cake'],
      ],
      ['insert into menu_notes (tenant_id, note) values ($1, $2)', ['note']],
    ] as const) {
      const made = await query(router, tenant, sql, [tenant.id, ...params])
      expect(made.status, JSON.stringify(made.body)).toBe(200)
    }
  })
  it.afterAll(async ({ redis }) => {
    // Files share the topology: moves and doctor that follow must not meet these.
    await connect(shard(SHARD).primary).unsafe(`
      drop view if exists menus_cheap;
      drop table if exists menu_log, menu_items, menu_notes, menu_defaults, menus cascade;
      drop function if exists menu_log_renames(), menus_low_touches_notes(), make_menu_rename(), menu_log_default(), upper(integer);`)
    await bumpCacheEpoch(redis)
  })

  /** Reads `sql` until it is answered from the cache; then returns what it reads. */
  const cached = async (sql: string) => {
    for (let attempt = 0; attempt < 50; attempt++) {
      const read = await query<{ rows: unknown[][] }>(router, tenant, sql, [], { method: 'all' })
      expect(read.status, JSON.stringify(read.body)).toBe(200)
      if (read.headers.get('x-switchyard-cache') === 'hit') return read.body.rows
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    throw new Error(`${sql} was never answered from the cache`)
  }
  const read = async (sql: string) => {
    const answer = await query<{ rows: unknown[][] }>(router, tenant, sql, [], { method: 'all' })
    expect(answer.status, JSON.stringify(answer.body)).toBe(200)
    return answer.body.rows
  }
  const write = async (sql: string, params: unknown[] = []) => {
    const wrote = await query(router, tenant, sql, [tenant.id, ...params])
    expect(wrote.status, JSON.stringify(wrote.body)).toBe(200)
  }
  const MENUS = 'select id, name from menus order by id'
  const ITEMS = 'select menu_id, name from menu_items order by menu_id'

  it('a write naming a partition is a write of its partitioned table', async () => {
    expect(await cached(MENUS)).toEqual([
      [1, 'low'],
      [2000, 'high'],
    ])
    await write("update menus_high set name = 'high!' where tenant_id = $1")
    expect(await read(MENUS)).toEqual([
      [1, 'low'],
      [2000, 'high!'],
    ])
  })

  it('a write through a view, and a write whose trigger writes a cached table, forget what they may change', async () => {
    await cached(MENUS)
    await write("update menus_cheap set name = 'low!' where tenant_id = $1")
    expect(await read(MENUS)).toEqual([
      [1, 'low!'],
      [2000, 'high!'],
    ])
    await cached(MENUS)
    await write("insert into menu_log (tenant_id, note) values ($1, '+')")
    expect(await read(MENUS)).toEqual([
      [1, 'low!+'],
      [2000, 'high!+'],
    ])
  })

  it("a write naming a partitioned table forgets what its partitions' own triggers write", async () => {
    const notes = 'select note from menu_notes'
    const before = await cached(notes)
    await write("update menus set name = 'low?' where tenant_id = $1 and id = 1")
    expect(await read(notes)).toEqual(before.map(([note]) => [`${note}~`]))
  })

  it('a column default that writes another table forgets what it wrote', async () => {
    const notes = 'select note from menu_notes'
    const before = await cached(notes)
    await write('insert into menu_defaults (tenant_id) values ($1)')
    expect(await read(notes)).toEqual(before.map(([note]) => [`${note}d`]))
  })

  it('a delete that cascades forgets the rows it took from the other table', async () => {
    const before = await cached(ITEMS)
    await write('delete from menus where tenant_id = $1 and id = 2000')
    expect(await read(ITEMS)).toEqual(before.filter(([id]) => id !== 2000))
  })

  it("does not keep reads of a view, reads that may call the tenant schemas' own functions, or a 'now' parameter", async () => {
    for (const [sql, params] of [
      ['select id, name from menus_cheap', []],
      ['select upper(id) from menus', []],
      ['select name from services where created_at < $1', ['now']],
    ] as const)
      for (let i = 0; i < 3; i++) {
        const answer = await query(router, tenant, sql, [...params])
        expect(answer.status, JSON.stringify(answer.body)).toBe(200)
        expect(answer.headers.get('x-switchyard-cache'), sql).toBe('bypass')
      }
  })

  // Last: a block's COMMIT has no LSN here, so the tenant's answers are kept only from the primary for
  // 10 minutes after it, and the tests above wait for hits.
  it("a BEGIN … COMMIT block calling a tenant schema's function named like a catalog read forgets what it wrote", async () => {
    const before = await cached(MENUS)
    const client = await wireClient(router, tenant)
    try {
      await client.query('begin')
      await client.query('select make_menu_rename()')
      await client.query('commit')
    } finally {
      await client.end()
    }
    expect(await read(MENUS)).toEqual(before.map(([id, name]) => [id, `${name}#`]))
  })
})

it("over Neon's /sql too: hits, and a write is never followed by an older answer", async () => {
  const router = await startTestRouter({ cache: CACHE })
  const tenant = await tenantWithKey(SHARD)
  const headers = {
    'Neon-Connection-String': `postgresql://${tenant.id}:${encodeURIComponent(tenant.key)}@router.local/app`,
  }
  const sql = (query: string, params: unknown[] = []) =>
    post<{ rows: { name: string }[] }>(router, '/sql', { query, params }, headers)
  const made = await sql('insert into businesses (tenant_id, id, name) values ($1, $1, $2)', [
    tenant.id,
    'neon',
  ])
  expect(made.status, JSON.stringify(made.body)).toBe(200)
  await eventually(async () => {
    const read = await sql('select name from businesses')
    expect(read.body.rows).toEqual([{ name: 'neon' }])
    return read.headers.get('x-switchyard-cache') === 'hit' || undefined
  })
  expect((await sql("update businesses set name = 'neon 2' where tenant_id = $1", [tenant.id])).status).toBe(
    200,
  )
  expect((await sql('select name from businesses')).body.rows).toEqual([{ name: 'neon 2' }])
})

/** A node-postgres client of `tenant` on the router's PostgreSQL port. */
async function wireClient(router: RunningRouter, tenant: TestTenant): Promise<pg.Client> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: router.pgPort as number,
    user: tenant.id,
    password: tenant.key,
    database: 'switchyard',
  })
  await client.connect()
  return client
}

/** The router's read cache hits so far, from its /metrics. */
async function cacheHits(router: RunningRouter): Promise<number> {
  const text = await (await fetch(`${router.url}/metrics`)).text()
  return text
    .split('\n')
    .filter((line) => line.startsWith('switchyard_cache_lookups_total{') && line.includes('result="hit"'))
    .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0)
}
