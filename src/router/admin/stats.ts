import type { Hono } from 'hono'
import type { Redis } from '../../directory/redis.ts'
import { parseStatementQuery, readStatementStats, tenantSummaries } from '../../directory/statement-stats.ts'
import { SwitchyardError } from '../../errors.ts'
import type { Admin } from './context.ts'

/**
 * `/stats/statements`: per tenant and statement fingerprint, what every router counted (calls, errors,
 * total, mean and p99 time, rows), merged in Redis; slowest first by default. The same read as
 * `switchyard top`. `/stats/tenants`: each tenant's calls, errors and p99 this hour.
 */
export function register(api: Hono, admin: Admin): void {
  api.get('/stats/statements', async (c) => {
    const query = parseStatementQuery(c.req.query())
    const slowMs = admin.topology.router.slowStatementMs
    const statements = await readStatementStats(statsRedis(admin), query)
    return c.json({ hours: query.hours, slowMs, statements })
  })
  // The console's "requests this hour, p99" column: one total row per tenant, busiest first.
  api.get('/stats/tenants', async (c) => c.json({ tenants: await tenantSummaries(statsRedis(admin)) }))
}

function statsRedis(admin: Admin): Redis {
  if (!admin.redis)
    throw new SwitchyardError(
      'stats_unavailable',
      'statement statistics live in Redis: the topology names none',
    )
  return admin.redis
}
