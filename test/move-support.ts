import { seedDemoTenant } from '../examples/appointments/demo.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { addTenant } from '../src/directory/tenants.ts'
import { logger } from '../src/log.ts'
import type { MoverDeps } from '../src/migrate-tenant/mover.ts'
import { connect } from './fixtures.ts'
import { newTenantId, shard, topology } from './support.ts'

/** A fresh tenant on `on`, seeded with the demo rows (a business, services, staff, customers, appointments). */
export async function seededTenant(on: string): Promise<string> {
  const id = newTenantId()
  await withDirectory(topology(), (directory) => addTenant(directory, topology(), { id, shard: on }))
  await seedDemoTenant(connect(shard(on).primary), id, `Moving ${id.slice(0, 8)}`)
  return id
}

const TABLES = ['businesses', 'services', 'staff', 'customers', 'appointments', 'working_hours']

/** One value per example table for the tenant's rows on a shard's primary (admin: RLS does not filter). */
async function perTable<T>(on: string, tenant: string, select: string): Promise<Record<string, T>> {
  const sql = connect(shard(on).primary)
  const values: Record<string, T> = {}
  for (const table of TABLES) {
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
