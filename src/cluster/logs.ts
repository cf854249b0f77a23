import { existsSync } from 'node:fs'
import { mkdir, stat } from 'node:fs/promises'
import path from 'node:path'
import type { Topology } from '../config/topology.ts'
import { SwitchyardError } from '../errors.ts'
import { primaryName } from '../shard/nodes.ts'
import { planCluster } from './nodes.ts'
import { LOG_LINE_PREFIX, nodeLog } from './postgres-node.ts'
import { run } from './process.ts'

export interface LogReport {
  node: string
  log: string
  out: string
  bytes: number
}

/**
 * pgBadger's HTML report of one local node's server log (by default the first shard's primary): the
 * statements over the seed's 100 ms, lock waits, temporary files, checkpoints. The nodes log what it
 * needs (src/cluster/postgres-node.ts); pgBadger is a Debian package, asked for by name when missing.
 */
export async function pgbadgerReport(
  topology: Topology,
  home: string,
  options: { node?: string | undefined; out?: string | undefined },
): Promise<LogReport> {
  const nodes = planCluster(topology).postgres
  const name = options.node ?? primaryName(topology.shards[0]?.id ?? '')
  const node = nodes.find((candidate) => candidate.name === name)
  if (!node)
    throw new SwitchyardError(
      'invalid_input',
      `--node: no node named ${JSON.stringify(name)} (the nodes: ${nodes.map((n) => n.name).join(', ')})`,
    )
  const log = nodeLog(home, node)
  if (!existsSync(log))
    throw new SwitchyardError(
      'log_missing',
      `${log} does not exist: the local cluster's logs are under SWITCHYARD_HOME (${home}); is it this one?`,
    )
  const pgbadger = onPath('pgbadger')
  if (!pgbadger)
    throw new SwitchyardError(
      'pgbadger_missing',
      'pgbadger is not installed (Debian: apt-get install -y pgbadger)',
    )
  const out = path.resolve(options.out ?? `pgbadger-${node.name}.html`)
  await mkdir(path.dirname(out), { recursive: true })
  const result = await run(
    pgbadger,
    ['--format', 'stderr', '--prefix', LOG_LINE_PREFIX, '--quiet', '--outfile', out, log],
    { cwd: path.dirname(out) },
  )
  if (result.code !== 0 || !existsSync(out))
    throw new SwitchyardError(
      'pgbadger_failed',
      `pgbadger failed on ${log}: ${(result.stderr || result.stdout).trim().split('\n').slice(-3).join(' | ')}`,
    )
  return { node: node.name, log, out, bytes: (await stat(out)).size }
}

/** An executable of that name on PATH, or undefined. */
function onPath(command: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const candidate = path.join(dir, command)
    if (dir && existsSync(candidate)) return candidate
  }
  return undefined
}
