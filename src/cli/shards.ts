import type { Command } from 'commander'
import { clusterStatus } from '../cluster/launcher.ts'
import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { drainShard, undrainShard } from '../placement/plans.ts'
import { type ReplicaLags, type ShardStats, shardStats } from '../placement/stats.ts'
import { formatBytes, json, printTable, say, shows } from './output.ts'
import { printPlan } from './rebalance.ts'

export function register(program: Command): void {
  const shards = program.command('shards').description('shards: fill, size, replica lag; drain and undrain')
  shards
    .command('list')
    .description(
      'per shard: state, tenants/capacity, rows (estimated) and bytes of the tenant tables, replica lag',
    )
    .addOption(json)
    .action(
      shows(
        (topology) =>
          withDirectory(topology, (directory) => shardStats(directory, topology, statusLags(topology))),
        printShards,
      ),
    )
  shards
    .command('drain <shard>')
    .description(
      'mark a shard draining and store a plan that moves all its tenants away (or, without room, change nothing)',
    )
    .addOption(json)
    .action(
      shows(
        (topology, id: string) => withDirectory(topology, (directory) => drainShard(directory, topology, id)),
        (plan, id) => {
          say(`${id} is draining: no tenant is placed on it any more`)
          printPlan(plan)
        },
      ),
    )
  shards
    .command('undrain <shard>')
    .description('make a draining shard active again; its drain plans that have not started are cancelled')
    .addOption(json)
    .action(
      shows(
        (topology, id: string) => withDirectory(topology, (directory) => undrainShard(directory, id)),
        (result) => {
          say(`${result.shard.id} is active (${result.shard.tenants}/${result.shard.capacity} tenants)`)
          for (const plan of result.cancelledPlans) say(`drain plan ${plan} cancelled`)
        },
      ),
    )
}

function printShards(stats: ShardStats[]) {
  const rows = stats.map((s) => ({
    ...s,
    tenants: `${s.tenants}/${s.capacity}`,
    rows: s.rows ?? '?',
    bytes: s.bytes === null ? '?' : formatBytes(s.bytes),
    replicaLag: s.replicas.map((r) => `${r.name} ${r.lagBytes ?? 'down'}`).join(', '),
    error: s.error ?? '',
  }))
  printTable(rows, ['id', 'state', 'tenants', 'rows', 'bytes', 'replicaLag', 'error'])
}

/** `cluster status`'s replica lag: every replica's replay position against its primary's. */
const statusLags =
  (topology: Topology): ReplicaLags =>
  async () =>
    (await clusterStatus(topology)).nodes.flatMap((node) =>
      node.role === 'replica' && node.shard
        ? [{ name: node.name, shard: node.shard, lagBytes: node.lagBytes ?? null }]
        : [],
    )
