import { clusterUp, type LaunchOptions } from '../cluster/launcher.ts'
import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { migrateAll } from '../directory/migrate.ts'
import { withRedis } from '../directory/redis.ts'
import type { LocalOptions } from './options.ts'
import type { StepProgress } from './progress.ts'
import type { LoadtestReport } from './report.ts'
import { runLoadtest } from './run.ts'
import { seedLoadtest } from './seed.ts'

/**
 * `npm run loadtest`: the local topology up (nodes already running are reused), migrated, the
 * loadtest tenants seeded (or reused), then the run with its own router, as `npm start` boots it.
 */
export async function loadtestLocal(
  topology: Topology,
  options: LocalOptions,
  io: LaunchOptions & { report: (line: string) => void; onProgress: (progress: StepProgress) => void },
): Promise<LoadtestReport> {
  await clusterUp(topology, io)
  const migrated = await migrateAll(topology)
  io.report(
    `migrated: directory +${migrated.directory}, ${migrated.shards.map((s) => `${s.shard} +${s.applied}`).join(', ')}`,
  )
  const { scale, ...run } = options
  return withDirectory(topology, async (directory) => {
    const seeded = await seedLoadtest(
      directory,
      topology,
      { tenants: run.tenants, scale, prefix: run.prefix },
      io.onProgress,
    )
    io.report(
      `seeded: ${seeded.tenants} tenants (${seeded.added} added, ${seeded.filled} filled, ${seeded.rows.toLocaleString('en-US')} rows) in ${seeded.seconds.toFixed(1)} s`,
    )
    return withRedis(topology.redis, (redis) =>
      runLoadtest({ topology, directory, redis, onProgress: io.onProgress }, run),
    )
  })
}
