import { asc, eq } from 'drizzle-orm'
import { z } from 'zod'
import type { Topology } from '../config/topology.ts'
import { shardId } from '../config/topology.ts'
import { describeIssues, SwitchyardError } from '../errors.ts'
import { type Queries, withAdmin } from '../shard/connection.ts'
import { claimOwnership, releaseOwnership } from '../shard/ownership.ts'
import type { Directory } from './connection.ts'
import type { RouteCache } from './routes.ts'
import { type TenantLimits, tenants } from './schema.ts'

export const tenantId = z.uuid({ message: 'must be a UUID' })

export const newTenantSchema = z.strictObject({
  id: tenantId,
  /** Omitted: the caller's `ShardChooser` picks one among the active shards with room. */
  shard: shardId.optional(),
  name: z.string().trim().min(1).max(200).optional(),
})

export type NewTenant = z.input<typeof newTenantSchema>
export type TenantRow = typeof tenants.$inferSelect

/** A shard as a chooser sees it: its state, how many tenants it holds and may hold. */
export type ShardFill = { id: string; state: 'active' | 'draining'; capacity: number; tenants: number }
/**
 * Picks the shard for a new tenant from the shards' fill (`placeTenant`: bounded-load consistent
 * hashing). Passed in: the directory locks and counts, the choice is made in one place above it.
 */
export type ShardChooser = (tenant: string, shards: readonly ShardFill[]) => string

export function parseTenantId(value: unknown): string {
  const parsed = tenantId.safeParse(value)
  if (!parsed.success)
    throw new SwitchyardError('invalid_input', `tenant id ${JSON.stringify(value)} must be a UUID`)
  return parsed.data
}

export function shardPrimary(topology: Topology, shard: string): string {
  const found = topology.shards.find((s) => s.id === shard)
  if (!found) throw new SwitchyardError('shard_unknown', `shard "${shard}" is not in the topology`)
  return found.primary
}

/**
 * Registers a tenant on a shard: directory row and the shard's ownership row, or neither. The shard row
 * is locked so concurrent adds cannot overfill it; the ownership row is written while the directory
 * transaction is open and removed again if that transaction does not commit. Without a shard, `choose`
 * places the tenant (see `placeNewTenant`).
 */
export async function addTenant(
  directory: Directory,
  topology: Topology,
  input: NewTenant & { shard: string },
): Promise<TenantRow>
export async function addTenant(
  directory: Directory,
  topology: Topology,
  input: NewTenant,
  choose: ShardChooser,
): Promise<TenantRow>
export async function addTenant(
  directory: Directory,
  topology: Topology,
  input: NewTenant,
  choose?: ShardChooser,
): Promise<TenantRow> {
  const parsed = newTenantSchema.safeParse(input)
  if (!parsed.success) throw new SwitchyardError('invalid_input', describeIssues(parsed.error.issues))
  const { id } = parsed.data
  // Only a caller past the overloads (a cast) gets here with neither.
  if (parsed.data.shard === undefined && !choose)
    throw new SwitchyardError('invalid_input', `tenant ${id}: name a shard`)
  const name = parsed.data.name ?? `tenant-${id.slice(0, 8)}`
  let primary = parsed.data.shard === undefined ? undefined : shardPrimary(topology, parsed.data.shard)
  let claimed = false
  try {
    return await directory.sql.begin(async (sql) => {
      const shard = parsed.data.shard ?? (await placeNewTenant(sql, topology, id, choose as ShardChooser))
      primary ??= shardPrimary(topology, shard)
      const shardUrl = primary
      // Lock the shard row first and count in a second statement: under READ COMMITTED a count in the
      // locking statement would use the snapshot from before the wait and miss adds that just committed.
      const [target] = await sql<{ capacity: number; state: string }[]>`
        select capacity, state from shards where id = ${shard} for update`
      const [fill] = await sql<
        { used: number }[]
      >`select count(*)::int as used from tenants where shard_id = ${shard}`
      const used = fill?.used ?? 0
      if (!target) {
        throw new SwitchyardError(
          'shard_unknown',
          `shard "${shard}" is not registered: run \`switchyard migrate\``,
        )
      }
      if (target.state !== 'active')
        throw new SwitchyardError('shard_draining', `shard "${shard}" is draining`)
      if (used >= target.capacity) {
        throw new SwitchyardError(
          'shard_full',
          `shard "${shard}" is full (${used}/${target.capacity} tenants)`,
          {
            used,
            capacity: target.capacity,
          },
        )
      }
      await assertNewTenant(sql, id)
      const [row] = await sql<TenantRow[]>`
        insert into tenants (id, name, shard_id) values (${id}, ${name}, ${shard})
        returning id, name, shard_id as "shardId", epoch, state, limits, created_at as "createdAt"`
      await withAdmin(shardUrl, (shardSql) => claimOwnership(shardSql, id, row?.epoch ?? 1)).catch(
        (error: Error) => {
          throw new SwitchyardError(
            'shard_unavailable',
            `cannot write the ownership row on ${shard}: ${error.message}`,
          )
        },
      )
      claimed = true
      return row as TenantRow
    })
  } catch (error) {
    if (claimed && primary) await withAdmin(primary, (shardSql) => releaseOwnership(shardSql, id))
    throw error
  }
}

async function assertNewTenant(sql: Queries, id: string): Promise<void> {
  const [existing] = await sql<{ shard_id: string }[]>`select shard_id from tenants where id = ${id}`
  if (existing)
    throw new SwitchyardError('tenant_exists', `tenant ${id} already exists (on ${existing.shard_id})`)
}

/**
 * Picks the shard for a new tenant inside the add's transaction. Every shard row is locked, in id
 * order (as `shards drain` does, so the two never deadlock), before counting: two concurrent adds
 * cannot both see the same free place, and an add on an explicit shard (which locks that row) waits
 * or is waited for. Only shards of the topology are candidates: the ownership row must be written.
 * Throws `no_capacity` with the fill table when no active shard has room.
 */
async function placeNewTenant(
  sql: Queries,
  topology: Topology,
  id: string,
  choose: ShardChooser,
): Promise<string> {
  const rows = await sql<{ id: string; state: ShardFill['state']; capacity: number }[]>`
    select id, state, capacity from shards order by id for update`
  // A second statement, after the locks: its snapshot includes adds that committed while we waited.
  const used = await sql<{ shard_id: string; used: number }[]>`
    select shard_id, count(*)::int as used from tenants group by shard_id`
  await assertNewTenant(sql, id)
  const counts = new Map(used.map((row) => [row.shard_id, row.used]))
  const configured = new Set(topology.shards.map((shard) => shard.id))
  const fills = rows
    .filter((row) => configured.has(row.id))
    .map((row) => ({ ...row, tenants: counts.get(row.id) ?? 0 }))
  if (fills.length === 0)
    throw new SwitchyardError('shard_unknown', 'no shard is registered: run `switchyard migrate`')
  return choose(id, fills)
}

export async function listTenants(directory: Directory): Promise<TenantRow[]> {
  return directory.db.select().from(tenants).orderBy(asc(tenants.createdAt), asc(tenants.id))
}

export async function findTenant(directory: Directory, id: string): Promise<TenantRow> {
  const [row] = await directory.db
    .select()
    .from(tenants)
    .where(eq(tenants.id, parseTenantId(id)))
  if (!row) throw new SwitchyardError('tenant_unknown', `tenant ${id} does not exist`)
  return row
}

/** An override is a non-negative integer; null removes it (the config's default applies again). */
export const limitOverride = z.number().int().min(0).nullable().optional()

export const limitsPatchSchema = z
  .strictObject({
    max_appointments_per_day: limitOverride,
    max_customers: limitOverride,
    max_services: limitOverride,
    max_staff: limitOverride,
    api_rate_limit: limitOverride,
  })
  .refine((patch) => Object.values(patch).some((value) => value !== undefined), {
    message: 'name at least one limit',
  })

export type LimitsPatch = z.input<typeof limitsPatchSchema>

/** The limits a tenant runs under: the config's defaults with its own overrides on top. */
export function effectiveLimits(topology: Topology, limits: TenantLimits): Required<TenantLimits> {
  return { ...topology.tenantLimits, ...limits }
}

/**
 * Changes a tenant's limit overrides in the directory, in one statement (concurrent patches of other
 * limits are not lost), then invalidates the tenant's route: routers apply the new limits from its next
 * request (one that misses the invalidation, within its route cache's TTL). `routes` is the router's
 * own cache, or for a command line whatever tells the routers.
 */
export async function setTenantLimits(
  directory: Directory,
  topology: Topology,
  routes: Pick<RouteCache, 'invalidate'>,
  id: string,
  input: LimitsPatch,
): Promise<TenantRow & { effectiveLimits: Required<TenantLimits> }> {
  const tenant = parseTenantId(id)
  const parsed = limitsPatchSchema.safeParse(input)
  if (!parsed.success) throw new SwitchyardError('invalid_input', describeIssues(parsed.error.issues))
  const entries = Object.entries(parsed.data).filter(([, value]) => value !== undefined)
  const set = Object.fromEntries(entries.filter(([, value]) => value !== null))
  const remove = entries.filter(([, value]) => value === null).map(([name]) => name)
  const [row] = await directory.sql<TenantRow[]>`
    update tenants set limits = (limits || ${JSON.stringify(set)}::jsonb) - ${remove}::text[]
    where id = ${tenant}
    returning id, name, shard_id as "shardId", epoch, state, limits, created_at as "createdAt"`
  if (!row) throw new SwitchyardError('tenant_unknown', `tenant ${tenant} does not exist`)
  await routes.invalidate(row.id)
  return { ...row, effectiveLimits: effectiveLimits(topology, row.limits) }
}
