import type { Topology } from '../config/topology.ts'
import type { Logger } from '../log.ts'
import { withAdmin } from './connection.ts'
import { ensurePartitions } from './partitions.ts'

export interface PartitionKeeper {
  stop(): Promise<void>
}

/**
 * `partitions ensure` run by every router: at start and every `partitionKeeperIntervalMs` (an hour by
 * default), on every shard, so no shard ever lacks next month's partition even when nobody set up cron.
 * Routers run it at once without harm (an advisory lock per table); a shard that does not answer is
 * logged and tried again next time. Never drops anything: retention is the CLI's, asked for explicitly.
 */
export function startPartitionKeeper(
  topology: Topology,
  logger: Logger,
  /** After partitions were made: routers' read caches start again (true once Redis took it). */
  forgetCachedReads: () => Promise<boolean> = async () => true,
): PartitionKeeper {
  const { partitionKeeperIntervalMs: intervalMs, partitionMonthsAhead: monthsAhead } = topology.router
  if (intervalMs <= 0) return { stop: async () => {} }
  let running: Promise<void> | undefined
  let stopped = false
  // A change whose cache bump did not happen yet: tried again every tick until it does.
  let forgetOwed = false
  const keep = async () => {
    for (const shard of topology.shards) {
      if (stopped) return
      try {
        const outcomes = await withAdmin(shard.primary, (sql) =>
          ensurePartitions(sql, topology.tenantSchema.schemas, { monthsAhead, retainMonths: null }),
        )
        for (const outcome of outcomes) {
          if (outcome.created.length) forgetOwed = true
          if (outcome.created.length)
            logger.info(
              { shard: shard.id, table: outcome.table, created: outcome.created },
              'created partitions',
            )
          if (outcome.skipped.length)
            logger.warn(
              { shard: shard.id, table: outcome.table, skipped: outcome.skipped },
              'partitions not made',
            )
        }
      } catch (error) {
        logger.warn({ shard: shard.id, error: (error as Error).message }, 'keeping partitions ahead failed')
      }
    }
    if (forgetOwed) {
      forgetOwed = !(await forgetCachedReads())
      if (forgetOwed) logger.warn('partitions were made, but the read cache epoch could not be bumped yet')
    }
  }
  const tick = () => {
    running ??= keep().finally(() => {
      running = undefined
    })
  }
  const first = setTimeout(tick, 1_000)
  const timer = setInterval(tick, intervalMs)
  first.unref()
  timer.unref()
  return {
    async stop() {
      stopped = true
      clearTimeout(first)
      clearInterval(timer)
      await running
    },
  }
}
