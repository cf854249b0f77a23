import {
  NeonDbError,
  type NeonQueryFunction,
  type NeonQueryFunctionInTransaction,
  neon,
  neonConfig,
} from '@neondatabase/serverless'
import { and, sql as dsql, eq } from 'drizzle-orm'
import { drizzle } from 'drizzle-orm/neon-http'
import { describe, expect } from 'vitest'
import { appointments, businesses, customers, services } from '../examples/appointments/schema.ts'
import type { RunningRouter } from '../src/router/server.ts'
import type { Sql } from '../src/shard/connection.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { post } from './router-support.ts'
import { eventually, shard } from './support.ts'

/**
 * `@neondatabase/serverless`'s `neon()`, unmodified, pointed at a real router: `neonConfig.fetchEndpoint`
 * is the only setting (the client takes any URL there, http included, and uses the global fetch), and the
 * connection string carries the tenant as the user and the API key as the password.
 */

const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

const connectionString = (tenant: { id: string }, key: string) =>
  `postgresql://${tenant.id}:${encodeURIComponent(key)}@router.local/app`

const neonHeaders = (tenant: TestTenant) => ({
  'Neon-Connection-String': connectionString(tenant, tenant.key),
})

/** The rejection of `promise`, which must reject. */
async function rejection(promise: PromiseLike<unknown>): Promise<NeonDbError> {
  try {
    await promise
  } catch (error) {
    return error as NeonDbError
  }
  throw new Error('expected the query to fail')
}

const original = { fetchEndpoint: neonConfig.fetchEndpoint }
let router: RunningRouter
let tenant: TestTenant
let other: TestTenant
let sql: NeonQueryFunction<false, false>
/** The shard's admin login, which RLS does not filter: what is really in the tables. */
let adminSql: Sql | undefined
const admin = () => (adminSql ??= connect(shard('shard-2').primary))

it.beforeAll(async () => {
  router = await startTestRouter()
  // Both on shard-2: only row-level security keeps them apart there.
  tenant = await tenantWithKey('shard-2')
  other = await tenantWithKey('shard-2')
  // The connection string's host names nothing: the router is the endpoint.
  neonConfig.fetchEndpoint = () => `${router.url}/sql`
  sql = neon(connectionString(tenant, tenant.key))
})
it.afterAll(() => Object.assign(neonConfig, original))

describe('neon() through the router', () => {
  const start = new Date('2032-06-07T08:09:10.123Z')
  const end = new Date('2032-06-07T09:00:00.999Z')
  const metadata = {
    source: 'neon',
    tags: ['a', 'b "c"'],
    nested: { ok: true, n: 2.5, none: null, s: 'ü 🦄' },
  }
  const notes = `It's "quoted" — naïve café \\ {braces}`
  let businessId: string
  let serviceId: string
  let customerId: string
  let appointmentId: string

  it('tagged-template inserts and selects: parameters bind, values come back typed by the client', async () => {
    const [business] = await sql`
      insert into businesses (tenant_id, name, settings)
      values (${tenant.id}, ${'Neon Spa'}, ${{ currency: 'GBP', open: [9, 17] }})
      returning *`
    expect(business).toEqual({
      tenant_id: tenant.id,
      id: expect.stringMatching(UUID_V7),
      name: 'Neon Spa',
      timezone: 'UTC',
      settings: { currency: 'GBP', open: [9, 17] },
      created_at: expect.any(Date),
    })
    businessId = business?.id
    const [service] = await sql`
      insert into services (tenant_id, business_id, name, duration_minutes, price, active)
      values (${tenant.id}, ${businessId}, ${'Massage'}, ${60}, ${'19.9'}, ${false}) returning *`
    expect(service).toMatchObject({ duration_minutes: 60, price: '19.90', active: false })
    serviceId = service?.id
    const [customer] = await sql`
      insert into customers (tenant_id, name, notes) values (${tenant.id}, ${'Zoë'}, ${notes}) returning id`
    customerId = customer?.id
    const [appointment] = await sql`
      insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time, price, notes, metadata)
      values (${tenant.id}, ${businessId}, ${serviceId}, ${customerId}, ${start}, ${end}, ${'42.5'}, ${notes}, ${metadata})
      returning id`
    appointmentId = appointment?.id
    expect(appointmentId).toMatch(UUID_V7)

    const rows = await sql`
      select a.id, a.start_time, a.end_time, a.status, a.price, a.notes, a.metadata, s.duration_minutes, s.active,
             count(*) over () as total
      from appointments a join services s on s.tenant_id = a.tenant_id and s.id = a.service_id
      where a.id = ${appointmentId} and a.start_time = ${start}`
    expect(rows).toEqual([
      {
        id: appointmentId,
        start_time: start,
        end_time: end,
        status: 'scheduled',
        price: '42.50',
        notes,
        metadata,
        duration_minutes: 60,
        active: false,
        // int8 stays a string in node-postgres' parsers, as the client uses them.
        total: '1',
      },
    ])
    expect(rows[0]?.start_time).toBeInstanceOf(Date)
    expect((rows[0]?.end_time as Date | undefined)?.getTime()).toBe(end.getTime())
  })

  it('sql.query with $n placeholders; a timestamp bound one millisecond later matches nothing', async () => {
    const select =
      'select a.id, a.start_time, a.metadata -> $2 as nested, s.active from appointments a join services s on s.tenant_id = a.tenant_id and s.id = a.service_id where a.id = $1 and a.start_time >= $3'
    expect(await sql.query(select, [appointmentId, 'nested', start])).toEqual([
      { id: appointmentId, start_time: start, nested: metadata.nested, active: false },
    ])
    expect(await sql.query(select, [appointmentId, 'nested', new Date(start.getTime() + 1)])).toEqual([])
    expect(
      await sql.query('select $1::int + 1 as n, $2::boolean as b, $3::jsonb as j', [41, true, { k: [1] }]),
    ).toEqual([{ n: 42, b: true, j: { k: [1] } }])
  })

  it('fullResults gives command, rowCount and fields with type OIDs and table columns; arrayMode gives arrays', async () => {
    const [table] = await admin()`select 'appointments'::regclass::oid::int as oid`
    const full = await sql.query(
      'select id, start_time, price from appointments where id = $1',
      [appointmentId],
      { fullResults: true },
    )
    expect(full).toMatchObject({
      command: 'SELECT',
      rowCount: 1,
      rowAsArray: false,
      rows: [{ id: appointmentId, start_time: start, price: '42.50' }],
    })
    expect(
      full.fields.map(({ name, dataTypeID, tableID, columnID }) => ({ name, dataTypeID, tableID, columnID })),
    ).toEqual([
      { name: 'id', dataTypeID: 2950, tableID: table?.oid, columnID: 2 },
      { name: 'start_time', dataTypeID: 1184, tableID: table?.oid, columnID: 7 },
      { name: 'price', dataTypeID: 1700, tableID: table?.oid, columnID: 10 },
    ])

    const arrays = await sql.query(
      'select name, duration_minutes, active from services where id = $1',
      [serviceId],
      {
        arrayMode: true,
      },
    )
    expect(arrays).toEqual([['Massage', 60, false]])

    const update = await sql.query(
      'update services set duration_minutes = duration_minutes + $1 where id = $2',
      [15, serviceId],
      { fullResults: true },
    )
    expect(update).toMatchObject({ command: 'UPDATE', rowCount: 1, rows: [] })

    // Options given to neon() itself apply to every query.
    const both = neon(connectionString(tenant, tenant.key), { arrayMode: true, fullResults: true })
    const result = await both`select duration_minutes, price from services where id = ${serviceId}`
    expect(result).toMatchObject({ command: 'SELECT', rowCount: 1, rowAsArray: true, rows: [[75, '19.90']] })
  })

  describe('transaction()', () => {
    it('runs several statements, writes included, in one transaction and commits them', async () => {
      const newCustomer = '01900000-0000-7000-8000-00000000c001'
      const results = await sql.transaction((txn) => [
        txn`select pg_current_xact_id()::text as xid`,
        txn`insert into customers (tenant_id, id, name) values (${tenant.id}, ${newCustomer}, ${'Tx Tom'}) returning id, name`,
        txn`update appointments set status = 'confirmed', customer_id = ${newCustomer} where id = ${appointmentId} returning status`,
        txn.query(
          'select count(*)::int as n, pg_current_xact_id()::text as xid from customers where id = $1',
          [newCustomer],
        ),
      ])
      const [xid, insert, update, count] = results as Record<string, unknown>[][]
      expect(insert).toEqual([{ id: newCustomer, name: 'Tx Tom' }])
      expect(update).toEqual([{ status: 'confirmed' }])
      // One transaction: one xid, and the count sees the insert before it commits.
      expect(xid).toEqual([{ xid: expect.stringMatching(/^\d+$/) }])
      expect(count).toEqual([{ n: 1, xid: xid?.[0]?.xid }])

      const [row] = await admin()`
        select a.status, c.name from appointments a join customers c on c.tenant_id = a.tenant_id and c.id = a.customer_id
        where a.tenant_id = ${tenant.id} and a.id = ${appointmentId}`
      expect(row).toEqual({ status: 'confirmed', name: 'Tx Tom' })
    })

    it('a failing statement rolls the whole transaction back and names its SQLSTATE', async () => {
      const ghost = '01900000-0000-7000-8000-00000000c002'
      const error = await rejection(
        sql.transaction([
          sql`insert into customers (tenant_id, id, name) values (${tenant.id}, ${ghost}, ${'Ghost'})`,
          sql`update appointments set status = 'cancelled' where id = ${appointmentId}`,
          sql`select nope from customers`,
        ]),
      )
      expect(error).toBeInstanceOf(NeonDbError)
      expect(error).toMatchObject({ code: '42703', message: 'column "nope" does not exist' })
      const rows = await admin()`
        select (select count(*)::int from customers where tenant_id = ${tenant.id} and id = ${ghost}) as ghosts,
               (select status from appointments where tenant_id = ${tenant.id} and id = ${appointmentId}) as status`
      expect(rows).toEqual([{ ghosts: 0, status: 'confirmed' }])
    })

    const settings = (txn: NeonQueryFunctionInTransaction<false, false>) =>
      txn`select current_setting('transaction_isolation') as isolation,
                 current_setting('transaction_read_only') as read_only,
                 (select count(*)::int from appointments) as appointments`

    it('honours isolationLevel on a read-write transaction', async () => {
      const [repeatable, written] = await sql.transaction(
        (txn) => [
          settings(txn),
          txn`update services set active = true where id = ${serviceId} returning active`,
        ],
        { isolationLevel: 'RepeatableRead' },
      )
      expect(repeatable).toEqual([{ isolation: 'repeatable read', read_only: 'off', appointments: 1 }])
      expect(written).toEqual([{ active: true }])
    })

    it('honours { isolationLevel, readOnly } when the reads are served by a replica', async () => {
      // Wait until the router sends this tenant's reads to the replica (it has replayed the writes above),
      // so the transactions below take the replica path whatever the timing.
      await eventually(async () => {
        const answer = await post(router, '/sql', { query: 'select 1' }, neonHeaders(tenant))
        return answer.headers.get('x-switchyard-node') === 'shard-2-replica-1' ? true : undefined
      })
      const [repeatable] = await sql.transaction((txn) => [settings(txn), settings(txn)], {
        isolationLevel: 'RepeatableRead',
        readOnly: true,
      })
      expect(repeatable).toEqual([{ isolation: 'repeatable read', read_only: 'on', appointments: 1 }])
      const [serializable] = await sql.transaction((txn) => [settings(txn), settings(txn)], {
        isolationLevel: 'Serializable',
        readOnly: true,
      })
      expect(serializable).toEqual([{ isolation: 'serializable', read_only: 'on', appointments: 1 }])
    })

    it('readOnly refuses a write with 25006 and writes nothing', async () => {
      const error = await rejection(
        sql.transaction(
          [sql`select 1 as one`, sql`update services set name = ${'changed'} where id = ${serviceId}`],
          { readOnly: true },
        ),
      )
      expect(error).toBeInstanceOf(NeonDbError)
      expect(error.code).toBe('25006')
      const [row] =
        await admin()`select name from services where tenant_id = ${tenant.id} and id = ${serviceId}`
      expect(row?.name).toBe('Massage')
    })
  })

  describe('errors', () => {
    it('a duplicate primary key is a NeonDbError with code 23505', async () => {
      const error = await rejection(
        sql`insert into customers (tenant_id, id, name) values (${tenant.id}, ${customerId}, ${'again'})`,
      )
      expect(error).toBeInstanceOf(NeonDbError)
      expect(error).toMatchObject({
        code: '23505',
        message: 'duplicate key value violates unique constraint "customers_tenant_id_id_pk"',
        severity: 'ERROR',
        schema: 'public',
        table: 'customers',
        constraint: 'customers_tenant_id_id_pk',
      })
      // PostgreSQL withholds the key values ("Key (…)=(…) already exists.") from a role subject to RLS.
      expect(error.detail).toBeUndefined()
    })

    it("PostgreSQL's detail, hint and position reach the client", async () => {
      const json = await rejection(sql.query(`select '{"a":'::jsonb as j`))
      expect(json).toMatchObject({
        code: '22P02',
        message: 'invalid input syntax for type json',
        detail: 'The input string ended unexpectedly.',
        position: '8',
      })
      const call = await rejection(sql.query('select lower(1)'))
      expect(call).toMatchObject({ code: '42883', hint: expect.stringMatching(/^No function matches/) })
    })

    it('a bad column is 42703 with its position', async () => {
      const error = await rejection(sql.query('select id, nope from customers where id = $1', [customerId]))
      expect(error).toBeInstanceOf(NeonDbError)
      expect(error).toMatchObject({ code: '42703', message: 'column "nope" does not exist', position: '12' })
    })

    it('a statement the policy forbids is refused with code statement_not_allowed', async () => {
      const error = await rejection(sql.query('SET ROLE postgres'))
      expect(error).toBeInstanceOf(NeonDbError)
      expect(error.code).toBe('statement_not_allowed')
      expect(error.message).toMatch(/SET ROLE is not allowed/)
      const inBatch = await rejection(
        sql.transaction([sql`select 1`, sql`select set_config('app.current_tenant', ${other.id}, true)`]),
      )
      expect(inBatch.code).toBe('statement_not_allowed')
    })

    it('a wrong API key, or a key for another tenant, is refused', async () => {
      const wrongKey = neon(connectionString(tenant, `${tenant.key.slice(0, -4)}xxxx`))
      const error = await rejection(wrongKey`select 1 as one`)
      expect(error).toBeInstanceOf(NeonDbError)
      expect(error.code).toBe('unauthorized')
      const otherTenant = neon(connectionString(other, tenant.key))
      const forbidden = await rejection(otherTenant`select 1 as one`)
      expect(forbidden).toBeInstanceOf(NeonDbError)
      expect(forbidden.code).toBe('forbidden')
      // The right key still works: the refusals were about the key, not the endpoint.
      expect(await sql`select 1 as one`).toEqual([{ one: 1 }])
    })
  })

  it("as tenant A, B's rows by B's ids are invisible and unchangeable, even naming B's tenant_id", async () => {
    const asOther = neon(connectionString(other, other.key))
    const [business] =
      await asOther`insert into businesses (tenant_id, name) values (${other.id}, ${'B biz'}) returning id`
    const [customer] = await asOther`
      insert into customers (tenant_id, name, notes) values (${other.id}, ${'B customer'}, ${'secret'}) returning id`
    const snapshot = () =>
      admin()`select id::text, name, notes from customers where tenant_id = ${other.id} order by id`
    const before = await snapshot()
    expect(before).toEqual([{ id: customer?.id, name: 'B customer', notes: 'secret' }])

    expect(await sql`select * from customers where tenant_id = ${other.id} and id = ${customer?.id}`).toEqual(
      [],
    )
    expect(await sql`select * from businesses where id = ${business?.id}`).toEqual([])
    const update = await sql.query(
      'update customers set name = $1 where tenant_id = $2 and id = $3',
      ['hijacked', other.id, customer?.id],
      { fullResults: true },
    )
    expect(update.rowCount).toBe(0)
    const removed = await sql.transaction([
      sql`delete from customers where tenant_id = ${other.id} returning id`,
      sql`select count(*)::int as n from customers`,
    ])
    expect(removed[0]).toEqual([])
    // A still sees its own customers: the filter is the tenant, not everything.
    expect(removed[1]?.[0]?.n).toBeGreaterThan(0)
    const planted = await rejection(
      sql`insert into customers (tenant_id, name) values (${other.id}, ${'planted'})`,
    )
    expect(planted.code).toBe('42501')

    expect(await snapshot()).toEqual(before)
  })
})

// Last: drizzle's neon-http driver sets the client's global type parsers so that timestamps stay text for
// its own mappers, which changes what a bare neon() returns for later queries in this file.
describe('drizzle-orm/neon-http over the same neon() client', () => {
  let db: ReturnType<typeof drizzle>
  let businessId: string
  let serviceId: string
  let customerId: string
  const start = new Date('2033-01-02T03:04:05.678Z')
  const end = new Date('2033-01-02T04:00:00.001Z')

  it.beforeAll(() => {
    db = drizzle({ client: sql })
  })

  it('inserts and selects the example schema with typed values', async () => {
    const [business] = await db
      .insert(businesses)
      .values({ tenantId: tenant.id, name: 'Drizzle Neon', settings: { theme: { dark: true } } })
      .returning()
    expect(business).toEqual({
      tenantId: tenant.id,
      id: expect.stringMatching(UUID_V7),
      name: 'Drizzle Neon',
      timezone: 'UTC',
      settings: { theme: { dark: true } },
      createdAt: expect.any(Date),
    })
    businessId = business?.id ?? ''
    const [service] = await db
      .insert(services)
      .values({ tenantId: tenant.id, businessId, name: 'Trim', durationMinutes: 20, price: '7.5' })
      .returning({
        id: services.id,
        durationMinutes: services.durationMinutes,
        price: services.price,
        active: services.active,
      })
    expect(service).toEqual({
      id: expect.stringMatching(UUID_V7),
      durationMinutes: 20,
      price: '7.50',
      active: true,
    })
    serviceId = service?.id ?? ''
    const [customer] = await db
      .insert(customers)
      .values({ tenantId: tenant.id, name: 'Ünal "the client"' })
      .returning({ id: customers.id })
    customerId = customer?.id ?? ''

    const [appointment] = await db
      .insert(appointments)
      .values({
        tenantId: tenant.id,
        businessId,
        serviceId,
        customerId,
        startTime: start,
        endTime: end,
        price: '7.5',
        metadata: { via: 'drizzle', list: [1, { two: 2 }] },
      })
      .returning({ id: appointments.id })
    const rows = await db
      .select({
        id: appointments.id,
        start: appointments.startTime,
        end: appointments.endTime,
        price: appointments.price,
        metadata: appointments.metadata,
        customer: customers.name,
        minutes: services.durationMinutes,
        active: services.active,
      })
      .from(appointments)
      .innerJoin(
        customers,
        and(eq(customers.tenantId, appointments.tenantId), eq(customers.id, appointments.customerId)),
      )
      .innerJoin(
        services,
        and(eq(services.tenantId, appointments.tenantId), eq(services.id, appointments.serviceId)),
      )
      .where(and(eq(appointments.id, appointment?.id ?? ''), eq(appointments.startTime, start)))
    expect(rows).toEqual([
      {
        id: appointment?.id,
        start,
        end,
        price: '7.50',
        metadata: { via: 'drizzle', list: [1, { two: 2 }] },
        customer: 'Ünal "the client"',
        minutes: 20,
        active: true,
      },
    ])
    expect(rows[0]?.start).toBeInstanceOf(Date)
  })

  it('updates and deletes', async () => {
    const updated = await db
      .update(services)
      .set({ active: false, price: '8' })
      .where(eq(services.id, serviceId))
      .returning({ active: services.active, price: services.price })
    expect(updated).toEqual([{ active: false, price: '8.00' }])
    const [count] = await db
      .execute<{ n: number }>(
        dsql`select count(*)::int as n from appointments where service_id = ${serviceId}`,
      )
      .then((result) => result.rows)
    expect(count).toEqual({ n: 1 })
    const deleted = await db
      .delete(appointments)
      .where(eq(appointments.serviceId, serviceId))
      .returning({ id: appointments.id })
    expect(deleted).toHaveLength(1)
    expect(await db.select().from(appointments).where(eq(appointments.serviceId, serviceId))).toEqual([])
  })

  it('db.batch runs as one transaction (neon transaction()), and a failure rolls it all back', async () => {
    const id = '01900000-0000-7000-8000-00000000d001'
    const [inserted, updated, selected] = await db.batch([
      db
        .insert(customers)
        .values({ tenantId: tenant.id, id, name: 'Batched' })
        .returning({ id: customers.id }),
      db.update(services).set({ durationMinutes: 25 }).where(eq(services.id, serviceId)).returning({
        minutes: services.durationMinutes,
      }),
      db.select({ name: customers.name }).from(customers).where(eq(customers.id, id)),
    ])
    expect(inserted).toEqual([{ id }])
    expect(updated).toEqual([{ minutes: 25 }])
    expect(selected).toEqual([{ name: 'Batched' }])

    const again = '01900000-0000-7000-8000-00000000d002'
    const error = await rejection(
      db.batch([
        db.insert(customers).values({ tenantId: tenant.id, id: again, name: 'Rolled back' }),
        db.update(services).set({ durationMinutes: 99 }).where(eq(services.id, serviceId)),
        db.insert(customers).values({ tenantId: tenant.id, id, name: 'Duplicate' }),
      ]),
    )
    expect(error).toBeInstanceOf(NeonDbError)
    expect(error.code).toBe('23505')
    const rows = await admin()`
      select (select count(*)::int from customers where tenant_id = ${tenant.id} and id = ${again}) as again,
             (select duration_minutes from services where tenant_id = ${tenant.id} and id = ${serviceId}) as minutes`
    expect(rows).toEqual([{ again: 0, minutes: 25 }])
  })
})
