import type { Hono } from 'hono'
import { z } from 'zod'
import { applyOptionsSchema, applyPlan } from '../../placement/executor.ts'
import {
  cancelPlan,
  createRebalancePlan,
  findPlan,
  listPlans,
  rebalanceStrategy,
} from '../../placement/plans.ts'
import { type Admin, readInput } from './context.ts'

const newPlanSchema = z.strictObject({ strategy: rebalanceStrategy.default('count') })

/** `/plans`: rebalance and drain plans; list them, store one, show it, apply it (in the background), cancel it. */
export function register(api: Hono, admin: Admin): void {
  const { directory, topology } = admin
  api.get('/plans', async (c) => c.json({ plans: await listPlans(directory) }))
  api.post('/plans', async (c) => {
    const body = await readInput(c, newPlanSchema)
    return c.json(await createRebalancePlan(directory, topology, body.strategy), 201)
  })
  api.get('/plans/:id', async (c) => c.json(await findPlan(directory, c.req.param('id'))))
  api.post('/plans/:id/apply', async (c) => {
    const options = await readInput(c, applyOptionsSchema)
    const { plan, finished } = await applyPlan(admin.mover, c.req.param('id'), options)
    // The plan runs on in this router; its progress is in the directory (GET /plans/:id).
    admin.inBackground(finished, plan.id)
    return c.json(plan, 202)
  })
  api.post('/plans/:id/cancel', async (c) => c.json(await cancelPlan(directory, c.req.param('id'))))
}
