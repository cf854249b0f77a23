import { fileURLToPath } from 'node:url'
import { sql as raw } from 'drizzle-orm'
import type { Topology } from '../config/topology.ts'
import { SwitchyardError } from '../errors.ts'
import { rootMessage, withAdmin } from '../shard/connection.ts'
import { parseLsn } from '../shard/lsn.ts'
import { migrateShard, type ShardMigration } from '../shard/migrate.ts'
import { applyMigrations, type MigrationSet } from '../shard/migrations.ts'
import { bumpCacheEpoch } from './cache-versions.ts'
import { ensureRouterCapability } from './capability.ts'
import { type Directory, withDirectory } from './connection.ts'
import { openRedis, redisReady } from './redis.ts'
import { shards } from './schema.ts'

const DIRECTORY_MIGRATIONS: MigrationSet = {
  folder: fileURLToPath(new URL('./migrations', import.meta.url)),
  table: 'switchyard_directory',
}

export async function migrateDirectory(url: string): Promise<number> {
  return withAdmin(url, (sql) => applyMigrations(sql, DIRECTORY_MIGRATIONS))
}

/**
 * Registers the config's shards in the directory. A new shard starts in the config's state; for a
 * shard already registered only its capacity follows the config: its state belongs to the directory
 * from then on (`shards drain` / `undrain`), so a `migrate` never undoes a drain.
 */
export async function syncShards(directory: Directory, topology: Topology): Promise<void> {
  for (const shard of topology.shards) {
    await directory.db
      .insert(shards)
      .values({ id: shard.id, capacity: shard.capacity, state: shard.state })
      .onConflictDoUpdate({
        target: shards.id,
        set: { capacity: shard.capacity, updatedAt: raw`now()` },
        setWhere: raw`${shards.capacity} is distinct from ${shard.capacity}`,
      })
  }
}

export async function recordShardVersion(
  directory: Directory,
  shardId: string,
  version: string,
): Promise<void> {
  await directory.sql`
    update shards set schema_version = ${version}, updated_at = now()
    where id = ${shardId} and schema_version is distinct from ${version}`
}

/** Directory first (shards must be registered), then every shard primary; names each shard that failed. */
export async function migrateAll(
  topology: Topology,
): Promise<{ directory: number; shards: ShardMigration[] }> {
  const directoryApplied = await migrateDirectory(topology.directory).catch((error: Error) => {
    throw new SwitchyardError('migrate_failed', `migrate failed on the directory: ${rootMessage(error)}`)
  })
  return withDirectory(topology, async (directory) => {
    await syncShards(directory, topology)
    const capability = await ensureRouterCapability(directory)
    const outcomes = await Promise.allSettled(
      topology.shards.map(async (shard) => {
        const result = await migrateShard(topology, shard.id, shard.primary, capability)
        await recordShardVersion(directory, shard.id, result.version)
        return result
      }),
    )
    const failed = outcomes.flatMap((outcome, i) =>
      outcome.status === 'rejected' ? [`${topology.shards[i]?.id}: ${rootMessage(outcome.reason)}`] : [],
    )
    // Even when a shard failed (part of its migrations may have run) or nothing was applied (a run before
    // this one may have applied and then failed to bump): a migrate is what an operator runs again.
    const forgotten = await forgetCachedReads(topology)
    if (failed.length) {
      throw new SwitchyardError('migrate_failed', `migrate failed on ${failed.join('; ')}`, { failed })
    }
    if (!forgotten) {
      throw new SwitchyardError(
        'cache_not_invalidated',
        'migrate applied, but Redis did not take the read cache epoch bump: run migrate again once Redis answers, or routers may serve reads cached before the migration',
      )
    }
    const shards = outcomes.map((outcome) => (outcome as PromiseFulfilledResult<ShardMigration>).value)
    return { directory: directoryApplied, shards }
  })
}

/**
 * A migration may have changed any tenant's rows or tables outside the routers: no cached read may
 * outlive it, routers read the shards' catalogs again, and answers read on a replica are kept only once
 * it replayed the change (each shard primary's LSN now). True when done (or no Redis is configured, or
 * the cache is off).
 */
export async function forgetCachedReads(topology: Topology): Promise<boolean> {
  // With the cache off (on every router at once, docs/CACHE.md) nothing is kept to forget.
  if (!topology.redis || !topology.router.cache.enabled) return true
  const floors = new Map<string, bigint | null>()
  await Promise.all(
    topology.shards.map(async (shard) => {
      const lsn = await withAdmin(shard.primary, async (sql) => {
        const [row] = await sql<{ lsn: string }[]>`select pg_current_wal_insert_lsn()::text as lsn`
        return row ? parseLsn(row.lsn) : null
      }).catch(() => null)
      floors.set(shard.id, lsn)
    }),
  )
  const redis = openRedis(topology.redis)
  redis.on('error', () => {})
  try {
    return (await redisReady(redis, 5_000)) && (await bumpCacheEpoch(redis, floors))
  } finally {
    redis.disconnect()
  }
}
