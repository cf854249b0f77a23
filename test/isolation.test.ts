import { describe, expect } from 'vitest'
import { seedDemoTenant } from '../examples/appointments/demo.ts'
import { readRouterCapability } from '../src/directory/capability.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { addTenant } from '../src/directory/tenants.ts'
import type { Sql } from '../src/shard/connection.ts'
import { STALE_ROUTE_SQLSTATE } from '../src/shard/ownership.ts'
import { connect, it } from './fixtures.ts'
import { asRouter, newTenantId, shard, topology } from './support.ts'

const tenantA = newTenantId()
const tenantB = newTenantId()
let admin: Sql
let router: Sql
let capability: string

/** One router-style transaction: enter the tenant, then run the statement, as the router will. */
function asTenant<T>(tenant: string, write: boolean, run: (sql: Sql) => Promise<T>): Promise<T> {
  return router.begin(async (sql) => {
    await sql`select switchyard.enter(${tenant}, 1, ${write}, null, ${capability})`
    return run(sql as unknown as Sql)
  }) as Promise<T>
}

it.beforeAll(async () => {
  capability = await withDirectory(topology(), async (directory) => {
    for (const id of [tenantA, tenantB]) await addTenant(directory, topology(), { id, shard: 'shard-1' })
    return readRouterCapability(directory)
  })
  admin = connect(shard('shard-1').primary)
  router = connect(asRouter(shard('shard-1').primary))
  await seedDemoTenant(admin, tenantA, 'A')
  await seedDemoTenant(admin, tenantB, 'B')
})

describe('tenant isolation under the router role (RLS forced)', () => {
  it("tenant A sees only its own rows, even naming tenant B's id", async () => {
    const [own] = await asTenant(tenantA, false, (sql) => sql`select count(*)::int as n from appointments`)
    expect(own?.n).toBe(60)
    const other = await asTenant(
      tenantA,
      false,
      (sql) => sql`select * from appointments where tenant_id = ${tenantB}`,
    )
    expect(other).toHaveLength(0)
    const [b] = await admin`select id from customers where tenant_id = ${tenantB} limit 1`
    const byId = await asTenant(tenantA, false, (sql) => sql`select * from customers where id = ${b?.id}`)
    expect(byId).toHaveLength(0)
  })

  it("tenant A cannot update or delete tenant B's rows", async () => {
    const updated = await asTenant(tenantA, true, (sql) =>
      sql`update customers set name = 'taken over' where tenant_id = ${tenantB}`.then((r) => r.count),
    )
    const deleted = await asTenant(tenantA, true, (sql) =>
      sql`delete from appointments where tenant_id = ${tenantB}`.then((r) => r.count),
    )
    expect({ updated, deleted }).toEqual({ updated: 0, deleted: 0 })
    const [left] = await admin`
      select (select count(*)::int from appointments where tenant_id = ${tenantB}) as appointments,
             (select count(*)::int from customers where tenant_id = ${tenantB} and name = 'taken over') as taken`
    expect(left).toEqual({ appointments: 60, taken: 0 })
  })

  it('tenant A cannot insert a row for tenant B (WITH CHECK)', async () => {
    await expect(
      asTenant(
        tenantA,
        true,
        (sql) => sql`insert into customers (tenant_id, name) values (${tenantB}, 'planted')`,
      ),
    ).rejects.toMatchObject({ code: '42501' })
    const [planted] = await admin`select count(*)::int as n from customers where name = 'planted'`
    expect(planted?.n).toBe(0)
  })

  it('the policy costs one call per statement (an InitPlan), and the tenant index is still used', async () => {
    const plan = await asTenant(tenantA, false, (sql) =>
      sql.unsafe("explain (costs off) select * from customers where name = 'Customer 001'"),
    )
    const text = plan.map((row) => Object.values(row)[0]).join('\n')
    expect(text).toContain('InitPlan')
    expect(text).toMatch(/Index Cond: \(\(tenant_id = \(InitPlan \d+\)/)
    expect(text).not.toMatch(/Filter:.*current_tenant/)
  })

  it('without entering a tenant, the router role sees nothing', async () => {
    const rows = await router`select * from appointments limit 1`
    expect(rows).toHaveLength(0)
  })

  it('the router role cannot turn row security off', async () => {
    await expect(
      router.begin(async (sql) => {
        await sql`set local row_security = off`
        return sql`select count(*) from appointments`
      }),
    ).rejects.toMatchObject({ message: expect.stringMatching(/row-level security/) })
  })

  it("the router role cannot read the shard's ownership table", async () => {
    await expect(router`select * from switchyard.tenant_ownership`).rejects.toMatchObject({ code: '42501' })
  })
})

describe('switchyard.enter()', () => {
  it('raises the stale-route SQLSTATE for an unknown tenant and for a stale epoch', async () => {
    await expect(
      router`select switchyard.enter(${newTenantId()}, 1, false, null, ${capability})`,
    ).rejects.toMatchObject({ code: STALE_ROUTE_SQLSTATE })
    await expect(
      router`select switchyard.enter(${tenantA}, 2, true, null, ${capability})`,
    ).rejects.toMatchObject({ code: STALE_ROUTE_SQLSTATE })
  })

  it('refuses a caller without the router capability, and does not say which epoch is right', async () => {
    await expect(
      router`select switchyard.enter(${tenantA}, 1, false, null, ${'0'.repeat(64)})`,
    ).rejects.toMatchObject({ code: '42501' })
    await expect(router`select switchyard.enter(${tenantA}, 1, false, null, null)`).rejects.toMatchObject({
      code: '42501',
    })
    const stale = await router`select switchyard.enter(${tenantA}, 7, false, null, ${capability})`.catch(
      (error: { detail?: string; message: string }) => error,
    )
    expect(JSON.stringify(stale)).not.toMatch(/epoch=1|state=owner/)
  })

  it('refuses writes but serves reads while the tenant is frozen', async () => {
    await admin`update switchyard.tenant_ownership set state = 'frozen' where tenant_id = ${tenantB}`
    try {
      await expect(asTenant(tenantB, true, (sql) => sql`select 1`)).rejects.toMatchObject({
        code: STALE_ROUTE_SQLSTATE,
      })
      const [row] = await asTenant(tenantB, false, (sql) => sql`select count(*)::int as n from customers`)
      expect(row?.n).toBe(30)
    } finally {
      await admin`update switchyard.tenant_ownership set state = 'owner' where tenant_id = ${tenantB}`
    }
  })

  it('sets the tenant context only for its own transaction', async () => {
    const inside = await asTenant(tenantA, false, (sql) => sql`select switchyard.current_tenant() as t`)
    expect(inside[0]?.t).toBe(tenantA)
    const [after] = await router`select switchyard.current_tenant() as t`
    expect(after?.t).toBeNull()
  })

  it('a context set by hand, or copied from another transaction, is refused (SY003)', async () => {
    const [token] = await asTenant(
      tenantA,
      false,
      (sql) => sql`select current_setting('switchyard.context') as context`,
    )
    const forged = `${tenantB}/${String(token?.context).split('/')[1]}`
    for (const context of [token?.context, forged, `${tenantB}/${'0'.repeat(64)}`]) {
      await expect(
        router.begin(async (sql) => {
          await sql.unsafe(`set local switchyard.context = '${context}'`)
          return sql`select * from customers`
        }),
      ).rejects.toMatchObject({ code: 'SY003' })
    }
  })

  it('limits changed by hand after enter() are refused, so quotas cannot be lifted', async () => {
    await expect(
      router.begin(async (sql) => {
        await sql`select switchyard.enter(${tenantA}, 1, true, ${'{"max_customers": 1}'}::jsonb, ${capability})`
        await sql.unsafe(`set local switchyard.tenant_limits = '{}'`)
        return sql`insert into customers (tenant_id, name) values (${tenantA}, 'over the limit')`
      }),
    ).rejects.toMatchObject({ code: 'SY003' })
  })
})
