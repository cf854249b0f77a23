import { randomUUID } from 'node:crypto'
import type { Topology } from '../config/topology.ts'
import type { RouteCache } from '../directory/routes.ts'
import { type Admission, type AdmissionControl, apiRequestHeader } from './admission.ts'
import { authenticatedTenant, type KeyCheck } from './auth.ts'
import { quotaOf } from './tenant-request.ts'

/**
 * `POST /v1/limits/consume`: the tenant's rate limit for the application's own use (issue 19). The seed's
 * middleware consumed one point of `api_rate_limit` per inbound API request in its own Redis; it can ask
 * the router instead, once per API request, naming it in `x-switchyard-request`: the request is counted
 * (or refused with 429, Retry-After and RateLimit-*), and the statements it then sends with the same id
 * pass without counting again. Without an id, each call counts one new API request.
 */
export const CONSUME_PATH = '/v1/limits/consume'

export interface ConsumeDeps {
  topology: Topology
  keys: KeyCheck
  routes: Pick<RouteCache, 'resolve'>
  admission: Pick<AdmissionControl, 'admit'>
}

export async function consumeApiRequest(
  deps: ConsumeDeps,
  presented: { key: string | undefined; tenant: string | undefined; request: string | undefined },
): Promise<{ tenant: string; admission: Admission }> {
  const tenant = await authenticatedTenant(deps.keys, presented.key, presented.tenant)
  const request = apiRequestHeader(presented.request)
  // The tenant's limits and shard, as a statement's admission reads them (the shard only for its LSN).
  const route = await deps.routes.resolve(tenant)
  const quota = quotaOf(deps.topology, route, request ?? randomUUID())
  return { tenant, admission: await deps.admission.admit(tenant, route.shard, quota) }
}
