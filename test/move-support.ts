import { seedDemoTenant } from '../examples/appointments/demo.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { addTenant } from '../src/directory/tenants.ts'
import { logger } from '../src/log.ts'
import type { MoverDeps } from '../src/migrate-tenant/mover.ts'
import type { Sql } from '../src/shard/connection.ts'
import { monthStart, partitionName } from '../src/shard/partitions.ts'
import { movedTables, tenantTables } from '../src/shard/tables.ts'
import { connect } from './fixtures.ts'
import { newTenantId, shard, topology } from './support.ts'

/** A fresh tenant on `on`, seeded with the demo rows (a business, services, staff, customers, appointments). */
export async function seededTenant(on: string): Promise<string> {
  const id = newTenantId()
  await withDirectory(topology(), (directory) => addTenant(directory, topology(), { id, shard: on }))
  await seedDemoTenant(connect(shard(on).primary), id, `Moving ${id.slice(0, 8)}`)
  return id
}

/**
 * The tables a move carries in `public`: the example's, and any a test made (a partitioned one through
 * its root, as the mover reads it), by their unqualified names.
 */
async function movedTableNames(sql: Sql): Promise<string[]> {
  return movedTables(await tenantTables(sql, ['public']))
    .map((table) => table.name)
    .filter((name) => name.startsWith('public.'))
    .map((name) => name.slice('public.'.length))
}

/** One value per tenant table for the tenant's rows on a shard's primary (admin: RLS does not filter). */
async function perTable<T>(on: string, tenant: string, select: string): Promise<Record<string, T>> {
  const sql = connect(shard(on).primary)
  const values: Record<string, T> = {}
  for (const table of await movedTableNames(sql)) {
    const [row] = await sql.unsafe<{ value: T }[]>(
      `select ${select} as value from ${table} t where tenant_id = $1`,
      [tenant],
    )
    values[table] = row?.value as T
  }
  return values
}

/** The tenant's rows on a shard's primary, per table. */
export const rowsOn = (on: string, tenant: string) => perTable<number>(on, tenant, 'count(*)::int')

/** The tenant's rows on a shard's primary, per table: their count and a hash of their content. */
export const contentOn = (on: string, tenant: string) =>
  perTable<string>(on, tenant, `count(*) || ' rows, hash ' || coalesce(sum(hash_record_extended(t, 0)), 0)`)

export const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0)

/** The `move leftovers` problems in `switchyard doctor --json`'s output. */
export const leftoverProblems = (stdout: string) =>
  (JSON.parse(stdout) as { findings: { check: string; ok: boolean; detail: string }[] }).findings.filter(
    (f) => f.check === 'move leftovers' && !f.ok,
  )

/** Publications, subscriptions and slots a move left anywhere (they are all named `sy_move_…`). */
export async function moveArtifacts(): Promise<string[]> {
  const found: string[] = []
  for (const s of topology().shards) {
    const sql = connect(s.primary)
    const rows = await sql<{ kind: string; name: string }[]>`
      select 'publication' as kind, pubname::text as name from pg_publication where pubname like 'sy_move_%'
      union all select 'subscription', subname::text from pg_subscription where subname like 'sy_move_%'
      union all select 'slot', slot_name::text from pg_replication_slots
        where slot_name like 'sy_move_%' or slot_name like 'pg_%_sync_%'`
    found.push(...rows.map((r) => `${s.id} ${r.kind} ${r.name}`))
  }
  return found
}

/** In-process mover dependencies; the caller closes `directory`. */
export function moverDeps(directory: MoverDeps['directory'], redis?: MoverDeps['redis']): MoverDeps {
  return { topology: topology(), directory, redis, logger }
}

/** A tenant table partitioned by month (`at`), RLS forced, as an application following the seed makes one. */
export async function createPartitioned(sql: Sql, table: string) {
  await sql.unsafe(`
    create table public.${table} (
      tenant_id uuid not null, id uuid not null default gen_random_uuid(), at timestamptz not null,
      note text, counter int not null default 0,
      primary key (tenant_id, id, at)
    ) partition by range (at)`)
  await sql.unsafe(`alter table public.${table} enable row level security`)
  await sql.unsafe(`alter table public.${table} force row level security`)
  await sql.unsafe(`create policy tenant_isolation on public.${table}
    using (tenant_id = (select switchyard.current_tenant()))
    with check (tenant_id = (select switchyard.current_tenant()))`)
}

/** The partition of `month` (YYYY-MM-01) of a table made by createPartitioned, with RLS forced. */
export async function addMonth(sql: Sql, table: string, month: string) {
  const next = monthStart(new Date(`${month}T00:00:00Z`), 1)
  const name = partitionName(table, month)
  await sql.unsafe(
    `create table public.${name} partition of public.${table} for values from ('${month}') to ('${next}')`,
  )
  await sql.unsafe(`alter table public.${name} enable row level security`)
  await sql.unsafe(`alter table public.${name} force row level security`)
  await sql.unsafe(`create policy tenant_isolation on public.${name}
    using (tenant_id = (select switchyard.current_tenant()))`)
}
