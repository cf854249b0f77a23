import type { Hono } from 'hono'
import {
  addTenant,
  type LimitsPatch,
  listTenants,
  type NewTenant,
  setTenantLimits,
} from '../../directory/tenants.ts'
import { placeTenant } from '../../placement/placement.ts'
import { describeTenant } from '../../placement/stats.ts'
import { type Admin, readBody } from './context.ts'

/** `/tenants`: list, add (placed, or on the shard named), show, change limits. */
export function register(api: Hono, admin: Admin): void {
  const { directory, topology } = admin
  api.get('/tenants', async (c) => c.json({ tenants: await listTenants(directory) }))
  api.post('/tenants', async (c) => {
    // Any JSON may arrive here: addTenant's zod schema is what refuses it.
    const tenant = await addTenant(directory, topology, (await readBody(c)) as NewTenant, placeTenant)
    // A lookup of the id before it existed may be remembered as unknown: forget it everywhere.
    await admin.routes.invalidate(tenant.id)
    return c.json(tenant, 201)
  })
  api.get('/tenants/:id', async (c) =>
    c.json(await describeTenant(directory, topology, admin.redis, c.req.param('id'))),
  )
  api.patch('/tenants/:id/limits', async (c) => {
    const body = (await readBody(c)) as LimitsPatch
    return c.json(await setTenantLimits(directory, topology, admin.routes, c.req.param('id'), body))
  })
}
