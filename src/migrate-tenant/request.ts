import type { Topology } from '../config/topology.ts'
import type { Directory } from '../directory/connection.ts'
import { findTenant, parseTenantId } from '../directory/tenants.ts'
import { SwitchyardError } from '../errors.ts'
import type { Sql } from '../shard/connection.ts'
import { readOwnership } from '../shard/ownership.ts'
import { partitionLayout, partitionMismatch } from '../shard/partitions.ts'
import { movedTables, type TenantTable, tenantTables } from '../shard/tables.ts'
import { countTenantRows } from './rows.ts'

/** A move request checked against the shards, before anything is recorded or created. */
export interface CheckedMove {
  tenant: string
  source: string
  target: string
}

/**
 * The checks that read the shards (the directory's own are in `recordMove`, under its lock): both
 * shards exist, the tenant is not already on the target, the source decodes logically, both run the
 * same schema version and have the same tenant tables, every tenant table carries `tenant_id` in its
 * replica identity (a row filter needs it, or UPDATE/DELETE on the source fail for every tenant), and
 * the target does not own the tenant. Reads only: a refused move leaves nothing behind.
 */
export async function checkMoveRequest(
  topology: Topology,
  directory: Directory,
  shards: (id: string) => Sql,
  request: { tenant: unknown; target: unknown },
): Promise<CheckedMove> {
  const tenant = parseTenantId(request.tenant)
  if (typeof request.target !== 'string' || !topology.shards.some((s) => s.id === request.target))
    throw new SwitchyardError(
      'shard_unknown',
      `shard ${JSON.stringify(request.target)} is not in the topology`,
    )
  const target = request.target
  const row = await findTenant(directory, tenant)
  if (row.shardId === target)
    throw new SwitchyardError('same_shard', `tenant ${tenant} is already on ${target}: nothing to move`)
  const source = shards(row.shardId)
  const into = shards(target)

  const [settings] = await source<{ wal_level: string }[]>`select current_setting('wal_level') as wal_level`
  if (settings?.wal_level !== 'logical')
    throw new SwitchyardError(
      'not_logical',
      `${row.shardId} runs wal_level=${settings?.wal_level}: moves need wal_level=logical`,
    )
  const [from, to] = await Promise.all([
    schemaOf(source, topology.tenantSchema.schemas),
    schemaOf(into, topology.tenantSchema.schemas),
  ])
  if (from.version !== to.version || from.names !== to.names)
    throw new SwitchyardError(
      'schema_mismatch',
      `${row.shardId} and ${target} differ: schema ${from.version} vs ${to.version}${from.names !== to.names ? ', and their tenant tables differ' : ''}; run \`switchyard migrate\``,
    )
  const { tables } = from
  for (const table of tables) {
    // Partitioned tables move through their root (publish_via_partition_root); a partition that is
    // itself partitioned would need its own PARTITION BY on the target: not built.
    if (table.subpartitioned)
      throw new SwitchyardError(
        'partitioned_table',
        `${table.name} on ${row.shardId} is a partition that is partitioned again: moves support one level of partitions`,
      )
    if (!table.identity.includes('tenant_id'))
      throw new SwitchyardError(
        'replica_identity',
        `${table.name} on ${row.shardId} lacks tenant_id in its replica identity (${table.identity.join(', ') || 'none'})`,
      )
  }
  await samePartitioning(source, into, topology.tenantSchema.schemas, { from: row.shardId, to: target })
  const owned = await readOwnership(into, tenant)
  if (owned && (owned.state === 'owner' || owned.state === 'frozen'))
    throw new SwitchyardError(
      'target_owns_tenant',
      `${target} says it owns tenant ${tenant} (${owned.state}, epoch ${owned.epoch}) but the directory places it on ${row.shardId}: run \`switchyard doctor\``,
    )
  await noStrayRows(directory, into, { tenant, target, claimed: owned !== undefined }, movedTables(tables))
  return { tenant, source: row.shardId, target }
}

/**
 * Partitioned tables partitioned alike on both shards (the same key), and every partition of the source
 * either on the target with the same bound or makeable there (its name free): the move's preflight
 * creates those. An overlap is found only then, and stops the move with the same code.
 */
async function samePartitioning(source: Sql, into: Sql, schemas: string[], on: { from: string; to: string }) {
  const [mine, theirs] = await Promise.all([partitionLayout(source, schemas), partitionLayout(into, schemas)])
  for (const table of mine) {
    const other = theirs.find((one) => one.name === table.name)
    if (!other || other.key !== table.key)
      throw new SwitchyardError(
        'partition_mismatch',
        `${table.name} is partitioned by ${table.key} on ${on.from} and ${other ? `by ${other.key}` : 'not at all'} on ${on.to}`,
      )
    for (const partition of table.partitions) {
      if (other.partitions.some((one) => one.bound === partition.bound)) continue
      const taken = other.partitions.find((one) => one.name === partition.name)
      if (taken) throw partitionMismatch(table.name, partition, `${on.to} has that name for ${taken.bound}`)
    }
  }
  const unpartitioned = theirs.find((table) => !mine.some((one) => one.name === table.name))
  if (unpartitioned)
    throw new SwitchyardError(
      'partition_mismatch',
      `${unpartitioned.name} is partitioned on ${on.to} but not on ${on.from}`,
    )
}

/** A shard's schema version and tenant tables (`names`: the tables' names, to compare two shards). */
async function schemaOf(sql: Sql, schemas: string[]) {
  const [row] = await sql<{ version: string | null }[]>`select version from switchyard.schema_version`.catch(
    () => [{ version: null }],
  )
  const tables = await tenantTables(sql, schemas)
  // Partitions may differ (the target gets the source's before the copy): the tables that move may not.
  const names = movedTables(tables)
    .map((t) => t.name)
    .join(',')
  return { version: row?.version ?? 'none', tables, names }
}

/**
 * Rows of the tenant already on the target are removed by the move only when a move left them (an
 * abort that crashed, a copy not yet cleaned up after the tenant moved away): the target has an
 * ownership row for it, or an earlier move of the tenant went to or from the target. Any other rows
 * were put there by something else, and the move does not delete what it did not write.
 */
async function noStrayRows(
  directory: Directory,
  into: Sql,
  on: { tenant: string; target: string; claimed: boolean },
  tables: TenantTable[],
): Promise<void> {
  if (on.claimed) return
  const rows = await countTenantRows(into, on.tenant, tables)
  if (rows === 0) return
  const [earlier] = await directory.sql<{ n: number }[]>`
    select count(*)::int as n from moves
    where tenant_id = ${on.tenant} and ${on.target} in (source_shard, target_shard)`
  if ((earlier?.n ?? 0) > 0) return
  throw new SwitchyardError(
    'target_has_rows',
    `${on.target} already holds ${rows} rows of tenant ${on.tenant}, and no move of the tenant ever went to or from it: they are not a move's leftovers; look at them and delete them before moving the tenant there`,
  )
}
