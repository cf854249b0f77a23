import postgres from 'postgres'
import type { Sql } from './connection.ts'
import { parseLsn } from './lsn.ts'
import type { ShardNode } from './nodes.ts'

export interface NodeHealth {
  healthy: boolean
  /** Primary: its current WAL position. Replica: how far it has replayed. */
  lsn: bigint | null
  /** Replica only: bytes its primary has written that it has not replayed. */
  lagBytes: number | null
  checkedAt: number
  error?: string
}

export interface HealthMonitor {
  health(name: string): NodeHealth
  /** A request saw the node fail: stop using it until a poll finds it answering again. */
  markDown(name: string, error: string): void
  /** Resolves after the first poll of every node. */
  ready: Promise<void>
  stop(): Promise<void>
}

const UNKNOWN: NodeHealth = { healthy: false, lsn: null, lagBytes: null, checkedAt: 0 }

/**
 * Polls every node on its own connection (never a request pool's) every `intervalMs`: is it up, what
 * is its WAL position, and for replicas how far behind their primary they are. Routing reads this.
 */
export function startMonitor(nodes: ShardNode[], intervalMs = 200, timeoutMs = 1000): HealthMonitor {
  const state = new Map<string, NodeHealth>(nodes.map((node) => [node.name, UNKNOWN]))
  const connections = new Map<string, Sql>(
    nodes.map((node) => [
      node.name,
      postgres(node.url, {
        max: 1,
        fetch_types: false,
        connect_timeout: 2,
        idle_timeout: 0,
        onnotice: () => {},
      }),
    ]),
  )
  let stopped = false
  let timer: NodeJS.Timeout | undefined

  /** Each shard's primary position as last polled; a lost primary keeps its last one. */
  const lastPrimaryLsn = new Map<string, bigint>()
  const lagOf = (node: ShardNode, lsn: bigint | null) => {
    const primary = lastPrimaryLsn.get(node.shard)
    if (node.role !== 'replica' || lsn === null || primary === undefined) return null
    return Math.max(0, Number(primary - lsn))
  }

  async function poll(node: ShardNode): Promise<void> {
    const sql = connections.get(node.name) as Sql
    const query =
      node.role === 'primary'
        ? sql`select pg_current_wal_lsn()::text as lsn`
        : sql`select pg_last_wal_replay_lsn()::text as lsn`
    try {
      const [row] = await withTimeout(query, timeoutMs)
      const lsn = row?.lsn ? parseLsn(row.lsn) : null
      // Lag against the last known primary position until the round ends (then against this round's): a
      // replica without a lag figure serves no reads, and a lost primary keeps a round open up to timeoutMs.
      state.set(node.name, { healthy: lsn !== null, lsn, lagBytes: lagOf(node, lsn), checkedAt: Date.now() })
    } catch (error) {
      state.set(node.name, { ...UNKNOWN, checkedAt: Date.now(), error: (error as Error).message })
    }
  }

  function computeLag() {
    for (const node of nodes) {
      const health = state.get(node.name) as NodeHealth
      if (node.role === 'primary' && health.lsn !== null) lastPrimaryLsn.set(node.shard, health.lsn)
    }
    for (const node of nodes) {
      const health = state.get(node.name) as NodeHealth
      if (node.role === 'replica') health.lagBytes = lagOf(node, health.lsn)
    }
  }

  async function round() {
    await Promise.all(nodes.map(poll))
    computeLag()
  }

  const ready = round().then(() => {
    const loop = async () => {
      if (stopped) return
      await round()
      if (!stopped) timer = setTimeout(loop, intervalMs)
    }
    timer = setTimeout(loop, intervalMs)
  })

  return {
    health: (name) => state.get(name) ?? UNKNOWN,
    markDown(name, error) {
      const current = state.get(name) ?? UNKNOWN
      state.set(name, { ...current, healthy: false, error })
    },
    ready,
    async stop() {
      stopped = true
      if (timer) clearTimeout(timer)
      await Promise.all([...connections.values()].map((sql) => sql.end({ timeout: 2 })))
    },
  }
}

/**
 * `promise`, or a rejection once `ms` have passed without its answer. When the timer fires, the answer
 * may be in the socket unread: timers run before I/O in the event loop's turn, so a router stalled past
 * `ms` (a large answer being built, a long parse) would call a node that answered in time down, and send
 * other tenants 503s for it. The rejection waits for the turn's I/O (setImmediate runs after it).
 */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => setImmediate(() => reject(new Error(`no answer within ${ms} ms`))), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}
