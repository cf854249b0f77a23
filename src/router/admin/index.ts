import { Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { SwitchyardError } from '../../errors.ts'
import { assertAdmin, bearerKey } from '../auth.ts'
import { type AdminDeps, adminContext } from './context.ts'
import * as moves from './moves.ts'
import * as nodes from './nodes.ts'
import * as plans from './plans.ts'
import * as shards from './shards.ts'
import * as stats from './stats.ts'
import * as tenants from './tenants.ts'

/** Every resource of the admin API, one entry each: a new one is a file with `register` and a line here. */
const RESOURCES = [tenants, shards, nodes, plans, moves, stats]

/**
 * The operators' HTTP API, mounted at `/admin/v1` (docs/ADMIN_API.md). Admin keys only: no key is a
 * 401, an app key a 403. Errors are thrown as `SwitchyardError` and answered by the router's one
 * `onError`, so they look like every other router error.
 */
export function createAdminApi(deps: AdminDeps): Hono {
  const api = new Hono()
  const { topology } = deps
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
    assertAdmin(await deps.keys.authenticate(bearerKey(c.req.header('authorization'))))
    await next()
    // Every admin call that reached a handler, for the audit trail.
    deps.logger.info({ method: c.req.method, path: c.req.path, status: c.res.status }, 'admin request')
  })
  const admin = adminContext(deps)
  for (const resource of RESOURCES) resource.register(api, admin)
  return api
}
