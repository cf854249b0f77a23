import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { RunningRouter } from '../src/router/server.ts'
import { query, startTestRouter, stopRouters, type TestTenant, tenantWithKey } from './router-support.ts'
import { closeAll, connect, shard, topology } from './support.ts'

let router: RunningRouter
afterAll(async () => {
  await stopRouters()
  await closeAll()
})
beforeAll(async () => {
  router = await startTestRouter()
})

async function business(tenant: TestTenant): Promise<string> {
  const answer = await query<{ rows: { id: string }[] }>(
    router,
    tenant,
    'insert into businesses (tenant_id, name) values ($1, $2) returning id',
    [tenant.id, 'Quota Studio'],
  )
  expect(answer.status).toBe(200)
  return answer.body.rows[0]?.id as string
}

const addService = (tenant: TestTenant, businessId: string, n: number) =>
  query<{ error?: { code: string; message: string } }>(
    router,
    tenant,
    'insert into services (tenant_id, business_id, name, duration_minutes, price) values ($1, $2, $3, 30, 10)',
    [tenant.id, businessId, `service ${n}`],
  )

describe('tenant row quotas, enforced on the shard inside the tenant transaction', () => {
  it("the 101st service fails with quota_exceeded (the seed's default); another tenant is unaffected", async () => {
    expect(topology().tenantLimits.max_services).toBe(100)
    const full = await tenantWithKey('shard-1')
    const other = await tenantWithKey('shard-1')
    const fullBusiness = await business(full)
    const otherBusiness = await business(other)
    const batch = await fetch(`${router.url}/v1/batch`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${full.key}`,
        'x-tenant-id': full.id,
        'content-type': 'application/json',
      },
      body: JSON.stringify({
        queries: Array.from({ length: 100 }, (_, n) => ({
          sql: 'insert into services (tenant_id, business_id, name, duration_minutes, price) values ($1, $2, $3, 30, 10)',
          params: [full.id, fullBusiness, `service ${n}`],
          method: 'execute',
        })),
      }),
    })
    expect(batch.status).toBe(200)
    const refused = await addService(full, fullBusiness, 101)
    expect(refused.status).toBe(403)
    expect(refused.body.error?.code).toBe('quota_exceeded')
    expect(refused.body.error?.message).toMatch(/max_services is 100/)
    expect((await addService(other, otherBusiness, 1)).status).toBe(200)
    const [counts] = await connect(shard('shard-1').primary)`
      select (select count(*)::int from services where tenant_id = ${full.id}) as full,
             (select count(*)::int from services where tenant_id = ${other.id}) as other`
    expect(counts).toEqual({ full: 100, other: 1 })
  })

  it("a tenant's own limit in the directory overrides the default, and concurrent inserts never pass it", async () => {
    const tenant = await tenantWithKey('shard-2', { max_staff: 5 })
    const businessId = await business(tenant)
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, n) =>
        query(router, tenant, 'insert into staff (tenant_id, business_id, name) values ($1, $2, $3)', [
          tenant.id,
          businessId,
          `staff ${n}`,
        ]),
      ),
    )
    expect(answers.filter((a) => a.status === 200)).toHaveLength(5)
    expect(answers.filter((a) => a.status === 403)).toHaveLength(7)
    const [row] = await connect(
      shard('shard-2').primary,
    )`select count(*)::int as n from staff where tenant_id = ${tenant.id}`
    expect(row?.n).toBe(5)
  })

  it('appointments are limited per UTC day', async () => {
    const tenant = await tenantWithKey('shard-3', { max_appointments_per_day: 2 })
    const businessId = await business(tenant)
    const service = await query<{ rows: { id: string }[] }>(
      router,
      tenant,
      'insert into services (tenant_id, business_id, name, duration_minutes, price) values ($1, $2, $3, 30, 10) returning id',
      [tenant.id, businessId, 'cut'],
    )
    const customer = await query<{ rows: { id: string }[] }>(
      router,
      tenant,
      'insert into customers (tenant_id, name) values ($1, $2) returning id',
      [tenant.id, 'Ana'],
    )
    const book = (start: string) =>
      query(
        router,
        tenant,
        "insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time) values ($1, $2, $3, $4, $5::timestamptz, $5::timestamptz + interval '30 minutes')",
        [tenant.id, businessId, service.body.rows[0]?.id, customer.body.rows[0]?.id, start],
      )
    const statuses = []
    for (const start of [
      '2026-12-01T09:00:00Z',
      '2026-12-01T23:30:00Z',
      '2026-12-01T12:00:00Z',
      '2026-12-02T00:15:00Z',
    ]) {
      statuses.push((await book(start)).status)
    }
    expect(statuses).toEqual([200, 200, 403, 200])
  })

  it.each(['RepeatableRead', 'Serializable'])(
    'concurrent inserts at %s never pass the limit: the loser of a race gets 40001 and its retry is refused',
    async (level) => {
      const tenant = await tenantWithKey('shard-2', { max_staff: 5 })
      const businessId = await business(tenant)
      // Each transaction reads first, so its snapshot is older than the quota's turn it waits for.
      const hire = (n: number) =>
        fetch(`${router.url}/sql`, {
          method: 'POST',
          headers: {
            'neon-connection-string': `postgresql://${tenant.id}:${tenant.key}@router/app`,
            'neon-batch-isolation-level': level,
            'content-type': 'application/json',
          },
          body: JSON.stringify({
            queries: [
              { query: 'select count(*) from staff', params: [] },
              {
                query: 'insert into staff (tenant_id, business_id, name) values ($1, $2, $3)',
                params: [tenant.id, businessId, `staff ${n}`],
              },
            ],
          }),
        }).then(async (response) => ({
          status: response.status,
          code: response.ok ? 'ok' : ((await response.json()) as { code: string }).code,
        }))
      const outcomes: Record<string, number> = {}
      let pending = Array.from({ length: 12 }, (_, n) => n)
      for (let round = 0; pending.length > 0 && round < 50; round++) {
        const answers = await Promise.all(pending.map(hire))
        for (const answer of answers) outcomes[answer.code] = (outcomes[answer.code] ?? 0) + 1
        pending = pending.filter((_, i) => answers[i]?.code === '40001')
      }
      console.log(`${level}: ${JSON.stringify(outcomes)}`)
      expect(pending).toEqual([])
      expect(outcomes.ok).toBe(5)
      expect(outcomes.quota_exceeded).toBe(7)
      expect(Object.keys(outcomes).sort()).toEqual(
        ['ok', 'quota_exceeded', ...(outcomes['40001'] ? ['40001'] : [])].sort(),
      )
      const [row] = await connect(
        shard('shard-2').primary,
      )`select count(*)::int as n from staff where tenant_id = ${tenant.id}`
      expect(row?.n).toBe(5)
    },
  )
})
