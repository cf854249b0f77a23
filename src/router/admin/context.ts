import type { Context } from 'hono'
import type { Registry } from 'prom-client'
import type { z } from 'zod'
import type { Topology } from '../../config/topology.ts'
import type { Directory } from '../../directory/connection.ts'
import type { Redis } from '../../directory/redis.ts'
import type { RouteCache } from '../../directory/routes.ts'
import { describeIssues, SwitchyardError } from '../../errors.ts'
import type { Logger } from '../../log.ts'
import { createMoverMetrics } from '../../migrate-tenant/metrics.ts'
import type { MoverDeps } from '../../migrate-tenant/mover.ts'
import type { HealthMonitor } from '../../shard/monitor.ts'
import type { NodePools } from '../../shard/pools.ts'
import type { KeyCheck } from '../auth.ts'

/** What the admin API needs from the router it is mounted in. */
export interface AdminDeps {
  topology: Topology
  directory: Directory
  redis?: Redis | undefined
  keys: KeyCheck
  /** Invalidated after a change to a tenant, so every router sees it with the tenant's next request. */
  routes: RouteCache
  monitor: HealthMonitor
  /** The router's node pools, for `/nodes`: absent where the API runs without a router. */
  pools?: NodePools | undefined
  logger: Logger
  /** The router's metrics: moves started through this API report phases and stalls there. */
  metrics?: { registry: Registry } | undefined
}

/** What every admin resource gets: the router's deps, the mover's, and a way to let work run on. */
export interface Admin extends AdminDeps {
  mover: MoverDeps
  /** Moves and plans started here run on in this router; their progress is in the directory. */
  inBackground(run: Promise<unknown>, id: string): void
}

export function adminContext(deps: AdminDeps): Admin {
  return {
    ...deps,
    mover: {
      topology: deps.topology,
      directory: deps.directory,
      redis: deps.redis,
      logger: deps.logger,
      metrics: deps.metrics ? createMoverMetrics(deps.metrics.registry) : undefined,
    },
    inBackground: (run, id) => {
      run.catch((error: Error) => deps.logger.error({ move: id, error: error.message }, 'move stopped'))
    },
  }
}

/** The JSON body; `empty` stands in for a request without one (where the endpoint allows that). */
export async function readBody(c: Context, empty?: unknown): Promise<unknown> {
  const text = await c.req.text()
  if (text.trim() === '' && empty !== undefined) return empty
  try {
    return JSON.parse(text)
  } catch {
    throw new SwitchyardError('invalid_json', 'the body is not valid JSON')
  }
}

/** The JSON body (`{}` when there is none) as `schema` reads it, or `invalid_input` naming the fields. */
export async function readInput<S extends z.ZodType>(c: Context, schema: S): Promise<z.output<S>> {
  const parsed = schema.safeParse(await readBody(c, {}))
  if (!parsed.success) throw new SwitchyardError('invalid_input', describeIssues(parsed.error.issues))
  return parsed.data
}
