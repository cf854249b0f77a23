import type { Hono } from 'hono'
import { drainShard, undrainShard } from '../../placement/plans.ts'
import { type ReplicaLags, shardStats } from '../../placement/stats.ts'
import { routerNodes } from '../../shard/nodes.ts'
import type { Admin } from './context.ts'

/** `/shards`: fill, size and replica lag; drain (a stored plan) and undrain. */
export function register(api: Hono, admin: Admin): void {
  const { directory, topology } = admin
  api.get('/shards', async (c) =>
    c.json({ shards: await shardStats(directory, topology, monitorLags(admin)) }),
  )
  api.post('/shards/:id/drain', async (c) =>
    c.json(await drainShard(directory, topology, c.req.param('id')), 201),
  )
  api.post('/shards/:id/undrain', async (c) => c.json(await undrainShard(directory, c.req.param('id'))))
}

/** Replica lag as the router's health monitor last measured it (no extra connections). */
function monitorLags(admin: Admin): ReplicaLags {
  return async () =>
    routerNodes(admin.topology)
      .filter((node) => node.role === 'replica')
      .map((node) => ({
        name: node.name,
        shard: node.shard,
        lagBytes: admin.monitor.health(node.name).lagBytes,
      }))
}
