/**
 * CPU and system calls of the processes under test, from Linux /proc: a server may be this process (the
 * passthrough), a child and its children (the router's workers), or a daemon's process tree (pgpool-II's
 * children). Elsewhere than Linux every figure is undefined.
 */
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'

export interface Usage {
  /** User + system CPU, µs. */
  cpuUs: number
  /** read()/write()-family system calls (syscr + syscw of /proc/<pid>/io). */
  syscalls: number | undefined
}

/** A way to read a server's usage now; the difference of two readings is a run's. */
export type UsageProbe = () => Usage | undefined

const TICK_US = 1_000_000 / 100

interface Stat {
  ppid: number
  /** utime + stime of the process, and cutime + cstime of its reaped children, in µs. */
  own: number
  reaped: number
}

function stat(pid: number): (Stat & { comm: string }) | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    return {
      comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')),
      ppid: Number(fields[1]),
      own: (Number(fields[11]) + Number(fields[12])) * TICK_US,
      reaped: (Number(fields[13]) + Number(fields[14])) * TICK_US,
    }
  } catch {
    return undefined
  }
}

function syscalls(pid: number | 'self'): number | undefined {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8')
    return Number(/syscr: (\d+)/.exec(io)?.[1]) + Number(/syscw: (\d+)/.exec(io)?.[1])
  } catch {
    return undefined
  }
}

/** This process (its own CPU only: the load generators are children, and alive). */
export const selfUsage: UsageProbe = () => {
  const cpu = process.cpuUsage()
  return { cpuUs: cpu.user + cpu.system, syscalls: syscalls('self') }
}

/** A process and every process below it (workers, pool children), reaped ones included. */
export function treeUsage(root: number): UsageProbe {
  return treesUsage([root])
}

/** Processes and every process below them, reaped ones included. */
function treesUsage(roots: readonly number[]): UsageProbe {
  return () => {
    const stats = new Map<number, Stat>()
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue
      const found = stat(Number(entry))
      if (found) stats.set(Number(entry), found)
    }
    if (roots.some((root) => !stats.has(root))) return undefined
    const inTree = (pid: number) => {
      for (let at: number | undefined = pid, hops = 0; at && hops < 16; hops++) {
        if (roots.includes(at)) return true
        at = stats.get(at)?.ppid
      }
      return false
    }
    let cpuUs = 0
    let calls: number | undefined = 0
    for (const [pid, found] of stats) {
      if (!inTree(pid)) continue
      cpuUs += found.own + found.reaped
      const n = syscalls(pid)
      calls = n === undefined || calls === undefined ? undefined : calls + n
    }
    return { cpuUs, syscalls: calls }
  }
}

/**
 * Every process with one of these names (`postgres`, `redis-server`), with the children they reaped
 * (PostgreSQL's backends of closed connections): what the shards and Redis spent, whoever asked.
 */
export function namedUsage(names: readonly string[]): UsageProbe {
  return () => {
    let cpuUs = 0
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue
      const found = stat(Number(entry))
      if (found && names.includes(found.comm)) cpuUs += found.own + found.reaped
    }
    return { cpuUs, syscalls: undefined }
  }
}

/**
 * The PostgreSQL nodes and Redis that `cluster up` started in `home` (found by their pid files), with the
 * processes below them: what this topology's shards and Redis spent, and not another cluster's on the box.
 */
export function clusterUsage(home: string): UsageProbe {
  const nodes = path.join(home, 'nodes')
  const pidFiles = [
    ...readdirSync(nodes).map((node) => path.join(nodes, node, 'data', 'postmaster.pid')),
    path.join(nodes, 'redis', 'redis.pid'),
  ]
  const pids = pidFiles.flatMap((file) => {
    try {
      // postmaster.pid's first line, redis.pid's only one.
      return [Number(readFileSync(file, 'utf8').split('\n')[0])]
    } catch {
      return []
    }
  })
  return treesUsage(pids)
}

/** What `probe` read over a run: the difference of two readings. */
export function usageSince(probe: UsageProbe, before: Usage | undefined): Usage | undefined {
  const after = probe()
  if (!before || !after) return undefined
  return {
    cpuUs: after.cpuUs - before.cpuUs,
    syscalls:
      after.syscalls === undefined || before.syscalls === undefined
        ? undefined
        : after.syscalls - before.syscalls,
  }
}

/** CPU of the children this process has reaped (pgbench, once it exited), µs. */
export function reapedChildrenUs(): number {
  return stat(process.pid)?.reaped ?? 0
}
