import type { Command } from 'commander'
import {
  clusterDown,
  clusterReset,
  clusterStatus,
  clusterUp,
  defaultHome,
  maskPassword,
  type NodeStatus,
} from '../cluster/launcher.ts'
import { action, json, printTable, say, shows } from './output.ts'

/** Where the local cluster lives and how it reports: also `start` and `loadtest local`. */
export const launch = () => ({ home: defaultHome(), report: say })

export function register(program: Command): void {
  const cluster = program
    .command('cluster')
    .description('the local topology: directory, shards (primary + replica), Redis')
  cluster
    .command('up')
    .description('start every node that is not running (idempotent)')
    .action(
      action(async (topology) => {
        await clusterUp(topology, launch())
        printStatus((await clusterStatus(topology)).nodes)
      }),
    )
  cluster
    .command('down')
    .description('stop every node this cluster started, and nothing else')
    .action(action((topology) => clusterDown(topology, launch())))
  cluster
    .command('reset')
    .description('stop, delete all cluster data, start fresh')
    .action(action((topology) => clusterReset(topology, launch())))
  cluster
    .command('status')
    .description('what runs where, and replica lag')
    .addOption(json)
    .action(
      shows(
        (topology) => clusterStatus(topology),
        (status) => printStatus(status.nodes),
      ),
    )
}

function printStatus(nodes: NodeStatus[]) {
  const rows = nodes.map((node) => ({
    ...node,
    up: node.up ? 'up' : 'DOWN',
    url: maskPassword(node.url),
    lagBytes: node.lagBytes ?? '',
  }))
  printTable(rows, ['name', 'role', 'shard', 'up', 'lagBytes', 'url'])
}
