import { type Context, Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import type { Registry } from 'prom-client'
import { z } from 'zod'
import type { Topology } from '../config/topology.ts'
import type { Directory } from '../directory/connection.ts'
import type { Redis } from '../directory/redis.ts'
import type { RouteCache } from '../directory/routes.ts'
import {
  addTenant,
  type LimitsPatch,
  listTenants,
  type NewTenant,
  setTenantLimits,
  tenantId,
} from '../directory/tenants.ts'
import { describeIssues, SwitchyardError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { createMoverMetrics } from '../migrate-tenant/metrics.ts'
import { abortMove, createMove, type MoverDeps, runMove } from '../migrate-tenant/mover.ts'
import { findMove, listMoves, parseMoveId } from '../migrate-tenant/record.ts'
import { assertAdmin, type KeyCheck } from '../router/auth.ts'
import type { HealthMonitor } from '../shard/monitor.ts'
import { routerNodes } from '../shard/nodes.ts'
import { applyOptionsSchema, applyPlan } from './executor.ts'
import { placeTenant } from './placement.ts'
import {
  cancelPlan,
  createRebalancePlan,
  drainShard,
  findPlan,
  rebalanceStrategy,
  undrainShard,
} from './plans.ts'
import { describeTenant, type ReplicaLags, shardStats } from './stats.ts'

/** What the admin API needs from the router it is mounted in. */
export interface AdminDeps {
  topology: Topology
  directory: Directory
  redis?: Redis | undefined
  keys: KeyCheck
  /** Invalidated after a change to a tenant, so every router sees it with the tenant's next request. */
  routes: RouteCache
  monitor: HealthMonitor
  logger: Logger
  /** The router's metrics: moves started through this API report phases and stalls there. */
  metrics?: { registry: Registry } | undefined
}

const newPlanSchema = z.strictObject({ strategy: rebalanceStrategy.default('count') })
const newMoveSchema = z.strictObject({
  tenant: tenantId,
  to: z.string().min(1),
})
const abortSchema = z.strictObject({ moveBack: z.boolean().default(false) })

/**
 * The operators' HTTP API, mounted at `/admin/v1` (docs/ADMIN_API.md). Admin keys only: no key is a
 * 401, an app key a 403. Errors are thrown as `SwitchyardError` and answered by the router's one
 * `onError`, so they look like every other router error.
 */
export function createAdminApi(deps: AdminDeps): Hono {
  const api = new Hono()
  const { topology, directory } = deps
  const moverDeps: MoverDeps = {
    topology,
    directory,
    redis: deps.redis,
    logger: deps.logger,
    metrics: deps.metrics ? createMoverMetrics(deps.metrics.registry) : undefined,
  }
  // Moves and plans started here run on in this router; their progress is in the directory.
  const inBackground = (run: Promise<unknown>, id: string) =>
    run.catch((error: Error) => deps.logger.error({ move: id, error: error.message }, 'move stopped'))

  api.use(
    '*',
    bodyLimit({
      maxSize: topology.router.maxBodyBytes,
      onError: () => {
        throw new SwitchyardError(
          'body_too_large',
          `the body is larger than ${topology.router.maxBodyBytes} bytes`,
        )
      },
    }),
  )
  api.use('*', async (c, next) => {
    assertAdmin(await deps.keys.authenticate(bearer(c.req.header('authorization'))))
    await next()
    // Every admin call that reached a handler, for the audit trail.
    deps.logger.info({ method: c.req.method, path: c.req.path, status: c.res.status }, 'admin request')
  })

  api.get('/tenants', async (c) => c.json({ tenants: await listTenants(directory) }))
  api.post('/tenants', async (c) => {
    // Any JSON may arrive here: addTenant's zod schema is what refuses it.
    const tenant = await addTenant(directory, topology, (await readBody(c)) as NewTenant, placeTenant)
    // A lookup of the id before it existed may be remembered as unknown: forget it everywhere.
    await deps.routes.invalidate(tenant.id)
    return c.json(tenant, 201)
  })
  api.get('/tenants/:id', async (c) =>
    c.json(await describeTenant(directory, topology, deps.redis, c.req.param('id'))),
  )
  api.patch('/tenants/:id/limits', async (c) => {
    const body = (await readBody(c)) as LimitsPatch
    return c.json(await setTenantLimits(directory, topology, deps.routes, c.req.param('id'), body))
  })

  api.get('/shards', async (c) =>
    c.json({ shards: await shardStats(directory, topology, monitorLags(deps)) }),
  )
  api.post('/shards/:id/drain', async (c) =>
    c.json(await drainShard(directory, topology, c.req.param('id')), 201),
  )
  api.post('/shards/:id/undrain', async (c) => c.json(await undrainShard(directory, c.req.param('id'))))

  api.post('/plans', async (c) => {
    const body = newPlanSchema.safeParse(await readBody(c, {}))
    if (!body.success) throw new SwitchyardError('invalid_input', describeIssues(body.error.issues))
    return c.json(await createRebalancePlan(directory, topology, body.data.strategy), 201)
  })
  api.get('/plans/:id', async (c) => c.json(await findPlan(directory, c.req.param('id'))))
  api.post('/plans/:id/apply', async (c) => {
    const options = applyOptionsSchema.safeParse(await readBody(c, {}))
    if (!options.success) throw new SwitchyardError('invalid_input', describeIssues(options.error.issues))
    const { plan, finished } = await applyPlan(moverDeps, c.req.param('id'), options.data)
    // The plan runs on in this router; its progress is in the directory (GET /plans/:id).
    inBackground(finished, plan.id)
    return c.json(plan, 202)
  })
  api.post('/plans/:id/cancel', async (c) => c.json(await cancelPlan(directory, c.req.param('id'))))

  api.get('/moves', async (c) => c.json({ moves: await listMoves(directory) }))
  api.get('/moves/:id', async (c) => c.json(await findMove(directory, c.req.param('id'))))
  api.post('/moves', async (c) => {
    const body = newMoveSchema.safeParse(await readBody(c, {}))
    if (!body.success) throw new SwitchyardError('invalid_input', describeIssues(body.error.issues))
    const move = await createMove(moverDeps, { tenant: body.data.tenant, target: body.data.to })
    inBackground(runMove(moverDeps, move.id), move.id)
    return c.json(move, 202)
  })
  api.post('/moves/:id/resume', async (c) => {
    const move = await findMove(directory, c.req.param('id'))
    inBackground(runMove(moverDeps, move.id), move.id)
    return c.json(move, 202)
  })
  api.post('/moves/:id/abort', async (c) => {
    const body = abortSchema.safeParse(await readBody(c, {}))
    if (!body.success) throw new SwitchyardError('invalid_input', describeIssues(body.error.issues))
    const id = parseMoveId(c.req.param('id'))
    try {
      return c.json(await abortMove(moverDeps, id))
    } catch (error) {
      if (!body.data.moveBack || (error as SwitchyardError).code !== 'move_past_cutover') throw error
    }
    // Past the cutover, moving back is a whole move: it runs on in this router (GET /moves).
    inBackground(abortMove(moverDeps, id, { moveBack: true }), id)
    return c.json(await findMove(directory, id), 202)
  })

  return api
}

function bearer(header: string | undefined): string | undefined {
  return header?.toLowerCase().startsWith('bearer ') ? header.slice(7).trim() : undefined
}

/** The JSON body; `empty` stands in for a request without one (where the endpoint allows that). */
async function readBody(c: Context, empty?: unknown): Promise<unknown> {
  const text = await c.req.text()
  if (text.trim() === '' && empty !== undefined) return empty
  try {
    return JSON.parse(text)
  } catch {
    throw new SwitchyardError('invalid_json', 'the body is not valid JSON')
  }
}

/** Replica lag as the router's health monitor last measured it (no extra connections). */
function monitorLags(deps: AdminDeps): ReplicaLags {
  return async () =>
    routerNodes(deps.topology)
      .filter((node) => node.role === 'replica')
      .map((node) => ({
        name: node.name,
        shard: node.shard,
        lagBytes: deps.monitor.health(node.name).lagBytes,
      }))
}
