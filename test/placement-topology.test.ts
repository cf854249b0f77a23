import { describe, expect } from 'vitest'
import { withDirectory } from '../src/directory/connection.ts'
import { migrateAll } from '../src/directory/migrate.ts'
import { addTenant } from '../src/directory/tenants.ts'
import { placeTenant } from '../src/placement/placement.ts'
import { createRebalancePlan, type StoredPlan } from '../src/placement/plans.ts'
import type { ShardStats, TenantDescription } from '../src/placement/stats.ts'
import { connect, it, removeTenants, startTestRouter, tenantWithKey } from './fixtures.ts'
import { newApiRequest, query } from './router-support.ts'
import { cli, newTenantId, shard, topology } from './support.ts'

const SHARDS = ['shard-1', 'shard-2', 'shard-3']
const directory = () => connect(topology().directory)

/** Everything this file creates, removed again whatever happens: later files need the room. */
const created: string[] = []
const plans: string[] = []

async function restore() {
  if (plans.length) await directory()`delete from rebalance_plans where id = any(${plans.splice(0)}::uuid[])`
  await removeTenants(created.splice(0))
  await directory()`update shards set state = 'active', capacity = 100 where state <> 'active' or capacity <> 100`
}

it.afterAll(async () => {
  await restore()
})

/** Tenants per shard, as the directory counts them. */
async function fills(): Promise<Record<string, number>> {
  const rows = await directory()<{ id: string; tenants: number }[]>`
    select s.id, count(t.id)::int as tenants from shards s left join tenants t on t.shard_id = s.id
    group by s.id order by s.id`
  return Object.fromEntries(rows.map((row) => [row.id, row.tenants]))
}

async function shardState(id: string): Promise<string> {
  const [row] = await directory()<{ state: string }[]>`select state from shards where id = ${id}`
  return row?.state as string
}

async function planCount(): Promise<number> {
  const [row] = await directory()<{ n: number }[]>`select count(*)::int as n from rebalance_plans`
  return row?.n ?? 0
}

/** Adds tenants without naming a shard, `parallel` at a time, through the library (300 CLI runs take minutes). */
async function place(count: number, parallel = 4): Promise<PromiseSettledResult<string>[]> {
  return withDirectory(topology(), async (d) => {
    const outcomes: PromiseSettledResult<string>[] = []
    for (let i = 0; i < count; i += parallel) {
      const batch = Array.from({ length: Math.min(parallel, count - i) }, async () => {
        const id = newTenantId()
        created.push(id)
        return (await addTenant(d, topology(), { id }, placeTenant)).shardId
      })
      outcomes.push(...(await Promise.allSettled(batch)))
    }
    return outcomes
  })
}

describe('automatic placement and drains on the real topology', () => {
  it('draining shard-3 plans every one of its tenants onto shard-1 and shard-2 when they have room', async () => {
    // This file may run first: make sure shard-3 has tenants to drain.
    await withDirectory(topology(), async (d) => {
      for (let i = 0; i < 2; i++) {
        const id = newTenantId()
        created.push(id)
        await addTenant(d, topology(), { id, shard: 'shard-3' })
      }
    })
    const before = await fills()
    const drained = await cli(['shards', 'drain', 'shard-3', '--json'])
    expect(drained.code, drained.stderr).toBe(0)
    const plan = JSON.parse(drained.stdout) as StoredPlan
    plans.push(plan.id)
    expect(plan).toMatchObject({ strategy: 'drain', shard: 'shard-3', state: 'planned', balanced: true })

    const onShard3 = await directory()<{ id: string }[]>`select id from tenants where shard_id = 'shard-3'`
    expect(plan.moves.map((m) => m.tenant).sort()).toEqual(onShard3.map((t) => t.id).sort())
    expect(plan.moves.every((m) => m.from === 'shard-3' && ['shard-1', 'shard-2'].includes(m.to))).toBe(true)
    expect(plan.moves.every((m) => m.state === 'pending' && m.moveId === null)).toBe(true)
    const after = Object.fromEntries(plan.after.map((s) => [s.id, s]))
    for (const id of ['shard-1', 'shard-2']) {
      const arriving = plan.moves.filter((m) => m.to === id).length
      expect(after[id]?.tenants).toBe((before[id] ?? 0) + arriving)
      expect(after[id]?.tenants).toBeLessThanOrEqual(100)
    }
    expect(after['shard-3']?.tenants).toBe(0)
    expect(plan.before.find((s) => s.id === 'shard-3')).toMatchObject({
      state: 'active',
      tenants: before['shard-3'],
    })

    // Stored: the shard is draining, the moves are in the directory in plan order.
    expect(await shardState('shard-3')).toBe('draining')
    const stored = await directory()<{ tenant_id: string; position: number }[]>`
      select tenant_id, position from rebalance_plan_moves where plan_id = ${plan.id} order by position`
    expect(stored.map((m) => m.tenant_id)).toEqual(plan.moves.map((m) => m.tenant))

    // `migrate` syncs capacities from the config, but a drain set in the directory stays.
    await migrateAll(topology())
    expect(await shardState('shard-3')).toBe('draining')

    // Placement skips a draining shard; naming it is refused.
    const placed = await place(6)
    expect(placed.every((o) => o.status === 'fulfilled' && o.value !== 'shard-3')).toBe(true)
    const refused = await withDirectory(topology(), (d) =>
      addTenant(d, topology(), { id: newTenantId(), shard: 'shard-3' }),
    ).catch((e) => e)
    expect(refused).toMatchObject({ code: 'shard_draining' })

    const shown = await cli(['rebalance', 'show', '--json'])
    expect(JSON.parse(shown.stdout)).toMatchObject({ id: plan.id, moves: plan.moves })

    const undrained = await cli(['shards', 'undrain', 'shard-3', '--json'])
    expect(undrained.code, undrained.stderr).toBe(0)
    expect(JSON.parse(undrained.stdout)).toMatchObject({
      shard: { id: 'shard-3', state: 'active' },
      cancelledPlans: [plan.id],
    })
    expect(await shardState('shard-3')).toBe('active')
    await restore()
  })

  it('concurrent automatic adds never overfill: room for 3 across the shards, 8 adds, 3 placed', async () => {
    const before = await fills()
    try {
      for (const id of SHARDS)
        await directory()`update shards set capacity = ${(before[id] ?? 0) + 1} where id = ${id}`
      const outcomes = await place(8, 8)
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(3)
      const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected')
      expect(refused.map((o) => o.reason.code)).toEqual(Array(5).fill('no_capacity'))
      const after = await fills()
      for (const id of SHARDS) expect(after[id]).toBe((before[id] ?? 0) + 1)
    } finally {
      await restore()
    }
  })

  it('placing 300 tenants fills 3 shards to 100 each; then there is no capacity, and draining shard-3 says no_capacity and writes nothing', async () => {
    const start = await fills()
    const existing = SHARDS.reduce((sum, id) => sum + (start[id] ?? 0), 0)
    expect(existing).toBeLessThan(300)
    try {
      const outcomes = await place(300 - existing - 1)
      const failed = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected')
      expect(failed.map((o) => o.reason)).toEqual([])
      // The last one through the CLI, without --shard.
      const lastId = newTenantId()
      created.push(lastId)
      const last = await cli(['tenants', 'add', lastId, '--json'])
      expect(last.code, last.stderr).toBe(0)
      expect(await fills()).toEqual({ 'shard-1': 100, 'shard-2': 100, 'shard-3': 100 })
      // Each placed tenant is owned by the shard the directory names.
      for (const id of SHARDS) {
        const [owned] = await connect(shard(id).primary)<{ n: number }[]>`
          select count(*)::int as n from switchyard.tenant_ownership
          where tenant_id = any(${created}::uuid[]) and state = 'owner'`
        expect(owned?.n).toBe(100 - (start[id] ?? 0))
      }

      const oneMore = newTenantId()
      const full = await cli(['tenants', 'add', oneMore])
      expect(full.code).toBe(1)
      expect(full.stderr).toMatch(/^error \[no_capacity\]: /)
      expect(full.stderr).toContain('shard-1 100/100, shard-2 100/100, shard-3 100/100')
      const [written] = await directory()`select id from tenants where id = ${oneMore}`
      expect(written).toBeUndefined()

      const plansBefore = await planCount()
      const drain = await cli(['shards', 'drain', 'shard-3'])
      expect(drain.code).toBe(1)
      expect(drain.stderr).toMatch(/^error \[no_capacity\]: the 100 tenants of shard-3 do not fit/)
      expect(await shardState('shard-3')).toBe('active')
      expect(await planCount()).toBe(plansBefore)

      const listed = await cli(['shards', 'list', '--json'])
      expect(listed.code, listed.stderr).toBe(0)
      const stats = JSON.parse(listed.stdout) as ShardStats[]
      expect(stats.map((s) => [s.id, s.state, s.tenants, s.capacity])).toEqual(
        SHARDS.map((id) => [id, 'active', 100, 100]),
      )
      for (const s of stats) {
        expect(s.error).toBeUndefined()
        expect(s.rows).toBeGreaterThanOrEqual(0)
        expect(s.bytes).toBeGreaterThan(0)
        expect(s.replicas).toEqual([{ name: `${s.id}-replica-1`, lagBytes: expect.any(Number) }])
      }
    } finally {
      await restore()
    }
    expect(await fills()).toEqual(start)
  })
})

describe('stats and stored rebalance plans', () => {
  it('tenants show: exact rows and bytes per table, and the requests the routers counted this hour', async () => {
    const router = await startTestRouter()
    const tenant = await tenantWithKey('shard-1')
    created.push(tenant.id)
    const business = await query<{ rows: { id: string }[] }>(
      router,
      tenant,
      'insert into businesses (tenant_id, name) values ($1, $2) returning id',
      [tenant.id, 'Estudio Norte'],
    )
    for (const n of [1, 2, 3]) {
      const added = await query(
        router,
        tenant,
        'insert into services (tenant_id, business_id, name, duration_minutes, price) values ($1, $2, $3, 30, 10)',
        [tenant.id, business.body.rows[0]?.id, `service ${n}`],
      )
      expect(added.status).toBe(200)
    }
    try {
      const shown = await cli(['tenants', 'show', tenant.id, '--json'])
      expect(shown.code, shown.stderr).toBe(0)
      const described = JSON.parse(shown.stdout) as TenantDescription
      expect(described).toMatchObject({ id: tenant.id, shardId: 'shard-1', ownership: { state: 'owner' } })
      const tables = Object.fromEntries((described.usage.tables ?? []).map((t) => [t.table, t]))
      expect(tables['public.businesses']?.rows).toBe(1)
      expect(tables['public.services']?.rows).toBe(3)
      expect(tables['public.appointments']?.rows).toBe(0)
      expect(tables['public.services']?.bytes).toBeGreaterThan(0)
      expect(described.usage.rows).toBe(4)
      expect(described.usage.bytes).toBe((described.usage.tables ?? []).reduce((sum, t) => sum + t.bytes, 0))
      const [direct] = await connect(shard('shard-1').primary)<{ bytes: number }[]>`
        select sum(pg_column_size(s.*))::int as bytes from services s where tenant_id = ${tenant.id}`
      expect(tables['public.services']?.bytes).toBe(direct?.bytes)
      expect(described.usage.requests).toMatchObject({ available: true, count: 4, windowSeconds: 3600 })
      expect(described.effectiveLimits).toEqual(topology().tenantLimits)
    } finally {
      await connect(shard('shard-1').primary)`delete from services where tenant_id = ${tenant.id}`
      await connect(shard('shard-1').primary)`delete from businesses where tenant_id = ${tenant.id}`
      await restore()
    }
  })

  it('tenants set-limits overrides limits in the directory, and a running router applies them at once', async () => {
    const router = await startTestRouter()
    const tenant = await tenantWithKey('shard-2', { max_staff: 9 })
    created.push(tenant.id)
    try {
      expect((await query(router, tenant, 'select 1')).status).toBe(200) // the route is cached now
      const set = await cli([
        'tenants',
        'set-limits',
        tenant.id,
        '--api-rate-limit',
        '2',
        '--max-services',
        '20',
        '--max-staff',
        'default',
        '--json',
      ])
      expect(set.code, set.stderr).toBe(0)
      expect(JSON.parse(set.stdout)).toMatchObject({
        id: tenant.id,
        limits: { api_rate_limit: 2, max_services: 20 },
        effectiveLimits: { ...topology().tenantLimits, api_rate_limit: 2, max_services: 20 },
      })
      const [row] = await directory()`select limits from tenants where id = ${tenant.id}`
      expect(row?.limits).toEqual({ api_rate_limit: 2, max_services: 20 })
      for (let i = 0; i < 2; i++)
        expect((await query(router, tenant, 'select 1', [], { headers: newApiRequest() })).status).toBe(200)
      expect((await query(router, tenant, 'select 1', [], { headers: newApiRequest() })).status).toBe(429)

      for (const [flag, value] of [
        ['--max-staff', '-1'],
        ['--max-staff', 'lots'],
        ['--max-staff', '1.5'],
      ]) {
        const bad = await cli(['tenants', 'set-limits', tenant.id, flag as string, value as string])
        expect(bad.code).toBe(1)
        expect(bad.stderr).toMatch(/^error \[invalid_input\]: --max-staff/)
      }
      const none = await cli(['tenants', 'set-limits', tenant.id])
      expect(none.stderr).toMatch(/^error \[invalid_input\]: .*at least one limit/)
      const [unchanged] = await directory()`select limits from tenants where id = ${tenant.id}`
      expect(unchanged?.limits).toEqual({ api_rate_limit: 2, max_services: 20 })
    } finally {
      await restore()
    }
  })

  it('rebalance plan --strategy count evens the counts and is stored; size weighs tenants by their bytes', async () => {
    // Make the shards uneven: four more on shard-1.
    await withDirectory(topology(), async (d) => {
      for (let i = 0; i < 4; i++) {
        const id = newTenantId()
        created.push(id)
        await addTenant(d, topology(), { id, shard: 'shard-1' })
      }
    })
    try {
      const before = await fills()
      const result = await cli(['rebalance', 'plan', '--strategy', 'count', '--json'])
      expect(result.code, result.stderr).toBe(0)
      const plan = JSON.parse(result.stdout) as StoredPlan
      plans.push(plan.id)
      expect(plan).toMatchObject({ strategy: 'count', shard: null, state: 'planned', balanced: true })
      expect(plan.before.map((s) => [s.id, s.tenants])).toEqual(SHARDS.map((id) => [id, before[id]]))
      const counts = plan.after.map((s) => s.tenants)
      expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1)
      expect(new Set(plan.moves.map((m) => m.tenant)).size).toBe(plan.moves.length)
      expect(plan.moves.map((m) => m.position)).toEqual(plan.moves.map((_, i) => i))

      const bad = await cli(['rebalance', 'plan', '--strategy', 'random'])
      expect(bad.code).toBe(2)

      // Give one tenant some bytes: the size plan must see them on its shard.
      const heavy = created[0] as string
      const primary = connect(shard('shard-1').primary)
      await primary`
        insert into businesses (tenant_id, name, settings)
        values (${heavy}, 'Heavy', ${JSON.stringify({ notes: 'x'.repeat(5000) })}::jsonb)`
      // Measured as stored (compressed), as the planner's weights are, not as the insert built it.
      const [row] = await primary<{ bytes: number }[]>`
        select pg_column_size(b.*)::int as bytes from businesses b where tenant_id = ${heavy}`
      const size = await withDirectory(topology(), (d) => createRebalancePlan(d, topology(), 'size'))
      plans.push(size.id)
      expect(size.strategy).toBe('size')
      const total = (fill: StoredPlan['before']) => fill.reduce((sum, s) => sum + s.bytes, 0)
      expect(total(size.after)).toBe(total(size.before))
      expect(size.before.find((s) => s.id === 'shard-1')?.bytes).toBeGreaterThanOrEqual(row?.bytes ?? 1)
      const moved = size.moves.find((m) => m.tenant === heavy)
      if (moved) expect(moved.bytes).toBe(row?.bytes)
    } finally {
      await connect(
        shard('shard-1').primary,
      )`delete from businesses where tenant_id = any(${created}::uuid[])`
      await restore()
    }
  })
})
