import { SwitchyardError } from '../errors.ts'
import type { HealthMonitor } from '../shard/monitor.ts'
import type { ShardNode } from '../shard/nodes.ts'

export type Consistency = 'session' | 'strong' | 'eventual'

export interface ReadRequirement {
  consistency: Consistency
  /** The tenant's last write: a replica must have replayed past it (read-your-writes). */
  lastWriteLsn: bigint | null
}

export interface Routing {
  primary(shard: string): ShardNode
  /** A replica that can serve this read (healthy, within the lag bound, past the tenant's last write), else the primary. */
  forRead(shard: string, requirement: ReadRequirement, exclude?: string): ShardNode
}

/** Invariant 4: writes to the primary; reads to a replica that can serve them, otherwise the primary. */
export function createRouting(nodes: ShardNode[], monitor: HealthMonitor, maxLagBytes: number): Routing {
  const primaries = new Map<string, ShardNode>()
  const replicas = new Map<string, ShardNode[]>()
  for (const node of nodes) {
    if (node.role === 'primary') primaries.set(node.shard, node)
    else replicas.set(node.shard, [...(replicas.get(node.shard) ?? []), node])
  }
  let turn = 0

  const primary = (shard: string) => {
    const node = primaries.get(shard)
    if (!node) throw new SwitchyardError('shard_unknown', `shard "${shard}" is not in the router's topology`)
    return node
  }

  const canServe = (node: ShardNode, requirement: ReadRequirement) => {
    const health = monitor.health(node.name)
    if (!health.healthy || health.lsn === null) return false
    if (health.lagBytes === null || health.lagBytes > maxLagBytes) return false
    if (requirement.consistency === 'session' && requirement.lastWriteLsn !== null) {
      return health.lsn >= requirement.lastWriteLsn
    }
    return true
  }

  return {
    primary,
    forRead(shard, requirement, exclude) {
      if (requirement.consistency === 'strong') return primary(shard)
      const candidates = (replicas.get(shard) ?? []).filter(
        (node) => node.name !== exclude && canServe(node, requirement),
      )
      if (candidates.length === 0) return primary(shard)
      turn = (turn + 1) % 1_000_000
      return candidates[turn % candidates.length] as ShardNode
    },
  }
}
