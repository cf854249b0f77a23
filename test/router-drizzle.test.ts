import { and, asc, eq, gte, lt, sql } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/pg-proxy'
import { describe, expect } from 'vitest'
import { appointments, businesses, customers, services } from '../examples/appointments/schema.ts'
import type { RunningRouter } from '../src/router/server.ts'
import type { Sql } from '../src/shard/connection.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { post, query } from './router-support.ts'
import { eventually, shard } from './support.ts'

/**
 * drizzle-orm's pg-proxy driver, unmodified, against a real router over real HTTP: the callback below is
 * the application code the router's docs ask for (POST the three arguments, return `{ rows }`).
 */

/** What the callback throws on a non-2xx answer: the router's stable error code and message. */
class RouterError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: unknown,
  ) {
    super(`${code}: ${message}`)
    this.name = 'RouterError'
  }
}

interface ErrorBody {
  error: { code: string; message: string; sqlstate?: string; statementIndex?: number }
}

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

const headersFor = (tenant: TestTenant) => ({
  authorization: `Bearer ${tenant.key}`,
  'x-tenant-id': tenant.id,
})

/** drizzle over the router as `tenant`; `nodes` records which shard node answered each query. */
function proxyDb(router: RunningRouter, tenant: TestTenant, headers: Record<string, string> = {}) {
  const nodes: string[] = []
  const db = drizzle(async (sqlText, params, method) => {
    const response = await fetch(`${router.url}/v1/query`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headersFor(tenant), ...headers },
      body: JSON.stringify({ sql: sqlText, params, method }, (_key, value) =>
        typeof value === 'bigint' ? value.toString() : value,
      ),
    })
    const body = (await response.json()) as { rows: unknown[] } | ErrorBody
    if (!response.ok || !('rows' in body)) {
      const error = (body as ErrorBody).error
      throw new RouterError(response.status, error.code, error.message, body)
    }
    nodes.push(response.headers.get('x-switchyard-node') ?? '')
    return { rows: body.rows }
  })
  return { db, nodes }
}

/** drizzle wraps the callback's error in DrizzleQueryError; the router's error is its cause. */
async function routerErrorOf(promise: PromiseLike<unknown>): Promise<RouterError> {
  try {
    await promise
  } catch (error) {
    const cause = (error as { cause?: unknown }).cause
    if (cause instanceof RouterError) return cause
    throw error
  }
  throw new Error('expected the query to fail')
}

let router: RunningRouter
let tenant: TestTenant
let other: TestTenant
let db: ReturnType<typeof proxyDb>['db']
let nodes: string[]
/** The shard's admin login, which RLS does not filter: what is really in the tables. */
let adminSql: Sql | undefined
const admin = () => (adminSql ??= connect(shard('shard-1').primary))

it.beforeAll(async () => {
  router = await startTestRouter()
  // Both on shard-1: only row-level security keeps them apart there.
  tenant = await tenantWithKey('shard-1')
  other = await tenantWithKey('shard-1')
  ;({ db, nodes } = proxyDb(router, tenant))
})

describe('drizzle pg-proxy through the router', () => {
  const start = new Date('2031-03-04T09:15:30.123Z')
  const end = new Date('2031-03-04T10:00:00.987Z')
  const later = new Date('2031-03-05T14:00:00.456Z')
  const notes = `O'Brien asked: "window seat?" — café ☕ 日本語 \\ {x} 🎉`
  const metadata = {
    source: 'web',
    reminders: [{ at: '2031-03-03T09:00:00Z', sent: false }, { channel: 'sms' }],
    nested: { deep: { n: 1.5, ok: true, none: null, quote: 'he said "hi"', emoji: '🦄' } },
    count: 3,
  }
  let businessId: string
  let cut: { id: string }
  let colour: { id: string }
  let alice: { id: string }
  let first: typeof appointments.$inferSelect
  let second: typeof appointments.$inferSelect

  it('inserts a business and returns PostgreSQL defaults: a UUIDv7 id, jsonb, a Date created_at, on the primary', async () => {
    const before = Date.now()
    const [business] = await db
      .insert(businesses)
      .values({ tenantId: tenant.id, name: 'Salon Zoë', settings: { currency: 'EUR', slots: [15, 30] } })
      .returning()
    expect(business).toEqual({
      tenantId: tenant.id,
      id: expect.stringMatching(UUID_V7),
      name: 'Salon Zoë',
      timezone: 'UTC',
      settings: { currency: 'EUR', slots: [15, 30] },
      createdAt: expect.any(Date),
    })
    expect(Math.abs((business?.createdAt.getTime() ?? 0) - before)).toBeLessThan(60_000)
    expect(nodes.at(-1)).toBe('shard-1-primary')
    businessId = business?.id ?? ''
  })

  it('inserts services: integer, numeric (as PostgreSQL scales it) and boolean values come back typed', async () => {
    const rows = await db
      .insert(services)
      .values([
        { tenantId: tenant.id, businessId, name: 'Cut', durationMinutes: 45, price: '12.5' },
        { tenantId: tenant.id, businessId, name: 'Colour', durationMinutes: 90, price: '80', active: false },
      ])
      .returning({
        id: services.id,
        name: services.name,
        durationMinutes: services.durationMinutes,
        price: services.price,
        active: services.active,
      })
    expect(rows).toEqual([
      { id: expect.stringMatching(UUID_V7), name: 'Cut', durationMinutes: 45, price: '12.50', active: true },
      {
        id: expect.stringMatching(UUID_V7),
        name: 'Colour',
        durationMinutes: 90,
        price: '80.00',
        active: false,
      },
    ])
    expect(typeof rows[0]?.durationMinutes).toBe('number')
    expect(typeof rows[1]?.active).toBe('boolean')
    cut = { id: rows[0]?.id ?? '' }
    colour = { id: rows[1]?.id ?? '' }
  })

  it('inserts customers with unicode and quotes in text, and nulls', async () => {
    const rows = await db
      .insert(customers)
      .values([
        { tenantId: tenant.id, name: 'Alice Ø', email: 'alice@example.com', notes },
        { tenantId: tenant.id, name: 'Bob', phone: '+44 20 7946 0000' },
      ])
      .returning()
    expect(rows.map(({ name, email, phone, notes }) => ({ name, email, phone, notes }))).toEqual([
      { name: 'Alice Ø', email: 'alice@example.com', phone: null, notes },
      { name: 'Bob', email: null, phone: '+44 20 7946 0000', notes: null },
    ])
    alice = { id: rows[0]?.id ?? '' }
  })

  it('inserts appointments with timestamps, jsonb, numeric and text, and selects them back exactly', async () => {
    const inserted = await db
      .insert(appointments)
      .values([
        {
          tenantId: tenant.id,
          businessId,
          serviceId: cut.id,
          customerId: alice.id,
          startTime: start,
          endTime: end,
          price: '12.5',
          notes,
          metadata,
        },
        {
          tenantId: tenant.id,
          businessId,
          serviceId: colour.id,
          customerId: alice.id,
          startTime: later,
          endTime: new Date(later.getTime() + 90 * 60_000),
          status: 'confirmed',
        },
      ])
      .returning({ id: appointments.id })
    expect(inserted).toHaveLength(2)

    const rows = await db
      .select()
      .from(appointments)
      .where(eq(appointments.id, inserted[0]?.id ?? ''))
    expect(rows).toEqual([
      {
        tenantId: tenant.id,
        id: inserted[0]?.id,
        businessId,
        serviceId: cut.id,
        staffId: null,
        customerId: alice.id,
        startTime: start,
        endTime: end,
        status: 'scheduled',
        price: '12.50',
        notes,
        metadata,
        createdAt: expect.any(Date),
        updatedAt: expect.any(Date),
      },
    ])
    const [row] = rows
    expect(row?.startTime).toBeInstanceOf(Date)
    expect(row?.startTime.getTime()).toBe(start.getTime())
    expect(row?.endTime.toISOString()).toBe('2031-03-04T10:00:00.987Z')
    first = row as typeof appointments.$inferSelect

    const [next] = await db
      .select()
      .from(appointments)
      .where(eq(appointments.id, inserted[1]?.id ?? ''))
    expect(next).toMatchObject({
      status: 'confirmed',
      price: null,
      notes: null,
      metadata: {},
      startTime: later,
    })
    second = next as typeof appointments.$inferSelect
  })

  it('joins on uuids and filters on timestamps: the bound excludes the later appointment', async () => {
    const query = (from: Date, to: Date) =>
      db
        .select({
          id: appointments.id,
          start: appointments.startTime,
          service: services.name,
          minutes: services.durationMinutes,
          price: services.price,
          customer: customers.name,
          customerNotes: customers.notes,
        })
        .from(appointments)
        .innerJoin(
          services,
          and(eq(services.tenantId, appointments.tenantId), eq(services.id, appointments.serviceId)),
        )
        .innerJoin(
          customers,
          and(eq(customers.tenantId, appointments.tenantId), eq(customers.id, appointments.customerId)),
        )
        .where(
          and(
            eq(appointments.customerId, alice.id),
            gte(appointments.startTime, from),
            lt(appointments.startTime, to),
          ),
        )
        .orderBy(asc(appointments.startTime))

    expect(await query(start, later)).toEqual([
      {
        id: first.id,
        start,
        service: 'Cut',
        minutes: 45,
        price: '12.50',
        customer: 'Alice Ø',
        customerNotes: notes,
      },
    ])
    // One millisecond past the first start excludes it; the second is in.
    expect(
      (await query(new Date(start.getTime() + 1), new Date('2032-01-01T00:00:00Z'))).map((r) => r.id),
    ).toEqual([second.id])
    expect((await query(start, new Date('2032-01-01T00:00:00Z'))).map((r) => r.service)).toEqual([
      'Cut',
      'Colour',
    ])
  })

  it('updates status and jsonb metadata and reads the change back', async () => {
    const moved = new Date('2031-03-04T09:30:00.001Z')
    const updated = await db
      .update(appointments)
      .set({
        status: 'completed',
        metadata: { ...metadata, nested: { replaced: [1, 'two', { three: 3 }] }, paid: true },
        updatedAt: moved,
      })
      .where(and(eq(appointments.tenantId, tenant.id), eq(appointments.id, first.id)))
      .returning({ id: appointments.id, status: appointments.status, updatedAt: appointments.updatedAt })
    expect(updated).toEqual([{ id: first.id, status: 'completed', updatedAt: moved }])
    expect(nodes.at(-1)).toBe('shard-1-primary')

    const [row] = await db
      .select({ status: appointments.status, metadata: appointments.metadata, start: appointments.startTime })
      .from(appointments)
      .where(eq(appointments.id, first.id))
    expect(row).toEqual({
      status: 'completed',
      metadata: { ...metadata, nested: { replaced: [1, 'two', { three: 3 }] }, paid: true },
      start,
    })
    // The other appointment was not touched.
    const [untouched] = await db.select().from(appointments).where(eq(appointments.id, second.id))
    expect(untouched).toEqual(second)
  })

  it('a CHECK violation surfaces as a sql_error with its SQLSTATE', async () => {
    const error = await routerErrorOf(
      db
        .update(appointments)
        .set({ endTime: new Date(start.getTime() - 1) })
        .where(eq(appointments.id, first.id)),
    )
    expect(error).toMatchObject({ status: 400, code: 'sql_error', body: { error: { sqlstate: '23514' } } })
  })

  it('db.execute runs raw SQL with parameters and gets object rows as node-postgres would', async () => {
    const rows = await db.execute(
      sql`select a.id, a.start_time, a.price, a.metadata -> 'nested' as nested, s.duration_minutes, s.active,
            a.notes, (a.start_time = ${start}) as starts_then
          from appointments a join services s on s.tenant_id = a.tenant_id and s.id = a.service_id
          where a.id = ${first.id}`,
    )
    expect(rows).toEqual([
      {
        id: first.id,
        // The reference server leaves timestamps as PostgreSQL's text; drizzle maps them only for typed columns.
        start_time: expect.stringMatching(/^2031-03-04 \d\d:\d\d:30\.123[+-]\d\d(:\d\d)?$/),
        price: '12.50',
        nested: { replaced: [1, 'two', { three: 3 }] },
        duration_minutes: 45,
        active: true,
        notes,
        starts_then: true,
      },
    ])
    expect(new Date(String(rows[0]?.start_time)).getTime()).toBe(start.getTime())
  })

  it('deletes a row, and it is gone', async () => {
    const deleted = await db
      .delete(appointments)
      .where(eq(appointments.id, second.id))
      .returning({ id: appointments.id })
    expect(deleted).toEqual([{ id: second.id }])
    expect(await db.select().from(appointments).where(eq(appointments.id, second.id))).toEqual([])
    const left = await db.select({ id: appointments.id }).from(appointments)
    expect(left).toEqual([{ id: first.id }])
    // Deleting it again deletes nothing.
    expect(
      await db.delete(appointments).where(eq(appointments.id, second.id)).returning({ id: appointments.id }),
    ).toEqual([])
  })

  // drizzle's pg-proxy session refuses db.transaction() itself ("Transactions are not supported by the
  // Postgres Proxy driver") before calling back, so there is nothing of the router's to test there:
  // /v1/batch is the router's transaction for pg-proxy clients.
  describe('/v1/batch', () => {
    it('runs several statements in one transaction on the primary, later ones seeing earlier writes', async () => {
      const customerId = '01900000-0000-7000-8000-00000000b001'
      const answer = await post<{ results: { rows: unknown[] }[] }>(
        router,
        '/v1/batch',
        {
          queries: [
            { sql: 'select pg_current_xact_id()::text as xid', params: [], method: 'all' },
            {
              sql: 'insert into customers (tenant_id, id, name, notes) values ($1, $2, $3, $4) returning id',
              params: [tenant.id, customerId, 'Batch Carol', 'it\'s "batched"'],
              method: 'all',
            },
            {
              sql: 'update services set price = price + $1 where id = $2 returning price, active',
              params: ['0.25', cut.id],
              method: 'execute',
            },
            {
              sql: 'select count(*)::int as n, pg_current_xact_id()::text as xid from customers where id = $1',
              params: [customerId],
              method: 'execute',
            },
          ],
        },
        headersFor(tenant),
      )
      expect(answer.status).toBe(200)
      expect(answer.headers.get('x-switchyard-node')).toMatch(/-primary$/)
      expect(answer.headers.get('x-switchyard-node')).toBe('shard-1-primary')
      const [xid, insert, update, count] = answer.body.results
      expect(insert).toEqual({ rows: [[customerId]] })
      expect(update).toEqual({ rows: [{ price: '12.75', active: true }] })
      // Same transaction: the same xid, and the count sees the uncommitted insert.
      expect(xid?.rows).toEqual([[expect.stringMatching(/^\d+$/)]])
      expect(count).toEqual({ rows: [{ n: 1, xid: (xid?.rows[0] as string[] | undefined)?.[0] }] })

      const [carol] = await db.select().from(customers).where(eq(customers.id, customerId))
      expect(carol).toMatchObject({ name: 'Batch Carol', notes: 'it\'s "batched"' })
      const [service] = await db
        .select({ price: services.price })
        .from(services)
        .where(eq(services.id, cut.id))
      expect(service?.price).toBe('12.75')
    })

    it('runs even a lone read on the primary, where /v1/query reads from a replica', async () => {
      const count = 'select count(*)::int as n from customers'
      // Once the replica has this tenant's writes, plain reads go there…
      await eventually(async () => {
        const answer = await query(router, tenant, count)
        return answer.headers.get('x-switchyard-node') === 'shard-1-replica-1' ? true : undefined
      })
      // …but a batch is a transaction on the primary whatever it holds.
      const answer = await post<{ results: { rows: unknown[] }[] }>(
        router,
        '/v1/batch',
        { queries: [{ sql: count, params: [], method: 'execute' }] },
        headersFor(tenant),
      )
      expect(answer.status).toBe(200)
      expect(answer.headers.get('x-switchyard-node')).toBe('shard-1-primary')
      expect(answer.body).toEqual({ results: [{ rows: [{ n: 3 }] }] })
    })

    it('a failing statement rolls back the statements before it', async () => {
      const customerId = '01900000-0000-7000-8000-00000000b002'
      const answer = await post<ErrorBody>(
        router,
        '/v1/batch',
        {
          queries: [
            {
              sql: 'insert into customers (tenant_id, id, name) values ($1, $2, $3)',
              params: [tenant.id, customerId, 'Never Dave'],
              method: 'execute',
            },
            {
              sql: 'update services set price = $1 where id = $2',
              params: ['99.99', cut.id],
              method: 'execute',
            },
            // Alice exists: a duplicate primary key.
            {
              sql: 'insert into customers (tenant_id, id, name) values ($1, $2, $3)',
              params: [tenant.id, alice.id, 'Alice again'],
              method: 'execute',
            },
          ],
        },
        headersFor(tenant),
      )
      expect(answer.status).toBe(400)
      expect(answer.body.error).toMatchObject({ code: 'sql_error', sqlstate: '23505', statementIndex: 2 })

      const rows = await admin()`
        select (select count(*)::int from customers where tenant_id = ${tenant.id} and id = ${customerId}) as dave,
               (select price::text from services where tenant_id = ${tenant.id} and id = ${cut.id}) as price`
      expect(rows).toEqual([{ dave: 0, price: '12.75' }])
    })
  })

  describe('tenant isolation', () => {
    let theirs: { businessId: string; customerId: string }
    const snapshot = async () =>
      admin()`select id::text, name, notes from customers where tenant_id = ${other.id} order by id`

    it.beforeAll(async () => {
      const { db: otherDb } = proxyDb(router, other)
      const [business] = await otherDb
        .insert(businesses)
        .values({ tenantId: other.id, name: 'Theirs' })
        .returning({ id: businesses.id })
      const [customer] = await otherDb
        .insert(customers)
        .values({ tenantId: other.id, name: 'Their customer', notes: 'private' })
        .returning({ id: customers.id })
      theirs = { businessId: business?.id ?? '', customerId: customer?.id ?? '' }
    })

    it("as tenant A, B's rows by B's ids are invisible and unchangeable, even naming B's tenant_id", async () => {
      const before = await snapshot()
      expect(before).toEqual([{ id: theirs.customerId, name: 'Their customer', notes: 'private' }])

      const mine = and(eq(customers.tenantId, other.id), eq(customers.id, theirs.customerId))
      expect(await db.select().from(customers).where(mine)).toEqual([])
      expect(await db.select().from(businesses).where(eq(businesses.id, theirs.businessId))).toEqual([])
      expect(
        await db.update(customers).set({ name: 'hijacked' }).where(mine).returning({ id: customers.id }),
      ).toEqual([])
      expect(await db.delete(customers).where(mine).returning({ id: customers.id })).toEqual([])
      expect(
        await db.execute(sql`select count(*)::int as n from customers where tenant_id = ${other.id}`),
      ).toEqual([{ n: 0 }])
      // Writing a row into B's tenant is refused by the policy's WITH CHECK.
      const insert = await routerErrorOf(db.insert(customers).values({ tenantId: other.id, name: 'planted' }))
      expect(insert).toMatchObject({ code: 'sql_error', body: { error: { sqlstate: '42501' } } })
      // A's own rows are still visible: the filter is the tenant, not everything.
      expect((await db.select({ id: customers.id }).from(customers)).length).toBeGreaterThan(0)

      expect(await snapshot()).toEqual(before)
    })

    it("A's key cannot act as B even when it names B in x-tenant-id", async () => {
      const { db: impostor } = proxyDb(router, tenant, { 'x-tenant-id': other.id })
      const refused = await routerErrorOf(impostor.select().from(customers))
      expect(refused).toMatchObject({ status: 403, code: 'forbidden' })
      const batch = await post<ErrorBody>(
        router,
        '/v1/batch',
        {
          queries: [
            {
              sql: 'update customers set name = $1 where id = $2',
              params: ['x', theirs.customerId],
              method: 'all',
            },
          ],
        },
        { ...headersFor(tenant), 'x-tenant-id': other.id },
      )
      expect(batch).toMatchObject({ status: 403, body: { error: { code: 'forbidden' } } })
      expect(await snapshot()).toEqual([{ id: theirs.customerId, name: 'Their customer', notes: 'private' }])
    })
  })
})
