import type { ShardNode } from './nodes.ts'
import { createWirePool, type WirePool } from './wire/pool.ts'

export interface PoolOptions {
  /** Connections per node; the seed keeps pools at 20–50. */
  size: number
  statementTimeoutMs: number
}

export interface NodePools {
  nodes: ShardNode[]
  node(name: string): ShardNode
  pool(name: string): WirePool
  close(): Promise<void>
}

/** Connections each pool keeps open from the start, so a cutover to a shard never waits for logins. */
const WARM_CONNECTIONS = 2

/**
 * One pool per node, logged in as the router's role, on the router's own wire client: a transaction
 * goes out as one pipeline with one Sync (postgres.js ends every query with its own Sync). Statements
 * are prepared per connection and per SQL text; values travel as text both ways.
 */
export function createPools(nodes: ShardNode[], options: PoolOptions): NodePools {
  const byName = new Map(nodes.map((node) => [node.name, node]))
  const pools = new Map(
    nodes.map((node) => [
      node.name,
      createWirePool({
        url: node.url,
        max: options.size,
        idleTimeoutMs: 60_000,
        minIdle: WARM_CONNECTIONS,
        connectTimeoutMs: 3000,
        parameters: {
          application_name: 'switchyard-router',
          statement_timeout: String(options.statementTimeoutMs),
          search_path: 'public',
        },
      }),
    ]),
  )
  return {
    nodes,
    node(name) {
      const node = byName.get(name)
      if (!node) throw new Error(`unknown node ${name}`)
      return node
    },
    pool(name) {
      const pool = pools.get(name)
      if (!pool) throw new Error(`unknown node ${name}`)
      return pool
    },
    async close() {
      await Promise.all([...pools.values()].map((pool) => pool.close(10_000)))
    },
  }
}
