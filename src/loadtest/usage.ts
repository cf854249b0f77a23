import { readdirSync, readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import path from 'node:path'
import type { Topology } from '../config/topology.ts'
import { primaryName, replicaName } from '../shard/nodes.ts'

/**
 * Where a capacity step's time went: CPU of the router (from its /metrics), of each shard node and of
 * the machine (from /proc), of the load generator (this process), the router's pool waits and the
 * replicas' lag. Read as snapshots before and after a step and differenced; lag is sampled meanwhile.
 */

/** Linux's clock ticks per second for /proc's CPU times (USER_HZ: 100 on every mainstream kernel). */
const TICKS_PER_SECOND = 100

export interface UsageSnapshot {
  at: number
  routerCpuSeconds: number | null
  poolWaits: { count: number; sumSeconds: number; buckets: Map<number, number> }
  /** CPU seconds per shard node that runs on this machine (postmaster, its children, the reaped ones). */
  nodeCpuSeconds: Map<string, number>
  machine: { busy: number; total: number } | null
  generatorCpuSeconds: number
}

export interface NodeUsage {
  node: string
  role: 'primary' | 'replica'
  /** Share of one core over the step. */
  cpu: number
}

export interface StepUsage {
  seconds: number
  /** Shares of one core over the step; null when it could not be read. */
  routerCpu: number | null
  generatorCpu: number
  /** The load generator's CPU per request sent, ms: it must stay far below the interval between requests. */
  generatorCpuMsPerRequest: number
  routerCpuMsPerRequest: number | null
  /** The machine's busy share of all its cores (1 = saturated), from /proc/stat. */
  machineBusy: number | null
  /**
   * CPU (share of one core) of everything else on the machine: Redis, the directory, the mover's database
   * work, and programs that are not the project's at all. A shared machine shows up here.
   */
  otherCpu: number | null
  nodes: NodeUsage[]
  poolWaits: { count: number; meanMs: number; p99Ms: number | null }
  /** The most WAL bytes a replica was behind, over the step's samples (null: none reported). */
  replicaLagMaxBytes: number | null
}

/** The local nodes of `topology` by port: only nodes on this machine have CPU figures. */
function nodesByPort(topology: Topology): Map<number, { node: string; role: 'primary' | 'replica' }> {
  const byPort = new Map<number, { node: string; role: 'primary' | 'replica' }>()
  for (const shard of topology.shards) {
    const urls = [
      { url: shard.primary, node: primaryName(shard.id), role: 'primary' as const },
      ...shard.replicas.map((url, i) => ({ url, node: replicaName(shard.id, i), role: 'replica' as const })),
    ]
    for (const { url, node, role } of urls) {
      const parsed = new URL(url)
      if (['localhost', '127.0.0.1', '::1', '[::1]', ''].includes(parsed.hostname))
        byPort.set(Number(parsed.port || 5432), { node, role })
    }
  }
  return byPort
}

interface ProcStat {
  pid: number
  ppid: number
  /** Own CPU ticks, and those of its reaped children. */
  own: number
  reaped: number
}

/** /proc/<pid>/stat: the fields after the command (which may hold spaces and parentheses). */
function procStat(pid: number): ProcStat | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    // After ")": state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17), so index = field - 3.
    return {
      pid,
      ppid: Number(fields[1]),
      own: Number(fields[11]) + Number(fields[12]),
      reaped: Number(fields[13]) + Number(fields[14]),
    }
  } catch {
    return undefined
  }
}

/** The port a postmaster listens on: line 4 of postmaster.pid in the data folder its command line names. */
function postmasterPort(pid: number): number | undefined {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    const at = args.indexOf('-D')
    const data = at >= 0 ? args[at + 1] : undefined
    if (!data) return undefined
    const lines = readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')
    return Number(lines[3])
  } catch {
    return undefined
  }
}

function readNodeCpu(byPort: Map<number, { node: string }>): Map<string, number> {
  const stats = readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map((name) => procStat(Number(name)))
    .filter((stat): stat is ProcStat => stat !== undefined)
  const children = new Map<number, ProcStat[]>()
  for (const stat of stats) children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), stat])
  const cpu = new Map<string, number>()
  for (const stat of stats) {
    if (!children.has(stat.pid)) continue
    const port = postmasterPort(stat.pid)
    const node = port === undefined ? undefined : byPort.get(port)
    if (!node) continue
    const ticks =
      stat.own + stat.reaped + (children.get(stat.pid) ?? []).reduce((sum, child) => sum + child.own, 0)
    cpu.set(node.node, ticks / TICKS_PER_SECOND)
  }
  return cpu
}

function readMachine(): UsageSnapshot['machine'] {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? ''
    const ticks = line.trim().split(/\s+/).slice(1).map(Number)
    const total = ticks.reduce((sum, n) => sum + n, 0)
    // idle and iowait
    const idle = (ticks[3] ?? 0) + (ticks[4] ?? 0)
    return { busy: total - idle, total }
  } catch {
    return null
  }
}

/** A sample's value by metric name, summed over its series (labels filtered by `where`). */
function metricSum(
  text: string,
  name: string,
  where: (labels: string) => boolean = () => true,
): number | null {
  let sum: number | null = null
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const match = /^([a-z_]+)(\{[^}]*\})? ([-+0-9.eE]+|NaN)$/.exec(line)
    if (!match || match[1] !== name || !where(match[2] ?? '')) continue
    sum = (sum ?? 0) + Number(match[3])
  }
  return sum
}

function poolWaitsOf(text: string): UsageSnapshot['poolWaits'] {
  const buckets = new Map<number, number>()
  for (const match of text.matchAll(/^switchyard_pool_wait_seconds_bucket\{([^}]*)\} (\S+)$/gm)) {
    const le = /le="([^"]+)"/.exec(match[1] ?? '')?.[1]
    if (!le) continue
    const bound = le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le)
    buckets.set(bound, (buckets.get(bound) ?? 0) + Number(match[2]))
  }
  return {
    count: metricSum(text, 'switchyard_pool_wait_seconds_count') ?? 0,
    sumSeconds: metricSum(text, 'switchyard_pool_wait_seconds_sum') ?? 0,
    buckets,
  }
}

export const scrapeRouter = (routerUrl: string): Promise<string> =>
  fetch(new URL('/metrics', routerUrl)).then(
    (response) => (response.ok ? response.text() : ''),
    () => '',
  )

/** Replica lag as the router last polled it: the most any replica is behind, bytes; null if none reported. */
export const replicaLagOf = (metrics: string) => {
  let most: number | null = null
  for (const match of metrics.matchAll(/^switchyard_replica_lag_bytes\{[^}]*\} (\S+)$/gm))
    most = Math.max(most ?? 0, Number(match[1]))
  return most
}

/** A reader of snapshots for `topology`'s local nodes and the router at `routerUrl`. */
export function usageReader(topology: Topology, routerUrl: string) {
  const byPort = nodesByPort(topology)
  return async (): Promise<UsageSnapshot> => {
    const metrics = await scrapeRouter(routerUrl)
    const cpu = process.cpuUsage()
    return {
      at: performance.now(),
      routerCpuSeconds: metricSum(metrics, 'switchyard_process_process_cpu_seconds_total'),
      poolWaits: poolWaitsOf(metrics),
      nodeCpuSeconds: readNodeCpu(byPort),
      machine: readMachine(),
      generatorCpuSeconds: (cpu.user + cpu.system) / 1e6,
    }
  }
}

/** The step between two snapshots, with the `requests` answered meanwhile and the lag samples taken. */
export function stepUsage(
  topology: Topology,
  before: UsageSnapshot,
  after: UsageSnapshot,
  requests: number,
  lagSamples: readonly (number | null)[],
): StepUsage {
  const seconds = (after.at - before.at) / 1000
  const share = (cpuSeconds: number) => round(cpuSeconds / seconds, 3)
  const roles = nodesByPort(topology)
  const routerCpuSeconds =
    after.routerCpuSeconds === null || before.routerCpuSeconds === null
      ? null
      : after.routerCpuSeconds - before.routerCpuSeconds
  const generatorCpuSeconds = after.generatorCpuSeconds - before.generatorCpuSeconds
  const waits = after.poolWaits.count - before.poolWaits.count
  const lags = lagSamples.filter((lag): lag is number => lag !== null)
  const machineBusy =
    before.machine && after.machine && after.machine.total > before.machine.total
      ? round((after.machine.busy - before.machine.busy) / (after.machine.total - before.machine.total), 3)
      : null
  const nodes = [...roles.values()]
    .filter(({ node }) => after.nodeCpuSeconds.has(node) && before.nodeCpuSeconds.has(node))
    .map(({ node, role }) => ({
      node,
      role,
      cpu: share((after.nodeCpuSeconds.get(node) ?? 0) - (before.nodeCpuSeconds.get(node) ?? 0)),
    }))
  const ours =
    (routerCpuSeconds ?? 0) / seconds +
    generatorCpuSeconds / seconds +
    nodes.reduce((sum, node) => sum + node.cpu, 0)
  return {
    seconds: round(seconds, 1),
    routerCpu: routerCpuSeconds === null ? null : share(routerCpuSeconds),
    generatorCpu: share(generatorCpuSeconds),
    generatorCpuMsPerRequest: requests ? round((generatorCpuSeconds * 1000) / requests, 3) : 0,
    routerCpuMsPerRequest:
      routerCpuSeconds === null || !requests ? null : round((routerCpuSeconds * 1000) / requests, 3),
    machineBusy,
    otherCpu: machineBusy === null ? null : round(Math.max(0, machineBusy * cpus() - ours), 3),
    nodes,
    poolWaits: {
      count: waits,
      meanMs: waits
        ? round(((after.poolWaits.sumSeconds - before.poolWaits.sumSeconds) * 1000) / waits, 3)
        : 0,
      p99Ms: bucketP99(before.poolWaits.buckets, after.poolWaits.buckets, waits),
    },
    replicaLagMaxBytes: lags.length ? Math.max(...lags) : null,
  }
}

const cpus = () => availableParallelism()

/** The upper bound of the bucket the 99th percentile wait falls in (a histogram's resolution), ms. */
function bucketP99(before: Map<number, number>, after: Map<number, number>, count: number): number | null {
  if (!count) return null
  for (const bound of [...after.keys()].sort((a, b) => a - b)) {
    const within = (after.get(bound) ?? 0) - (before.get(bound) ?? 0)
    if (within >= 0.99 * count) return Number.isFinite(bound) ? round(bound * 1000, 3) : null
  }
  return null
}

const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits
