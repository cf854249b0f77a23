import type { Command } from 'commander'
import { pgbadgerReport } from '../cluster/logs.ts'
import type { Topology } from '../config/topology.ts'
import { launch } from './cluster.ts'
import { formatBytes, json, say, shows } from './output.ts'

export function register(program: Command): void {
  const logs = program.command('logs').description("the local nodes' server logs")
  logs
    .command('report')
    .description(
      "pgBadger's HTML report of a node's log: statements over 100 ms, lock waits, temporary files (needs pgbadger)",
    )
    .option('--node <name>', 'a node as `cluster status` names it (default: the first shard primary)')
    .option('--out <file>', 'where the HTML goes (default: pgbadger-<node>.html here)')
    .addOption(json)
    .action(
      shows(report, (made) =>
        say(`${made.out}: pgBadger report of ${made.node} (${made.log}), ${formatBytes(made.bytes)}`),
      ),
    )
}

function report(topology: Topology, flags: { node?: string; out?: string }) {
  return pgbadgerReport(topology, launch().home, flags)
}
