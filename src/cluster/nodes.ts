import type { Topology } from '../config/topology.ts'
import { SwitchyardError } from '../errors.ts'
import { primaryName, replicaName } from '../shard/nodes.ts'

export type PostgresRole = 'directory' | 'primary' | 'replica'

export interface PostgresNode {
  name: string
  role: PostgresRole
  shard?: string
  /** The admin URL, exactly as the config gives it. */
  url: string
  port: number
  database: string
  user: string
  password: string
  /** For replicas: the primary they stream from. */
  primary?: PostgresNode
}

export interface RedisNode {
  name: 'redis'
  role: 'redis'
  url: string
  port: number
}

export interface ClusterPlan {
  postgres: PostgresNode[]
  redis?: RedisNode
}

const LOCAL_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]'])

/** The nodes a topology names, each with the port it listens on. Names are the ones `cluster status` prints. */
export function planCluster(topology: Topology): ClusterPlan {
  const directory = postgresNode('directory', 'directory', topology.directory)
  const shards = topology.shards.flatMap((shard) => {
    const primary = { ...postgresNode(primaryName(shard.id), 'primary', shard.primary), shard: shard.id }
    const replicas = shard.replicas.map((url, index) => ({
      ...postgresNode(replicaName(shard.id, index), 'replica', url),
      shard: shard.id,
      primary,
    }))
    return [primary, ...replicas]
  })
  const redis = topology.redis ? redisNode(topology.redis) : undefined
  return { postgres: [directory, ...shards], ...(redis ? { redis } : {}) }
}

/** Nodes the launcher may start: every address must be on this machine. */
export function assertLocal(plan: ClusterPlan): void {
  for (const node of [...plan.postgres, ...(plan.redis ? [plan.redis] : [])]) {
    const host = new URL(node.url).hostname
    if (!LOCAL_HOSTS.has(host)) {
      throw new SwitchyardError(
        'cluster_not_local',
        `node ${node.name} is at ${host}; the launcher only starts nodes on 127.0.0.1`,
      )
    }
  }
}

function postgresNode(name: string, role: PostgresRole, url: string): PostgresNode {
  const parsed = new URL(url)
  return {
    name,
    role,
    url,
    port: Number(parsed.port || 5432),
    database: decodeURIComponent(parsed.pathname.slice(1)) || 'postgres',
    user: decodeURIComponent(parsed.username) || 'postgres',
    password: decodeURIComponent(parsed.password),
  }
}

function redisNode(url: string): RedisNode {
  return { name: 'redis', role: 'redis', url, port: Number(new URL(url).port || 6379) }
}

/** The admin URL of a node with another database, e.g. `postgres` to create the node's own database. */
export function withDatabase(node: PostgresNode, database: string): string {
  const url = new URL(node.url)
  url.pathname = `/${database}`
  return url.toString()
}
