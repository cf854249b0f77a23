import { rmSync } from 'node:fs'
import { describe, expect } from 'vitest'
import { migrateShard } from '../src/shard/migrate.ts'
import { ensurePartitions, monthStart } from '../src/shard/partitions.ts'
import { connect, it } from './fixtures.ts'
import { migrationsUpTo } from './setup/migrations.ts'
import { topology } from './support.ts'

const EXAMPLE = 'examples/appointments/migrations'

async function scratch(name: string, prep: (db: any) => Promise<void>, tz?: string) {
  const shard = topology().shards[0]!
  const admin = connect(shard.primary)
  await admin.unsafe(`drop database if exists ${name} with (force)`)
  await admin.unsafe(`create database ${name}`)
  if (tz) await admin.unsafe(`alter database ${name} set timezone = '${tz}'`)
  const url = new URL(shard.primary)
  url.pathname = `/${name}`
  const older = migrationsUpTo(EXAMPLE, '0005_per_day_quota_on_update')
  const before = structuredClone(topology())
  before.tenantSchema.migrations = older
  await migrateShard(before, shard.id, url.toString(), 'cap')
  const db = connect(url.toString())
  await prep(db)
  let result: string
  try {
    await migrateShard(topology(), shard.id, url.toString(), 'cap')
    const [r] = await db`select count(*)::int as n from pg_inherits where inhparent = 'appointments'::regclass`
    result = `ok partitions=${r.n}`
  } catch (e) {
    result = `FAILED ${(e as any).code} ${(e as Error).message}`
  }
  rmSync(older, { recursive: true, force: true })
  return { result, db, url, admin }
}

const seed = async (db: any, at: string) => {
  await db`insert into businesses (tenant_id, id, name) values ('00000000-0000-0000-0000-000000000001','00000000-0000-0000-0000-000000000001','b')`
  await db`insert into services (tenant_id, id, business_id, name, duration_minutes, price) select tenant_id, id, id, 's', 30, 10 from businesses`
  await db`insert into customers (tenant_id, id, name) select tenant_id, id, 'c' from businesses`
  if (at) await db.unsafe(`insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time)
    select id, id, id, id, '${at}', '2020-01-01T00:00:00Z' from businesses`)
}

describe('scratch', () => {
  it('probes', async () => {
    for (const tz of ['Europe/Berlin', 'America/Bogota', 'Asia/Tokyo']) {
      const { result } = await scratch('sy_scr_tz', (db) => seed(db, ''), tz)
      console.log('TZ', tz, result)
    }
    for (const at of ['-infinity', '1500-01-01T00:00:00Z', '0100-01-01T00:00:00Z BC']) {
      const { result } = await scratch('sy_scr_old', (db) => seed(db, at))
      console.log('OLDEST', at, result)
    }
    const { result, db } = await scratch('sy_scr_ens', (db) => seed(db, ''))
    console.log('ENS migrate', result)
    const far = `${monthStart(new Date(), 13)}T12:00:00Z`
    const farEnd = `${monthStart(new Date(), 13)}T13:00:00Z`
    await db.unsafe(`insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time)
      select id, id, id, id, '${far}', '${farEnd}' from businesses`)
    await db.unsafe(`insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time)
      select id, id, id, id, '${monthStart(new Date(), 14).slice(0,4)}-${monthStart(new Date(), 14).slice(5,7)}-10 BC', '2020-01-01' from businesses`)
    const out = await ensurePartitions(db, ['public'], { monthsAhead: 14, retainMonths: null })
    console.log('ENS', JSON.stringify(out))
    console.log('ENS rows', JSON.stringify(await db`select tableoid::regclass::text as p, start_time::text from appointments where start_time > now() + interval '1 year' or start_time < '1000-01-01'`))
    const { partitionLayout } = await import('../src/shard/partitions.ts')
    const lay = await partitionLayout(db, ['public'])
    console.log('ENS default', JSON.stringify(lay[0]?.partitions.filter((p) => p.rows !== null)))
    expect(1).toBe(1)
  }, 300_000)
})
