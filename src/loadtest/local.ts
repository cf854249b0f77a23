import { clusterUp, type LaunchOptions } from '../cluster/launcher.ts'
import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { migrateAll } from '../directory/migrate.ts'
import { withRedis } from '../directory/redis.ts'
import type { StepProgress } from './progress.ts'
import type { RunDeps } from './run.ts'
import { seedLoadtest } from './seed.ts'

/** What `loadtest local` needs to know before its run: the tenants to seed. */
export interface LocalSeed {
  tenants: number
  scale: number
  prefix: string
}

/**
 * `npm run loadtest`: the local topology up (nodes already running are reused), migrated, the
 * loadtest tenants seeded (or reused), then `run` (the load test, or with --capacity the capacity
 * search) with the directory and Redis open.
 */
export async function loadtestLocal<T>(
  topology: Topology,
  options: LocalSeed,
  io: LaunchOptions & { report: (line: string) => void; onProgress: (progress: StepProgress) => void },
  run: (deps: RunDeps) => Promise<T>,
): Promise<T> {
  await clusterUp(topology, io)
  const migrated = await migrateAll(topology)
  io.report(
    `migrated: directory +${migrated.directory}, ${migrated.shards.map((s) => `${s.shard} +${s.applied}`).join(', ')}`,
  )
  return withDirectory(topology, async (directory) => {
    const seeded = await seedLoadtest(
      directory,
      topology,
      { tenants: options.tenants, scale: options.scale, prefix: options.prefix },
      io.onProgress,
    )
    io.report(
      `seeded: ${seeded.tenants} tenants (${seeded.added} added, ${seeded.filled} filled, ${seeded.rows.toLocaleString('en-US')} rows) in ${seeded.seconds.toFixed(1)} s`,
    )
    return withRedis(topology.redis, (redis) =>
      run({ topology, directory, redis, onProgress: io.onProgress }),
    )
  })
}
