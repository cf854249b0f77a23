import { inject } from 'vitest'
import { startClusterNode, stopClusterNode } from '../src/cluster/launcher.ts'
import type { Topology } from '../src/config/topology.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { addTenant } from '../src/directory/tenants.ts'
import { type RouterOptions, type RunningRouter, startRouter } from '../src/router/server.ts'
import { type connect, newTenantId, removeTenants, topology } from './support.ts'

/** Routers started by a test file, closed by `stopRouters` in afterAll. */
const running: RunningRouter[] = []

/** A real router on a free port against the shared topology; `router` overrides its settings. */
export async function startTestRouter(
  router: Partial<Topology['router']> = {},
  options: RouterOptions = {},
): Promise<RunningRouter> {
  const base = topology()
  const started = await startRouter(
    { ...base, router: { ...base.router, ...router } },
    { port: 0, ...options },
  )
  running.push(started)
  return started
}

export const stopRouters = () => Promise.all(running.splice(0).map((router) => router.close()))

export interface TestTenant {
  id: string
  shard: string
  key: string
}

/** Tenants this test file made with tenantWithKey (each file runs in its own process: forks). */
const made: string[] = []

/** Removes the tenants this file made, so later files find the room they had. */
export const removeMadeTenants = () => removeTenants(made.splice(0))

/** A fresh tenant on `shard` and an app key limited to it. */
export async function tenantWithKey(shard: string, limits: Record<string, number> = {}): Promise<TestTenant> {
  const id = newTenantId()
  made.push(id)
  const key = await withDirectory(topology(), async (directory) => {
    await addTenant(directory, topology(), { id, shard })
    if (Object.keys(limits).length)
      await directory.sql`update tenants set limits = ${JSON.stringify(limits)}::jsonb where id = ${id}`
    return createKey(directory, { scope: 'app', tenants: [id] })
  })
  return { id, shard, key: key.key }
}

export interface Answer<T = unknown> {
  status: number
  headers: Headers
  body: T
}

/** POST /v1/query (drizzle pg-proxy protocol) as `tenant`. */
export async function query<T = { rows: unknown[] }>(
  router: RunningRouter,
  tenant: TestTenant,
  sql: string,
  params: unknown[] = [],
  options: { method?: 'all' | 'execute'; headers?: Record<string, string> } = {},
): Promise<Answer<T>> {
  return post<T>(
    router,
    '/v1/query',
    { sql, params, method: options.method ?? 'execute' },
    {
      authorization: `Bearer ${tenant.key}`,
      'x-tenant-id': tenant.id,
      ...options.headers,
    },
  )
}

export async function post<T = unknown>(
  router: RunningRouter,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Answer<T>> {
  const response = await fetch(`${router.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  const text = await response.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {}
  return { status: response.status, headers: response.headers, body: parsed as T }
}

export const home = () => inject('home')

/** Stop or start one node of the shared topology (by its `cluster status` name). */
export const stopNode = (name: string) => stopClusterNode(topology(), { home: home() }, name)
export const startNode = (name: string) => startClusterNode(topology(), { home: home() }, name)

/** Queries still running (state active) on the given nodes whose text holds `marker`. */
export async function runningQueries(marker: string, nodes: ReturnType<typeof connect>[]): Promise<number> {
  let n = 0
  for (const sql of nodes) {
    const rows = await sql`
      select 1 from pg_stat_activity
      where state = 'active' and query like ${`%${marker}%`} and pid <> pg_backend_pid()`
    n += rows.length
  }
  return n
}
