import { asc, eq } from 'drizzle-orm'
import { z } from 'zod'
import type { Topology } from '../config/topology.ts'
import { shardId } from '../config/topology.ts'
import { describeIssues, SwitchyardError } from '../errors.ts'
import { withAdmin } from '../shard/connection.ts'
import { claimOwnership, releaseOwnership } from '../shard/ownership.ts'
import type { Directory } from './connection.ts'
import { tenants } from './schema.ts'

export const tenantId = z.uuid({ message: 'must be a UUID' })

export const newTenantSchema = z.strictObject({
  id: tenantId,
  shard: shardId,
  name: z.string().trim().min(1).max(200).optional(),
})

export type NewTenant = z.input<typeof newTenantSchema>
export type TenantRow = typeof tenants.$inferSelect

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
 * transaction is open and removed again if that transaction does not commit.
 */
export async function addTenant(
  directory: Directory,
  topology: Topology,
  input: NewTenant,
): Promise<TenantRow> {
  const parsed = newTenantSchema.safeParse(input)
  if (!parsed.success) throw new SwitchyardError('invalid_input', describeIssues(parsed.error.issues))
  const { id, shard } = parsed.data
  const name = parsed.data.name ?? `tenant-${id.slice(0, 8)}`
  const primary = shardPrimary(topology, shard)
  let claimed = false
  try {
    return await directory.sql.begin(async (sql) => {
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
      const [existing] = await sql`select shard_id from tenants where id = ${id}`
      if (existing) {
        throw new SwitchyardError('tenant_exists', `tenant ${id} already exists (on ${existing.shard_id})`)
      }
      const [row] = await sql<TenantRow[]>`
        insert into tenants (id, name, shard_id) values (${id}, ${name}, ${shard})
        returning id, name, shard_id as "shardId", epoch, state, limits, created_at as "createdAt"`
      await withAdmin(primary, (shardSql) => claimOwnership(shardSql, id, row?.epoch ?? 1)).catch(
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
    if (claimed) await withAdmin(primary, (shardSql) => releaseOwnership(shardSql, id))
    throw error
  }
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
