import type { Topology } from '../config/topology.ts'

/** A shard node as the router sees it. Names match `switchyard cluster status`. */
export interface ShardNode {
  name: string
  shard: string
  role: 'primary' | 'replica'
  /** The node's URL with the router's role as the user. */
  url: string
}

export const primaryName = (shard: string) => `${shard}-primary`
export const replicaName = (shard: string, index: number) => `${shard}-replica-${index + 1}`

export function routerNodes(topology: Topology): ShardNode[] {
  const { name, password } = topology.router.role
  const asRouter = (url: string) => {
    const parsed = new URL(url)
    parsed.username = encodeURIComponent(name)
    parsed.password = encodeURIComponent(password)
    return parsed.toString()
  }
  return topology.shards.flatMap((shard) => [
    { name: primaryName(shard.id), shard: shard.id, role: 'primary' as const, url: asRouter(shard.primary) },
    ...shard.replicas.map((url, index) => ({
      name: replicaName(shard.id, index),
      shard: shard.id,
      role: 'replica' as const,
      url: asRouter(url),
    })),
  ])
}
