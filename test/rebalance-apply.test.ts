import { randomUUID } from 'node:crypto'
import { describe, expect } from 'vitest'
import type { Directory } from '../src/directory/connection.ts'
import { cancelPlan } from '../src/placement/plans.ts'
import { it, startTestRouter, tenantWithKey } from './fixtures.ts'
import { moveArtifacts, rowsOn, seededTenant, total } from './move-support.ts'
import { query } from './router-support.ts'
import { cli, eventually } from './support.ts'

/**
 * A stored plan naming only this test's tenants: `rebalance plan` would plan over every tenant the
 * shared topology holds, which other test files change under our feet.
 */
async function storedPlan(
  directory: Directory,
  moves: { tenant: string; from: string; to: string }[],
): Promise<string> {
  const id = randomUUID()
  await directory.sql`
    insert into rebalance_plans (id, strategy, balanced, before, after)
    values (${id}, 'count', true, '[]'::jsonb, '[]'::jsonb)`
  for (const [position, m] of moves.entries())
    await directory.sql`
      insert into rebalance_plan_moves (plan_id, position, tenant_id, from_shard, to_shard, bytes)
      values (${id}, ${position}, ${m.tenant}, ${m.from}, ${m.to}, 0)`
  return id
}

const shardOf = async (directory: Directory, tenant: string) =>
  (await directory.sql<{ shard_id: string }[]>`select shard_id from tenants where id = ${tenant}`)[0]
    ?.shard_id

describe('rebalance apply: the executor runs a stored plan through the mover', () => {
  it('moves every tenant of the plan, two at a time, and marks the plan done', async ({ directory }) => {
    const tenants = await Promise.all(['shard-1', 'shard-1', 'shard-2'].map(seededTenant))
    const [a, b, c] = tenants as [string, string, string]
    const rows = await Promise.all([rowsOn('shard-1', a), rowsOn('shard-1', b), rowsOn('shard-2', c)])
    const plan = await storedPlan(directory, [
      { tenant: a, from: 'shard-1', to: 'shard-2' },
      { tenant: b, from: 'shard-1', to: 'shard-3' },
      { tenant: c, from: 'shard-2', to: 'shard-3' },
    ])
    const applied = await cli(['rebalance', 'apply', plan, '--concurrency', '2', '--json'])
    expect(applied.code, applied.stderr).toBe(0)
    expect(applied.stderr).toMatch(/\[3\/3\]/)
    const result = JSON.parse(applied.stdout) as { state: string; moves: { state: string; moveId: string }[] }
    expect(result.state).toBe('done')
    expect(result.moves.map((m) => m.state)).toEqual(['done', 'done', 'done'])
    expect([await shardOf(directory, a), await shardOf(directory, b), await shardOf(directory, c)]).toEqual([
      'shard-2',
      'shard-3',
      'shard-3',
    ])
    expect(await rowsOn('shard-2', a)).toEqual(rows[0])
    expect(await rowsOn('shard-3', b)).toEqual(rows[1])
    expect(await rowsOn('shard-3', c)).toEqual(rows[2])
    expect(await moveArtifacts()).toEqual([])
  })

  it('resumes after the executor is killed mid-move: the move goes on from its phase, the plan to its end', async ({
    directory,
  }) => {
    const [a, b] = (await Promise.all(['shard-1', 'shard-1'].map(seededTenant))) as [string, string]
    const plan = await storedPlan(directory, [
      { tenant: a, from: 'shard-1', to: 'shard-2' },
      { tenant: b, from: 'shard-1', to: 'shard-2' },
    ])
    const killed = await cli(['rebalance', 'apply', plan], { SWITCHYARD_FAILPOINT: 'move:verify' })
    expect(killed.code).not.toBe(0)
    const [interrupted] = await directory.sql`
      select p.state as plan, m.state as move, mv.state as mover
      from rebalance_plans p join rebalance_plan_moves m on m.plan_id = p.id join moves mv on mv.id = m.move_id
      where p.id = ${plan} and m.position = 0`
    expect(interrupted).toEqual({ plan: 'applying', move: 'moving', mover: 'verify' })

    const finished = await cli(['rebalance', 'apply', plan, '--json'])
    expect(finished.code, finished.stderr).toBe(0)
    expect(JSON.parse(finished.stdout).moves.map((m: { state: string }) => m.state)).toEqual(['done', 'done'])
    expect([await shardOf(directory, a), await shardOf(directory, b)]).toEqual(['shard-2', 'shard-2'])
    expect(total(await rowsOn('shard-1', a)) + total(await rowsOn('shard-1', b))).toBe(0)
    expect(await moveArtifacts()).toEqual([])
  })

  it('`rebalance cancel` during apply: the current move finishes, the next one never starts', async ({
    directory,
  }) => {
    const [a, b] = (await Promise.all(['shard-2', 'shard-2'].map(seededTenant))) as [string, string]
    const plan = await storedPlan(directory, [
      { tenant: a, from: 'shard-2', to: 'shard-1' },
      { tenant: b, from: 'shard-2', to: 'shard-1' },
    ])
    const applying = cli(['rebalance', 'apply', plan, '--json'])
    await eventually(async () => {
      const [first] = await directory.sql`
        select 1 from rebalance_plan_moves where plan_id = ${plan} and position = 0 and state = 'moving'`
      return first
    })
    // In-process: a CLI start-up takes about as long as a small move.
    expect((await cancelPlan(directory, plan)).state).toBe('cancelled')
    const applied = await applying
    expect(applied.code).toBe(1)
    const result = JSON.parse(applied.stdout) as { state: string; moves: { state: string }[] }
    expect(result.state).toBe('cancelled')
    expect(result.moves.map((m) => m.state)).toEqual(['done', 'pending'])
    expect([await shardOf(directory, a), await shardOf(directory, b)]).toEqual(['shard-1', 'shard-2'])
    expect(await moveArtifacts()).toEqual([])
  })

  it("a tenant's limits travel with it: past its max_services before and after the move", async ({
    directory,
  }) => {
    const router = await startTestRouter({ rateLimitOverride: 1_000_000 })
    const tenant = await tenantWithKey('shard-1', { max_services: 3 })
    const [business] = (
      await query<{ rows: { id: string }[] }>(
        router,
        tenant,
        'insert into businesses (tenant_id, name) values ($1, $2) returning id',
        [tenant.id, 'Limits Studio'],
      )
    ).body.rows
    const addService = (n: number) =>
      query<{ error?: { code: string } }>(
        router,
        tenant,
        'insert into services (tenant_id, business_id, name, duration_minutes, price) values ($1, $2, $3, 30, 10)',
        [tenant.id, business?.id, `service ${n}`],
      )
    for (const n of [1, 2, 3]) expect((await addService(n)).status).toBe(200)
    expect((await addService(4)).body.error?.code).toBe('quota_exceeded')
    const moved = await cli(['move', tenant.id, '--to', 'shard-3'])
    expect(moved.code, moved.stderr).toBe(0)
    const after = await addService(4)
    expect([after.status, after.body.error?.code]).toEqual([403, 'quota_exceeded'])
    expect(await shardOf(directory, tenant.id)).toBe('shard-3')
    expect((await rowsOn('shard-3', tenant.id)).services).toBe(3)
    // Its writes before the move were on shard-1's WAL: they do not keep its reads off shard-3's replica.
    const node = await eventually(async () => {
      const read = await query(router, tenant, 'select count(*)::int as n from services', [])
      const served = read.headers.get('x-switchyard-node')
      return served === 'shard-3-replica-1' ? served : undefined
    })
    expect(node).toBe('shard-3-replica-1')
  })
})
