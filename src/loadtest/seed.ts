import { randomUUID } from 'node:crypto'
import { fillTenant, type TenantVolume } from '../../examples/appointments/generate.ts'
import type { Topology } from '../config/topology.ts'
import type { Directory } from '../directory/connection.ts'
import { addTenant, shardPrimary } from '../directory/tenants.ts'
import { SwitchyardError } from '../errors.ts'
import { fillTable, placeTenant } from '../placement/placement.ts'
import { openAdmin } from '../shard/connection.ts'
import type { SeedOptions } from './options.ts'
import type { StepProgress } from './progress.ts'

/**
 * One tenant at scale 1, in the seed's proportions: 100,000 customers and 10,000 appointments a day
 * over 200 tenants are 500 customers and 50 appointments a day each; one business with a dozen
 * services and eight staff. Appointments cover two weeks back and two ahead (what the workload reads;
 * a longer history would only make `seed` slower).
 */
export const LOADTEST_VOLUME: TenantVolume = {
  services: 12,
  staff: 8,
  customers: 500,
  appointments: 50 * 28,
  days: 14,
}

/** Scale multiplies what grows with a tenant's business (customers, appointments), not its shape. */
export function volumeAt(scale: number): TenantVolume {
  return {
    ...LOADTEST_VOLUME,
    customers: Math.max(10, Math.round(LOADTEST_VOLUME.customers * scale)),
    appointments: Math.max(1, Math.round(LOADTEST_VOLUME.appointments * scale)),
  }
}

export interface LoadtestTenant {
  id: string
  name: string
  shard: string
  /** n of `<prefix>-<n>`: the tenant's rank when the run skews the load (1 is the busiest). */
  index: number
}

export const tenantName = (prefix: string, index: number) => `${prefix}-${String(index).padStart(3, '0')}`

/** The tenants `seed` made with this prefix, by index: `run` drives these. */
export async function findLoadtestTenants(directory: Directory, prefix: string): Promise<LoadtestTenant[]> {
  const rows = await directory.sql<{ id: string; name: string; shard_id: string }[]>`
    select id, name, shard_id from tenants where name ~ ${`^${prefix}-[0-9]+$`}`
  return rows
    .map((row) => ({
      id: row.id,
      name: row.name,
      shard: row.shard_id,
      index: Number(row.name.slice(prefix.length + 1)),
    }))
    .sort((a, b) => a.index - b.index)
}

export interface SeedResult {
  tenants: number
  added: number
  filled: number
  rows: number
  seconds: number
  perShard: Record<string, number>
}

/**
 * Makes `--tenants` loadtest tenants exist and hold data: tenants already there (same prefix) are
 * reused, missing ones are placed automatically (`addTenant` with `placeTenant`), and every
 * tenant without data is filled on its shard's primary. Re-running is cheap and changes nothing that
 * is already in place. Refuses up front, writing nothing, when the missing tenants do not fit.
 */
export async function seedLoadtest(
  directory: Directory,
  topology: Topology,
  options: SeedOptions,
  onProgress: (progress: StepProgress) => void = () => {},
): Promise<SeedResult> {
  const started = performance.now()
  const existing = await findLoadtestTenants(directory, options.prefix)
  const have = new Set(existing.map((tenant) => tenant.index))
  const missing = Array.from({ length: options.tenants }, (_, i) => i + 1).filter((index) => !have.has(index))
  await assertRoom(directory, topology, missing.length, existing.length)
  const added: LoadtestTenant[] = []
  for (const index of missing) {
    const row = await addTenant(
      directory,
      topology,
      { id: randomUUID(), name: tenantName(options.prefix, index) },
      placeTenant,
    )
    added.push({ id: row.id, name: row.name, shard: row.shardId, index })
    onProgress({ step: 'placing', done: added.length, total: missing.length })
  }
  const tenants = [...existing, ...added].filter((tenant) => tenant.index <= options.tenants)
  const { filled, rows } = await fillAll(topology, tenants, volumeAt(options.scale), onProgress)
  const perShard: Record<string, number> = {}
  for (const tenant of tenants) perShard[tenant.shard] = (perShard[tenant.shard] ?? 0) + 1
  return {
    tenants: tenants.length,
    added: added.length,
    filled,
    rows,
    seconds: (performance.now() - started) / 1000,
    perShard,
  }
}

async function assertRoom(directory: Directory, topology: Topology, wanted: number, existing: number) {
  if (wanted === 0) return
  const configured = new Set(topology.shards.map((shard) => shard.id))
  const rows = await directory.sql<
    { id: string; state: 'active' | 'draining'; capacity: number; tenants: number }[]
  >`
    select s.id, s.state, s.capacity, (select count(*)::int from tenants t where t.shard_id = s.id) as tenants
    from shards s order by s.id`
  const shards = rows.filter((row) => configured.has(row.id))
  const room = shards
    .filter((shard) => shard.state === 'active')
    .reduce((sum, shard) => sum + Math.max(0, shard.capacity - shard.tenants), 0)
  if (wanted > room)
    throw new SwitchyardError(
      'no_capacity',
      `${wanted} more loadtest tenants do not fit: the active shards have room for ${room} (${fillTable(shards)}); ask for --tenants ${existing + room} or fewer`,
    )
}

/**
 * Fills the tenants that have no data yet, one worker per shard (each on one connection to its
 * primary), so the shards work side by side and no primary takes more than one bulk insert at a time.
 */
async function fillAll(
  topology: Topology,
  tenants: LoadtestTenant[],
  volume: TenantVolume,
  onProgress: (progress: StepProgress) => void,
) {
  // Node 20 has no Map.groupBy.
  const byShard = new Map<string, LoadtestTenant[]>()
  for (const tenant of tenants) byShard.set(tenant.shard, [...(byShard.get(tenant.shard) ?? []), tenant])
  let done = 0
  let filled = 0
  let rows = 0
  const report = () =>
    onProgress({ step: 'filling', done, total: tenants.length, note: `${rows.toLocaleString('en-US')} rows` })
  report()
  await Promise.all(
    [...byShard].map(async ([shard, onShard]) => {
      const sql = openAdmin(shardPrimary(topology, shard))
      try {
        for (const tenant of onShard) {
          const written = await fillTenant(sql, tenant.id, tenant.name, volume)
          if (written) filled += 1
          rows += written
          done += 1
          report()
        }
      } finally {
        await sql.end({ timeout: 5 })
      }
    }),
  )
  return { filled, rows }
}
