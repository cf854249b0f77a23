import type { Topology } from '../config/topology.ts'
import { rootMessage, withAdmin } from './connection.ts'
import { loadParser } from './libpg.ts'
import { primaryName, replicaName } from './nodes.ts'
import { shownText } from './shown-text.ts'

/** One pg_stat_statements entry of one shard node: the shard's own view of what ran there. */
export interface NodeStatement {
  node: string
  shard: string
  role: 'primary' | 'replica'
  queryid: string
  /** The role that ran it: the router's for tenant SQL, the admin's for migrations and moves. */
  user: string
  /**
   * PostgreSQL's normalized text as the router shows its own (src/shard/shown-text.ts): constants as $n,
   * and the comments PostgreSQL keeps dropped (an application may put anything in one), cut at QUERY_CHARS.
   */
  query: string
  calls: number
  totalMs: number
  meanMs: number
  maxMs: number
  rows: number
}

export interface ShardStatements {
  /** Every node asked; `error` when it could not be read (down, or the extension not installed). */
  nodes: { name: string; shard: string; role: 'primary' | 'replica'; error?: string }[]
  /** Each node's `limit` entries with the most total execution time, most first over all nodes. */
  statements: NodeStatement[]
}

const QUERY_CHARS = 200
const cut = (text: string) => (text.length > QUERY_CHARS ? `${text.slice(0, QUERY_CHARS - 1)}…` : text)

/**
 * pg_stat_statements of every shard primary and replica (schema `switchyard_stats`, which only the
 * admin and monitoring roles may use: shard migrations 0004 and 0008), read with the topology's admin
 * URLs, as `cluster status` reads them. A node that cannot be read is named with its error.
 */
export async function readShardStatements(topology: Topology, limit: number): Promise<ShardStatements> {
  const nodes = topology.shards.flatMap((shard) => [
    { name: primaryName(shard.id), shard: shard.id, role: 'primary' as const, url: shard.primary },
    ...shard.replicas.map((url, i) => ({
      name: replicaName(shard.id, i),
      shard: shard.id,
      role: 'replica' as const,
      url,
    })),
  ])
  await loadParser()
  const read = await Promise.all(
    nodes.map(async ({ url, ...node }) => {
      try {
        const rows = await withAdmin(
          url,
          (sql) =>
            sql<Omit<NodeStatement, 'node' | 'shard' | 'role'>[]>`
            select s.queryid::text as queryid, coalesce(r.rolname, s.userid::text) as "user",
                   s.query,
                   s.calls::float8 as calls, round(s.total_exec_time::numeric, 3)::float8 as "totalMs",
                   round(s.mean_exec_time::numeric, 3)::float8 as "meanMs",
                   round(s.max_exec_time::numeric, 3)::float8 as "maxMs", s.rows::float8 as rows
            from switchyard_stats.pg_stat_statements s left join pg_roles r on r.oid = s.userid
            where s.dbid = (select oid from pg_database where datname = current_database())
              -- DML only: utility statements keep their literals (passwords), whatever track_utility says.
              and s.query ~* '^[[:space:]]*(select|insert|update|delete|with|merge|values|table)[[:space:]]'
            order by s.total_exec_time desc, s.queryid
            limit ${limit}`,
        )
        return {
          node,
          statements: rows.map((row) => ({
            node: node.name,
            shard: node.shard,
            role: node.role,
            ...row,
            query: cut(shownText(row.query)),
          })),
        }
      } catch (error) {
        return { node: { ...node, error: rootMessage(error) }, statements: [] }
      }
    }),
  )
  return {
    nodes: read.map((entry) => entry.node),
    statements: read.flatMap((entry) => entry.statements).sort((a, b) => b.totalMs - a.totalMs),
  }
}
