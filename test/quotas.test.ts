import { describe, expect } from 'vitest'
import type { RunningRouter } from '../src/router/server.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { query } from './router-support.ts'
import { shard, topology } from './support.ts'

let router: RunningRouter
it.beforeAll(async () => {
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

  it('an UPDATE never moves appointments into a full day; within a day, or into one with room, it does', async () => {
    const tenant = await tenantWithKey('shard-3', { max_appointments_per_day: 2 })
    const businessId = await business(tenant)
    const one = async (sql: string, params: unknown[]) => {
      const answer = await query<{ rows: { id: string }[] }>(router, tenant, sql, params)
      expect(answer.status, JSON.stringify(answer.body)).toBe(200)
      return answer.body.rows[0]?.id as string
    }
    const serviceId = await one(
      'insert into services (tenant_id, business_id, name, duration_minutes, price) values ($1, $2, $3, 30, 10) returning id',
      [tenant.id, businessId, 'cut'],
    )
    const customerId = await one('insert into customers (tenant_id, name) values ($1, $2) returning id', [
      tenant.id,
      'Ana',
    ])
    const book = (start: string) =>
      one(
        "insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time) values ($1, $2, $3, $4, $5::timestamptz, $5::timestamptz + interval '30 minutes') returning id",
        [tenant.id, businessId, serviceId, customerId, start],
      )
    const move = (id: string, start: string) =>
      query<{ error?: { code: string } }>(
        router,
        tenant,
        "update appointments set start_time = $2::timestamptz, end_time = $2::timestamptz + interval '30 minutes' where id = $1",
        [id, start],
      )
    const full = [await book('2027-03-01T09:00:00Z'), await book('2027-03-01T23:30:00Z')]
    const second = await book('2027-03-02T10:00:00Z')
    const third = await book('2027-03-03T10:00:00Z')
    const fourth = await book('2027-03-04T10:00:00Z')
    await book('2027-03-05T10:00:00Z')

    // Into the full day: one row, or every other row in one statement.
    const single = await move(second, '2027-03-01T12:00:00Z')
    expect(single.status).toBe(403)
    expect(single.body.error?.code).toBe('quota_exceeded')
    const many = await query<{ error?: { code: string } }>(
      router,
      tenant,
      "update appointments set start_time = '2027-03-01T11:00:00Z', end_time = '2027-03-01T11:30:00Z' where start_time >= '2027-03-02'",
    )
    expect(many.status).toBe(403)
    expect(many.body.error?.code).toBe('quota_exceeded')
    // Within its own UTC day, the same value, or another column: no count.
    expect((await move(full[0] as string, '2027-03-01T15:00:00Z')).status).toBe(200)
    expect(
      (
        await query(router, tenant, 'update appointments set start_time = start_time, status = $1', [
          'confirmed',
        ])
      ).status,
    ).toBe(200)
    // Into a day with room.
    expect((await move(second, '2027-03-06T10:00:00Z')).status).toBe(200)
    // Two at once into the last free slot of a day (READ COMMITTED): they take turns, one gets it.
    const race = await Promise.all([
      move(third, '2027-03-05T12:00:00Z'),
      move(fourth, '2027-03-05T13:00:00Z'),
    ])
    expect(race.map((answer) => answer.status).sort()).toEqual([200, 403])

    const days = await connect(shard('shard-3').primary)<{ day: string; n: number }[]>`
      select to_char(start_time at time zone 'UTC', 'YYYY-MM-DD') as day, count(*)::int as n
      from appointments where tenant_id = ${tenant.id} group by 1 order by 1`
    const left = race[0]?.status === 200 ? '2027-03-04' : '2027-03-03'
    expect(Object.fromEntries(days.map((row) => [row.day, row.n]))).toEqual({
      '2027-03-01': 2,
      [left]: 1,
      '2027-03-05': 2,
      '2027-03-06': 1,
    })
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
