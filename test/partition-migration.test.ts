import { rmSync } from 'node:fs'
import { describe, expect } from 'vitest'
import { OPERATIONS, type OperationName } from '../src/loadtest/workload.ts'
import type { Sql } from '../src/shard/connection.ts'
import { migrateShard } from '../src/shard/migrate.ts'
import { ensurePartitions, monthStart, partitionName } from '../src/shard/partitions.ts'
import { connect, it } from './fixtures.ts'
import { migrationsUpTo } from './setup/migrations.ts'
import { topology } from './support.ts'

const DATABASE = 'sy_partition_path'
const EXAMPLE = 'examples/appointments/migrations'
const TENANTS = 3
const ROWS_PER_TENANT = 3000

describe('the example schema partitions an existing shard (migration 0006)', () => {
  it('keeps every row, puts each in its month, and leaves RLS forced on every partition', async () => {
    const shard = topology().shards[0]
    if (!shard) throw new Error('no shard')
    const admin = connect(shard.primary)
    await admin.unsafe(`drop database if exists ${DATABASE} with (force)`)
    await admin.unsafe(`create database ${DATABASE}`)
    // A zone with DST and short months: the migration's bounds must not depend on the session's zone.
    await admin.unsafe(`alter database ${DATABASE} set timezone = 'Europe/Berlin'`)
    const url = new URL(shard.primary)
    url.pathname = `/${DATABASE}`
    const older = migrationsUpTo(EXAMPLE, '0005_per_day_quota_on_update')
    try {
      const before = structuredClone(topology())
      before.tenantSchema.migrations = older
      await migrateShard(before, shard.id, url.toString(), 'capability-of-this-test')
      const db = connect(url.toString())
      expect((await db`select relkind from pg_class where oid = 'appointments'::regclass`)[0]?.relkind).toBe(
        'r',
      )
      // Rows of 3 tenants from 14 months ago to 20 months ahead, one far ahead: past months, kept months,
      // and dates beyond them.
      await db`
        insert into businesses (tenant_id, id, name)
        select t, t, 'b' from (select gen_random_uuid() as t from generate_series(1, ${TENANTS})) tenants`
      await db`insert into services (tenant_id, id, business_id, name, duration_minutes, price)
               select tenant_id, id, id, 's', 30, 10 from businesses`
      await db`insert into customers (tenant_id, id, name) select tenant_id, id, 'c' from businesses`
      await db`
        insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time, status)
        select b.id, b.id, b.id, b.id, at, at + interval '30 minutes', (array['scheduled', 'confirmed', 'completed'])[1 + i % 3]
        from businesses b, generate_series(1, ${ROWS_PER_TENANT}) i,
             lateral (select date_trunc('month', now()) - interval '14 months'
                             + (i * interval '34 months' / ${ROWS_PER_TENANT}) as at) times`
      await db`
        insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time)
        select id, id, id, id, '2035-06-01T10:00:00Z', '2035-06-01T11:00:00Z' from businesses limit 1`
      // What a tenant could store to break the upgrade or ask for centuries of partitions: they stay in
      // the DEFAULT partition.
      await db`
        insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time)
        select id, id, id, id, at::timestamptz, '2000-01-01T00:00:00Z'
        from businesses, unnest(array['-infinity', '1500-01-01T10:00:00Z', '0100-03-01 10:00:00+00 BC']) at
        where id = (select id from businesses order by id limit 1)`
      const content = async () =>
        (
          await db<{ n: number; hash: string; oldest: Date }[]>`
            select count(*)::int as n, md5(string_agg(a::text, ',' order by tenant_id, id)) as hash,
                   min(start_time) filter (where start_time > '2000-01-01') as oldest
            from appointments a`
        )[0]
      const rows = await content()
      expect(rows?.n).toBe(TENANTS * ROWS_PER_TENANT + 4)

      const after = await migrateShard(topology(), shard.id, url.toString(), 'capability-of-this-test')
      expect(after.applied).toBeGreaterThan(0)
      expect(await content()).toEqual(rows)
      expect((await db`select relkind from pg_class where oid = 'appointments'::regclass`)[0]?.relkind).toBe(
        'p',
      )

      // One partition per month from the oldest row's (or 12 back) to 12 ahead, and the DEFAULT one; each with RLS
      // forced and its policy, and each row in the partition of its month.
      const oldest = monthStart(rows?.oldest as Date)
      const first = [oldest, monthStart(new Date(), -12)].sort()[0] as string
      const months: string[] = []
      for (let month = first; month <= monthStart(new Date(), 12); month = monthStart(new Date(month), 1))
        months.push(month)
      const partitions = await db<{ name: string; forced: boolean; policies: number; misplaced: number }[]>`
        select c.relname as name, c.relrowsecurity and c.relforcerowsecurity as forced,
               (select count(*)::int from pg_policy p where p.polrelid = c.oid) as policies, 0 as misplaced
        from pg_inherits i join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'appointments'::regclass order by 1`
      expect(partitions.map((p) => p.name)).toEqual(
        [...months.map((month) => partitionName('appointments', month)), 'appointments_default'].sort(),
      )
      expect(partitions.every((p) => p.forced && p.policies === 1)).toBe(true)
      const wrong = await db<{ n: number }[]>`
        select count(*)::int as n from appointments
        where tableoid::regclass::text <>
              case when start_time >= ${`${first}T00:00:00Z`}::timestamptz
                        and start_time < ${`${monthStart(new Date(), 13)}T00:00:00Z`}::timestamptz
                   then 'appointments_p' || to_char(start_time at time zone 'UTC', 'YYYY_MM')
                   else 'appointments_default' end`
      expect(wrong[0]?.n).toBe(0)
      const [parked] = await db<{ n: number }[]>`select count(*)::int as n from appointments_default`
      expect(parked?.n).toBeGreaterThan(1)

      // The parent keeps the key (with the partition key), the seed's indexes, RLS and the quota triggers.
      const [shape] = await db<{ key: string; indexes: string[]; triggers: string[]; forced: boolean }[]>`
        select (select pg_get_constraintdef(oid) from pg_constraint where conrelid = c.oid and contype = 'p') as key,
               array(select relname::text from pg_index x join pg_class i on i.oid = x.indexrelid
                     where x.indrelid = c.oid and not x.indisprimary order by 1) as indexes,
               array(select tgname::text from pg_trigger where tgrelid = c.oid and not tgisinternal order by 1) as triggers,
               c.relrowsecurity and c.relforcerowsecurity as forced
        from pg_class c where c.oid = 'appointments'::regclass`
      expect(shape).toEqual({
        key: 'PRIMARY KEY (tenant_id, id, start_time)',
        indexes: [
          'idx_appointments_tenant_business_date',
          'idx_appointments_tenant_start',
          'idx_appointments_tenant_status_date',
        ],
        triggers: ['appointments_quota', 'appointments_quota_update'],
        forced: true,
      })
      // The router's role reads and writes through the parent (grants follow the migration).
      const [grant] = await db<{ ok: boolean }[]>`
        select has_table_privilege(${topology().router.role.name}, 'appointments', 'select, insert, update, delete') as ok`
      expect(grant?.ok).toBe(true)

      // Kept ahead already: ensure has nothing to make; a rerun of migrate applies nothing.
      const ensured = await ensurePartitions(db, ['public'], { monthsAhead: 12, retainMonths: null })
      expect(
        ensured.flatMap((outcome) => [...outcome.created, ...outcome.skipped.map((s) => s.month)]),
      ).toEqual([])
      expect(
        (await migrateShard(topology(), shard.id, url.toString(), 'capability-of-this-test')).applied,
      ).toBe(0)
      // A booking 13 months ahead waits in the DEFAULT partition; when its month is made, ensure moves it
      // there (the example's DEFAULT partition: RLS forced, quota and foreign key triggers).
      const later = monthStart(new Date(), 13)
      const [booked] = await db<{ id: string }[]>`
        insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time)
        select id, id, id, id, ${`${later}T09:00:00Z`}, ${`${later}T10:00:00Z`} from businesses limit 1
        returning id`
      const whereIs = async () =>
        (
          await db<
            { at: string }[]
          >`select tableoid::regclass::text as at from appointments where id = ${booked?.id ?? null}`
        )[0]?.at
      expect(await whereIs()).toBe('appointments_default')
      const moved = await ensurePartitions(db, ['public'], { monthsAhead: 13, retainMonths: null })
      expect(
        moved.flatMap((outcome) => [...outcome.created, ...outcome.skipped.map((s) => s.reason)]),
      ).toEqual([`public.${partitionName('appointments', later)}`])
      expect(await whereIs()).toBe(partitionName('appointments', later))
      expect((await content())?.n).toBe((rows?.n ?? 0) + 1)
      await expectPruning(db, url)
      await db.end()
    } finally {
      rmSync(older, { recursive: true, force: true })
      await admin.unsafe(`drop database if exists ${DATABASE} with (force)`)
    }
  })
})

/** The SQL the load test sends for one of the seed's reads (src/loadtest/workload.ts). */
function seedRead(name: OperationName): string {
  const tenant = {
    id: '',
    name: '',
    shard: '',
    business: '',
    services: [],
    staff: [],
    customers: [],
    appointments: [],
  }
  const operation = OPERATIONS.find((one) => one.name === name)
  if (!operation) throw new Error(`no operation ${name}`)
  return operation.build(tenant).sql
}

/**
 * Plans the seed's reads as the router runs them (its role, in a tenant context entered with
 * switchyard.enter(), RLS applying) and checks that they read only the partitions of the months they
 * ask for: with the values (a custom plan, pruned when planned) and as a generic plan (pruned when it
 * starts). SWITCHYARD_PRINT_PLANS=1 prints them (docs/PARTITIONS.md shows them).
 */
async function expectPruning(db: Sql, url: URL) {
  const [tenant] = await db<{ id: string }[]>`select tenant_id as id from businesses order by 1 limit 1`
  const id = tenant?.id as string
  await db`insert into switchyard.tenant_ownership (tenant_id, epoch, state) values (${id}, 1, 'owner')`
  const asRouter = new URL(url)
  asRouter.username = topology().router.role.name
  asRouter.password = topology().router.role.password
  const router = connect(asRouter.toString())
  const week = { from: `${monthStart(new Date(), 2)}T00:00:00Z`, to: '' }
  week.from = new Date(new Date(week.from).getTime() - 3 * 86_400_000).toISOString()
  week.to = new Date(new Date(week.from).getTime() + 7 * 86_400_000).toISOString()
  const day = {
    from: `${monthStart(new Date(), 1)}T00:00:00Z`,
    to: `${monthStart(new Date(), 1).slice(0, 8)}02T00:00:00Z`,
  }
  const cases = [
    {
      sql: seedRead('appointments_by_status'),
      params: [id, 'scheduled', week.from, week.to],
      months: [1, 2],
    },
    { sql: seedRead('appointments_by_business_day'), params: [id, id, day.from, day.to], months: [1] },
  ]
  for (const { sql, params, months } of cases) {
    const expected = months.map((offset) => partitionName('appointments', monthStart(new Date(), offset)))
    for (const mode of ['force_custom_plan', 'force_generic_plan']) {
      const plan = await router.begin(async (tx) => {
        await tx`select switchyard.enter(${id}::uuid, 1, false, null, 'capability-of-this-test')`
        await tx.unsafe(`set local plan_cache_mode = ${mode}`)
        await tx.unsafe(`prepare seed_read as ${sql}`)
        const lines = await tx.unsafe<{ 'QUERY PLAN': string }[]>(
          `explain (analyze, costs off, timing off, summary off, buffers off) execute seed_read(${params.map((p) => `'${p}'`).join(', ')})`,
        )
        await tx.unsafe('deallocate seed_read')
        return lines.map((line) => line['QUERY PLAN']).join('\n')
      })
      if (process.env.SWITCHYARD_PRINT_PLANS) console.log(`-- ${mode}\n${plan}\n`)
      const read = [...new Set(plan.match(/appointments_(p\d{4}_\d{2}|default)/g) ?? [])].sort()
      expect(read, plan).toEqual(expected)
    }
  }
}
