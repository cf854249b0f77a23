import { randomUUID } from 'node:crypto'
import pg from 'pg'
import { inject } from 'vitest'
import { startClusterNode, stopClusterNode } from '../src/cluster/launcher.ts'
import type { RunningRouter } from '../src/router/server.ts'
import type { Sql } from '../src/shard/connection.ts'
import type { TestTenant } from './fixtures.ts'
import { topology } from './support.ts'

export interface Answer<T = unknown> {
  status: number
  headers: Headers
  body: T
}

/** Headers naming a new API request of the application (issue 19): the statement counts one. */
export const newApiRequest = (): Record<string, string> => ({ 'x-switchyard-request': randomUUID() })

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

/** A node-postgres client (not connected yet) for `tenant` on the router's PostgreSQL port. */
export const wireClient = (router: RunningRouter, tenant: TestTenant) =>
  new pg.Client({
    host: '127.0.0.1',
    port: router.pgPort as number,
    user: tenant.id,
    password: tenant.key,
    database: 'switchyard',
  })

export const home = () => inject('home')

/** Stop or start one node of the shared topology (by its `cluster status` name). */
export const stopNode = (name: string) => stopClusterNode(topology(), { home: home() }, name)
export const startNode = (name: string) => startClusterNode(topology(), { home: home() }, name)

/** Queries still running (state active) on the given nodes whose text holds `marker`. */
export async function runningQueries(marker: string, nodes: Sql[]): Promise<number> {
  let n = 0
  for (const sql of nodes) {
    const rows = await sql`
      select 1 from pg_stat_activity
      where state = 'active' and query like ${`%${marker}%`} and pid <> pg_backend_pid()`
    n += rows.length
  }
  return n
}
