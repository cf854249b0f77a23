import type { Command } from 'commander'
import { z } from 'zod'
import { clusterStatus } from '../cluster/launcher.ts'
import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { SwitchyardError } from '../errors.ts'
import { drainShard, undrainShard } from '../placement/plans.ts'
import { type ReplicaLags, type ShardStats, shardStats } from '../placement/stats.ts'
import { readShardStatements, type ShardStatements } from '../shard/stat-statements.ts'
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
    .command('top')
    .description(
      "pg_stat_statements of every shard primary and replica: each node's statements with the most execution time",
    )
    .option('--limit <n>', 'statements per node', '10')
    .addOption(json)
    .action(
      shows(
        (topology, options: { limit: string }) => readShardStatements(topology, nodeLimit(options.limit)),
        (read) => printShardStatements(read),
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

/** `shards top --limit`: statements per node. */
function nodeLimit(value: string): number {
  const parsed = z.coerce.number().int().min(1).max(1000).safeParse(value)
  if (!parsed.success)
    throw new SwitchyardError(
      'invalid_input',
      `--limit: ${JSON.stringify(value)} is not a whole number from 1 to 1000`,
    )
  return parsed.data
}

function printShardStatements(read: ShardStatements) {
  const rows = read.statements.map((row) => ({
    ...row,
    query: row.query.length > 60 ? `${row.query.slice(0, 59)}…` : row.query,
  }))
  printTable(rows, ['node', 'role', 'user', 'calls', 'totalMs', 'meanMs', 'maxMs', 'rows', 'query'])
  for (const node of read.nodes) if (node.error) say(`${node.name}: not read (${node.error})`)
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
