// biome-ignore-all lint/correctness/noEmptyPattern: vitest reads what a fixture needs from its first argument's pattern, so one that needs nothing must still destructure
import { test as base } from 'vitest'
import type { Topology } from '../src/config/topology.ts'
import { type Directory, openDirectory, withDirectory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { openRedis, type Redis, redisReady } from '../src/directory/redis.ts'
import { addTenant } from '../src/directory/tenants.ts'
import { type RouterOptions, type RunningRouter, startRouter } from '../src/router/server.ts'
import { openAdmin, type Sql } from '../src/shard/connection.ts'
import { type ConnectOptions, connectWire, type WireConnection } from '../src/shard/wire/connection.ts'
import { newTenantId, topology } from './support.ts'
import type { ExtraNode, Relay } from './wire-support.ts'

/**
 * What a topology test file opens, it gets here, and this module closes it once the file's last test
 * and afterAll hook have run. A topology test file takes `it` from here and registers its hooks as
 * `it.beforeAll`, `it.afterAll`, …: so every test and hook sets the file's fixtures up (vitest's own
 * `beforeAll` knows none).
 *
 * - `directory` and `redis` (file fixtures, named in a test's or hook's first argument): the file's one
 *   directory handle and Redis client, opened when first named.
 * - `connect`, `openWire`, `startTestRouter`, `tenantWithKey` (and wire-support's relays and extra node):
 *   opened on demand, with arguments, and remembered for the end of the file.
 *
 * Nothing may be opened at import time: outside a test or hook of this API, the openers throw.
 */

/** What the file opened, closed in this order: clients before the relays and servers they talk through. */
interface Opened {
  wire: WireConnection[]
  relays: Relay[]
  routers: RunningRouter[]
  connections: Sql[]
  nodes: ExtraNode[]
  /** Tenants tenantWithKey made (see MadeTenants). */
  tenants: string[]
}

let opened: Opened | undefined

/** The file's open things; throws where nothing would close them (at import time, or under vitest's own `it`). */
export function fileOpened(): Opened {
  if (!opened)
    throw new Error(
      'opened outside a test or hook of test/fixtures.ts (at import time, or through vitest’s own it/beforeAll): nothing would close it',
    )
  return opened
}

async function closeOpened(file: Opened, madeTenants: MadeTenants): Promise<void> {
  await Promise.all(file.wire.map((connection) => connection.close()))
  await Promise.all(file.relays.map((relay) => relay.close()))
  // No request of theirs is left running on a tenant that goes next.
  await Promise.all(file.routers.map((router) => router.close()))
  if (madeTenants === 'remove') await removeTenants(file.tenants)
  await Promise.all(file.connections.map((sql) => sql.end({ timeout: 5 })))
  for (const node of file.nodes) await node.stop()
}

/**
 * What becomes of the tenants tenantWithKey made, when the file is done. Kept by default (a move that
 * took one refers to it); a file that fills a shard says `it.override('madeTenants', 'remove')`, so
 * later files find the room they had.
 */
type MadeTenants = 'keep' | 'remove'

interface FileFixtures {
  madeTenants: MadeTenants
  opened: undefined
  directory: Directory
  redis: Redis
}

export const it = base.extend<{ $file: FileFixtures }>({
  madeTenants: [async ({}, use) => use('keep'), { scope: 'file' }],
  opened: [
    async ({ madeTenants }, use) => {
      const file: Opened = { wire: [], relays: [], routers: [], connections: [], nodes: [], tenants: [] }
      opened = file
      await use(undefined)
      await closeOpened(file, madeTenants)
      opened = undefined
    },
    { scope: 'file', auto: true },
  ],
  directory: [
    async ({}, use) => {
      const directory = openDirectory(topology().directory)
      await use(directory)
      await directory.close()
    },
    { scope: 'file' },
  ],
  redis: [
    async ({}, use) => {
      const redis = openRedis(topology().redis as string)
      redis.on('error', () => {})
      // Without an offline queue, commands sent before the client is ready fail at once.
      await redisReady(redis, 10_000)
      await use(redis)
      redis.disconnect()
    },
    { scope: 'file' },
  ],
})

/** An admin connection (postgres.js) to `url`. */
export function connect(url: string, max = 2): Sql {
  const file = fileOpened()
  const sql = openAdmin(url, { max })
  file.connections.push(sql)
  return sql
}

/** A connection of the router's own wire client. */
export async function openWire(options: ConnectOptions): Promise<WireConnection> {
  const file = fileOpened()
  const connection = await connectWire(options)
  file.wire.push(connection)
  return connection
}

/** A real router on a free port against the shared topology; `router` overrides its settings. */
export async function startTestRouter(
  router: Partial<Topology['router']> = {},
  options: RouterOptions = {},
): Promise<RunningRouter> {
  const file = fileOpened()
  const base = topology()
  const started = await startRouter(
    { ...base, router: { ...base.router, ...router } },
    { port: 0, ...options },
  )
  file.routers.push(started)
  return started
}

export interface TestTenant {
  id: string
  shard: string
  key: string
}

/** A fresh tenant on `shard` and an app key limited to it. */
/** An admin key and an app key (for every tenant), named after the test that makes them. */
export async function adminAndAppKeys(name: string): Promise<{ admin: string; app: string }> {
  return withDirectory(topology(), async (directory) => ({
    admin: (await createKey(directory, { scope: 'admin', name })).key,
    app: (await createKey(directory, { scope: 'app', name })).key,
  }))
}

export async function tenantWithKey(shard: string, limits: Record<string, number> = {}): Promise<TestTenant> {
  const id = newTenantId()
  fileOpened().tenants.push(id)
  const key = await withDirectory(topology(), async (directory) => {
    await addTenant(directory, topology(), { id, shard })
    if (Object.keys(limits).length)
      await directory.sql`update tenants set limits = ${JSON.stringify(limits)}::jsonb where id = ${id}`
    return createKey(directory, { scope: 'app', tenants: [id] })
  })
  return { id, shard, key: key.key }
}

/**
 * Removes tenants a test created, so later test files find the room they had: plan moves that name
 * them, their ownership rows on every shard, their directory rows. (Test files share one topology.)
 */
export async function removeTenants(ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return
  const list = [...ids]
  const directory = connect(topology().directory)
  await directory`delete from rebalance_plan_moves where tenant_id = any(${list}::uuid[])`
  for (const s of topology().shards)
    await connect(s.primary)`delete from switchyard.tenant_ownership where tenant_id = any(${list}::uuid[])`
  await directory`delete from tenants where id = any(${list}::uuid[])`
}
