import type { Hono } from 'hono'
import { routerNodes } from '../../shard/nodes.ts'
import type { Admin } from './context.ts'

/**
 * `/nodes`: every shard node as this router sees it — its health monitor's last poll (up, replica lag)
 * and its pool (connections open, reserved, callers waiting). No extra connections are opened.
 */
export function register(api: Hono, admin: Admin): void {
  api.get('/nodes', (c) =>
    c.json({
      nodes: routerNodes(admin.topology).map((node) => {
        const health = admin.monitor.health(node.name)
        const pool = admin.pools?.pool(node.name)
        return {
          name: node.name,
          shard: node.shard,
          role: node.role,
          healthy: health.healthy,
          lagBytes: health.lagBytes,
          checkedAt: health.checkedAt ? new Date(health.checkedAt).toISOString() : null,
          ...(health.error ? { error: health.error } : {}),
          pool: pool ? { open: pool.size, inUse: pool.reserved, waiting: pool.waiting } : null,
        }
      }),
    }),
  )
}
