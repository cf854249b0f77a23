import { describe, expect } from 'vitest'
import { readRouterCapability } from '../src/directory/capability.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import {
  hourOf,
  OTHER_FINGERPRINT,
  readStatementStats,
  type StatementRow,
  tenantSummaries,
} from '../src/directory/statement-stats.ts'
import { classify, loadPolicy } from '../src/router/policy.ts'
import type { RunningRouter } from '../src/router/server.ts'
import type { NodeStatement } from '../src/shard/stat-statements.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { post, query, wireClient } from './router-support.ts'
import { asRouter, cli, eventually, shard, topology } from './support.ts'

/**
 * Per-tenant statement statistics (issue 18): two routers count a tenant's statements and flush them
 * to Redis, where they add up; `switchyard top` reads the sum. Also the bounds (a tenant's fingerprints
 * past the cap count in `other`), the admin endpoint, `shards top` (pg_stat_statements of the nodes),
 * and that SQL run as the router's role cannot read pg_stat_statements.
 */

const SLOW = 'select pg_sleep($1::float8) as slept'
const FAST = 'select g from generate_series(1, 3) g'
const FAILING = 'select 1 / $1::int as ratio'

let routerA: RunningRouter
let routerB: RunningRouter
let tenant: TestTenant
let other: TestTenant
let adminKey: string

await loadPolicy()
const fingerprint = (sql: string) => classify(sql).fingerprint

it.beforeAll(async () => {
  ;[routerA, routerB, tenant, other] = await Promise.all([
    startTestRouter(),
    startTestRouter(),
    tenantWithKey('shard-1'),
    tenantWithKey('shard-1'),
  ])
  adminKey = await withDirectory(topology(), async (directory) => {
    const made = await createKey(directory, { scope: 'admin', name: 'statement-stats test' })
    return made.key
  })
})

const neonHeaders = (who: TestTenant) => ({
  'Neon-Connection-String': `postgresql://${who.id}:${encodeURIComponent(who.key)}@router.local/app`,
})

/** The tenant's statements through the PostgreSQL protocol: one alone, one inside BEGIN … COMMIT. */
async function overWire(router: RunningRouter, who: TestTenant, sql: string): Promise<void> {
  const client = wireClient(router, who)
  await client.connect()
  try {
    expect((await client.query(sql)).rows).toHaveLength(3)
    await client.query('begin')
    expect((await client.query(sql)).rows).toHaveLength(3)
    await client.query('commit')
  } finally {
    await client.end()
  }
}

async function top(args: string[]): Promise<StatementRow[]> {
  const ran = await cli(['top', '--json', ...args])
  expect(ran.code, ran.stderr).toBe(0)
  return (JSON.parse(ran.stdout) as { statements: StatementRow[] }).statements
}

describe('switchyard top: statements per tenant, merged over two routers', () => {
  it("lists the tenant's slow statement first, with its fingerprint, and the counts sent", async ({
    redis,
  }) => {
    // 3 slow reads (over the seed's 100 ms), 8 fast ones by every protocol, 1 failing: over both routers.
    const sentFrom = Date.now()
    for (const router of [routerA, routerB, routerA]) {
      const slept = await query(router, tenant, SLOW, ['0.15'])
      expect(slept.status).toBe(200)
    }
    for (const router of [routerA, routerB, routerA, routerB, routerB]) {
      const answer = await query(router, tenant, FAST)
      expect(answer.status).toBe(200)
    }
    const neon = await post(routerB, '/sql', { query: FAST, params: [] }, neonHeaders(tenant))
    expect(neon.status).toBe(200)
    await overWire(routerA, tenant, FAST)
    const failed = await query<{ error: { code: string } }>(routerB, tenant, FAILING, ['0'])
    expect(failed.body.error.code).toBe('sql_error')
    // Another tenant on the same routers and shard: never listed under the first.
    expect((await query(routerA, other, SLOW, ['0.12'])).status).toBe(200)
    expect((await query(routerB, other, FAST)).status).toBe(200)

    const [slow, fast, failing] = [fingerprint(SLOW), fingerprint(FAST), fingerprint(FAILING)]
    // Each router flushes every second: wait for both to have sent both tenants' statements.
    const read = (tenantId?: string) =>
      readStatementStats(redis, { tenant: tenantId, by: 'calls', limit: 1_000_000, hours: 2 })
    const callsOf = async (who: TestTenant) => (await read(who.id)).reduce((sum, row) => sum + row.calls, 0)
    await eventually(async () =>
      (await callsOf(tenant)) >= 12 && (await callsOf(other)) >= 2 ? true : undefined,
    )
    // Two clock hours: the statements may have been sent just before the hour turned.
    const listed = await top(['--tenant', tenant.id, '--hours', '2'])
    // The slow one first; the fast eight and the failing one by their total time, which on a loaded
    // machine may go either way (one failing call against eight of a few ms).
    expect(listed.map((row) => [row.fingerprint, row.calls, row.errors, row.rows])).toEqual([
      [slow, 3, 0, 3],
      ...[
        [fast, 8, 0, 24],
        [failing, 1, 1, 0],
      ].sort(
        (a, b) =>
          listed.findIndex((row) => row.fingerprint === a[0]) -
          listed.findIndex((row) => row.fingerprint === b[0]),
      ),
    ])
    const [first] = listed
    expect(first).toMatchObject({ tenant: tenant.id, query: SLOW, slow: true })
    expect(first?.p99Ms).toBeGreaterThan(100)
    expect(first?.totalMs).toBeGreaterThan(3 * 150)
    expect(listed.every((row) => row.tenant === tenant.id)).toBe(true)
    const fastRow = listed.find((row) => row.fingerprint === fast)
    expect(fastRow).toMatchObject({ query: 'select g from generate_series($1, $2) g', slow: false })
    expect(fastRow?.p99Ms).toBeLessThan(100)

    // As a table: slowest first, marked over the seed's 100 ms, the normalized text.
    const table = await cli(['top', '--tenant', tenant.id, '--hours', '2'])
    const lines = table.stdout.trim().split('\n')
    expect(lines[0]).toMatch(
      /^tenant +fingerprint +calls +errors +totalMs +meanMs +p99Ms +rows +slow +query$/,
    )
    expect(lines[1]).toContain(slow)
    expect(lines[1]).toContain('3 > 100 ms')
    expect(lines[1]).toContain(SLOW)
    expect(lines).toHaveLength(4)

    // Without a tenant every tenant's statements are read: both are there, by calls (then total time).
    const everyone = await read()
    const fingerprintsOf = (who: TestTenant) =>
      everyone.filter((row) => row.tenant === who.id).map((row) => [row.fingerprint, row.calls])
    expect(fingerprintsOf(other)).toEqual([
      [slow, 1],
      [fast, 1],
    ])
    expect(fingerprintsOf(tenant)).toEqual([
      [fast, 8],
      [slow, 3],
      [failing, 1],
    ])
    const cut = await top(['--limit', '2'])
    expect(cut.length).toBeLessThanOrEqual(2)

    // The same read over the admin API; the console's per-tenant summary of this hour.
    const response = await fetch(
      `${routerA.url}/admin/v1/stats/statements?tenant=${tenant.id}&by=total&limit=2&hours=2`,
      { headers: { authorization: `Bearer ${adminKey}` } },
    )
    expect(response.status).toBe(200)
    const body = (await response.json()) as { statements: StatementRow[]; slowMs: number }
    expect(body.slowMs).toBe(100)
    expect(body.statements.map((row) => [row.fingerprint, row.calls])).toEqual([
      [slow, 3],
      [fast, 8],
    ])
    // Unless the clock hour turned since the requests were sent, this hour holds them all.
    if (hourOf(sentFrom) === hourOf(Date.now())) {
      const summary = (await tenantSummaries(redis)).find((row) => row.tenant === tenant.id)
      expect(summary).toMatchObject({ calls: 12, errors: 1 })
      expect(summary?.p99Ms).toBeGreaterThan(100)
    }
  })

  it('shows each tenant its own text, and never a constant or a comment', async ({ redis }) => {
    const [third, fourth] = await Promise.all([tenantWithKey('shard-1'), tenantWithKey('shard-1')])
    // The fingerprint ignores select aliases: the slow statement, with another alias.
    const napped = 'select pg_sleep($1::float8) as napped'
    expect(fingerprint(napped)).toBe(fingerprint(SLOW))
    expect((await query(routerB, fourth, SLOW, ['0.001'])).status).toBe(200)
    expect((await query(routerA, third, napped, ['0.001'])).status).toBe(200)
    // Slow enough (200 ms) to be among the statements `shards top` lists however busy the shards were.
    const commented = 'select pg_sleep($1::float8 * 2) as two /* password=hunter2 */'
    expect((await query(routerB, third, commented, ['0.1'])).status).toBe(200)
    // A JSON_TABLE's PATH is a constant that libpg-query's normalize() left in its text.
    const jsonTable = `select * from json_table('{"a":1}'::jsonb, 'lax $' columns (a int path $$$.hunter2$$)) jt`
    expect((await query(routerA, third, jsonTable)).status).toBe(200)
    const read = (who: TestTenant) =>
      readStatementStats(redis, { tenant: who.id, by: 'calls', limit: 100, hours: 2 })
    const rows = await eventually(async () => {
      const found = await read(third)
      const calls = found.reduce((sum, row) => sum + row.calls, 0)
      return calls >= 3 && (await read(fourth)).length > 0 ? found : undefined
    })
    expect(rows.map((row) => row.query).sort()).toEqual([
      'select * from json_table($1::jsonb, $2 columns (a int path $3)) jt',
      'select pg_sleep($1::float8 * $2) as two',
      napped,
    ])
    expect((await top(['--tenant', fourth.id, '--hours', '2'])).map((row) => row.query)).toEqual([SLOW])
  })

  it('refuses a bad query with invalid_input, on the admin API and the CLI', async () => {
    const response = await fetch(`${routerA.url}/admin/v1/stats/statements?by=mean`, {
      headers: { authorization: `Bearer ${adminKey}` },
    })
    expect(response.status).toBe(400)
    expect(await response.json()).toMatchObject({ error: { code: 'invalid_input' } })
    const ran = await cli(['top', '--limit', '0'])
    expect(ran.code).toBe(1)
    expect(ran.stderr).toContain('[invalid_input]')
  })
})

describe('bounds: a tenant sending endless distinct SQL', () => {
  it('keeps at most the cap of fingerprints, in memory and in Redis; the rest add up in other', async () => {
    const bounded = { fingerprintsPerTenant: 5, flushMs: 60_000 }
    const [routerC, routerD, flooder] = await Promise.all([
      startTestRouter({ statementStats: { ...topology().router.statementStats, ...bounded } }),
      startTestRouter({ statementStats: { ...topology().router.statementStats, ...bounded } }),
      tenantWithKey('shard-2'),
    ])
    // 12 distinct fingerprints, each twice, half through each router (4 of them on both).
    const sql = (i: number) => `select g${i} from generate_series(1, 2) g${i}`
    for (let i = 0; i < 12; i++)
      for (const router of i < 4 ? [routerC, routerD] : i % 2 ? [routerC, routerC] : [routerD, routerD]) {
        const answer = await query(router, flooder, sql(i))
        expect(answer.status).toBe(200)
      }
    const held = (router: RunningRouter) => router.app.statementStats?.held(flooder.id)
    expect(held(routerC)).toBe(6)
    expect(held(routerD)).toBe(6)
    // Closing flushes what each router holds.
    await Promise.all([routerC.close(), routerD.close()])
    const rows = await top(['--tenant', flooder.id, '--hours', '2', '--limit', '100'])
    const named = rows.filter((row) => row.fingerprint !== OTHER_FINGERPRINT)
    expect(named.length).toBeLessThanOrEqual(5)
    expect(rows.length).toBeLessThanOrEqual(6)
    expect(rows.reduce((sum, row) => sum + row.calls, 0)).toBe(24)
    expect(rows.reduce((sum, row) => sum + row.rows, 0)).toBe(48)
    expect(rows.find((row) => row.fingerprint === OTHER_FINGERPRINT)?.calls).toBeGreaterThan(0)
  })
})

describe('the shard side: pg_stat_statements', () => {
  it('switchyard shards top lists statements of the primaries and the replicas', async () => {
    const ran = await cli(['shards', 'top', '--json', '--limit', '1000'])
    expect(ran.code, ran.stderr).toBe(0)
    const read = JSON.parse(ran.stdout) as {
      nodes: { name: string; error?: string }[]
      statements: NodeStatement[]
    }
    expect(read.nodes.filter((node) => node.error)).toEqual([])
    expect(read.statements.some((row) => row.role === 'primary')).toBe(true)
    expect(read.statements.some((row) => row.role === 'replica')).toBe(true)
    // The tenant's slow reads ran on shard-1 as the router's role (on its replica unless it was not fit).
    const slept = read.statements.filter((row) => row.shard === 'shard-1' && row.query === SLOW)
    expect(slept.reduce((sum, row) => sum + row.calls, 0)).toBeGreaterThanOrEqual(3)
    expect(slept.every((row) => row.user === topology().router.role.name)).toBe(true)
    // The comment PostgreSQL keeps in its text, and the constant it would not normalize, are not shown.
    const shown = read.statements.map((row) => row.query).join('\n')
    expect(shown).toContain('select pg_sleep($1::float8 * $2) as two')
    expect(shown).not.toMatch(/hunter2|\/\*/)
  })

  it("the router's role can neither use switchyard_stats nor execute its functions, on a primary or a replica", async () => {
    const capability = await withDirectory(topology(), readRouterCapability)
    for (const node of [shard('shard-1').primary, shard('shard-1').replicas[0] as string]) {
      const router = connect(asRouter(node))
      const [privileges] = await router<{ usage: boolean; functions: number; executable: string[] }[]>`
        select has_schema_privilege(current_user, 'switchyard_stats', 'USAGE') as usage,
               (select count(*)::int from pg_proc where pronamespace = 'switchyard_stats'::regnamespace) as functions,
               coalesce((select array_agg(proname::text) from pg_proc
                         where pronamespace = 'switchyard_stats'::regnamespace
                           and has_function_privilege(current_user, oid, 'EXECUTE')), '{}') as executable`
      expect(privileges).toEqual({ usage: false, functions: expect.any(Number), executable: [] })
      expect(privileges?.functions).toBeGreaterThanOrEqual(3)
      // As a tenant's SQL runs, with no router check in the way: refused by the shard.
      for (const sql of [
        'select query from switchyard_stats.pg_stat_statements',
        'select query from switchyard_stats.pg_stat_statements(true)',
        'select * from switchyard_stats.pg_stat_statements_info',
        'select switchyard_stats.pg_stat_statements_reset()',
      ]) {
        const refused = await router
          .begin(async (tx) => {
            await tx`select switchyard.enter(${tenant.id}, 1, false, null, ${capability})`
            return tx.unsafe(sql)
          })
          .then(
            () => undefined,
            (error: { code?: string }) => error.code,
          )
        expect(refused, sql).toBe('42501')
      }
    }
  })
  it('doctor names a grant on switchyard_stats to the router role, and migrate takes it back', async () => {
    const admin = connect(shard('shard-1').primary)
    const role = topology().router.role.name
    await admin.unsafe(`grant usage on schema switchyard_stats to ${role}`)
    await admin.unsafe(`grant execute on function switchyard_stats.pg_stat_statements(boolean) to public`)
    try {
      // Only this check: other findings belong to what other test files left.
      const sessions = async () => {
        const { findings } = JSON.parse((await cli(['doctor', '--json'])).stdout) as {
          findings: { check: string; target: string; ok: boolean; detail: string }[]
        }
        return findings
          .filter(
            (finding) => finding.check === 'router role cannot change its session or see other sessions',
          )
          .filter((finding) => !finding.ok)
          .map((finding) => [finding.target, finding.detail])
      }
      expect(await sessions()).toEqual([
        [
          'shard-1-primary',
          `${role} has USAGE on switchyard_stats, EXECUTE on switchyard_stats functions (run \`switchyard migrate\`)`,
        ],
      ])
      expect((await cli(['migrate'])).code).toBe(0)
      expect(await sessions()).toEqual([])
    } finally {
      await admin.unsafe(`revoke all on schema switchyard_stats from ${role}`)
      await admin.unsafe(`revoke all on all functions in schema switchyard_stats from public`)
    }
  })
})
