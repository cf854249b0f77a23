import postgres from 'postgres'
import type { Sql } from './connection.ts'
import type { ShardNode } from './nodes.ts'

/** bool, bytea, json, date, timestamp, timestamptz, jsonb: the types postgres.js would otherwise serialize. */
const TEXT_AS_IS = [16, 17, 114, 1082, 1114, 1184, 3802]

export interface PoolOptions {
  /** Connections per node; the seed keeps pools at 20–50. */
  size: number
  statementTimeoutMs: number
}

export interface NodePools {
  nodes: ShardNode[]
  node(name: string): ShardNode
  sql(name: string): Sql
  close(): Promise<void>
}

/**
 * One postgres.js pool per node, logged in as the router's role. Statements are prepared per
 * connection, so a transaction's statements pipeline in one round trip after their first use.
 * (fetch_types stays on although values pass through as text: with it off, postgres.js 3.4's
 * reserve() never resolves on a pool that has no open connection yet.)
 */
export function createPools(nodes: ShardNode[], options: PoolOptions): NodePools {
  const byName = new Map(nodes.map((node) => [node.name, node]))
  const pools = new Map(
    nodes.map((node) => [
      node.name,
      postgres(node.url, {
        max: options.size,
        prepare: true,
        idle_timeout: 60,
        connect_timeout: 3,
        onnotice: () => {},
        // Client parameters arrive as PostgreSQL input text: postgres.js must not re-serialize them by
        // the type the server infers (it would turn 'true' into 'f', quote JSON twice, reparse dates).
        types: {
          passthrough: { to: 25, from: TEXT_AS_IS, serialize: (x: unknown) => x, parse: (x: unknown) => x },
        },
        connection: {
          application_name: 'switchyard-router',
          statement_timeout: options.statementTimeoutMs,
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
    sql(name) {
      const sql = pools.get(name)
      if (!sql) throw new Error(`unknown node ${name}`)
      return sql
    },
    async close() {
      await Promise.all([...pools.values()].map((sql) => sql.end({ timeout: 10 })))
    },
  }
}
