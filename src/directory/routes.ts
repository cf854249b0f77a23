import { SwitchyardError } from '../errors.ts'
import type { Sql } from '../shard/connection.ts'
import { bumpTenantCache } from './cache-versions.ts'
import { createLru } from './lru.ts'
import { keys, type Redis } from './redis.ts'
import type { TenantLimits } from './schema.ts'
import type { TenantState } from './tenant-state.ts'

/** Where a tenant lives, as the directory says: the only thing the router needs per request. */
export interface TenantRoute {
  tenant: string
  shard: string
  epoch: number
  state: TenantState
  limits: TenantLimits
}

export interface RouteCacheOptions {
  directory: Sql
  redis?: Redis | undefined
  ttlMs: number
  negativeTtlMs: number
  maxEntries?: number
  /** Redis keeps routes longer than processes do: a new router starts warm. */
  redisTtlSeconds?: number
}

export interface RouteEvents {
  hit(layer: 'local' | 'redis' | 'directory' | 'stale'): void
}

export interface RouteCache {
  /** Local → Redis → directory. `fresh` skips both caches (after a stale route). */
  resolve(tenant: string, options?: { fresh?: boolean }): Promise<TenantRoute>
  /** Forget the tenant here, in Redis, and tell every router. */
  invalidate(tenant: string): Promise<void>
  /** Called when any router (this one included) invalidates a tenant. */
  onInvalidate(listener: (tenant: string) => void): () => void
  close(): Promise<void>
}

interface Entry {
  route: TenantRoute | null
  expires: number
}

/**
 * The tenant directory, cached (invariant 1: caches are only speed). A shard refuses a stale route by
 * itself, so a missed invalidation costs one retry, never a misplaced write. When the directory is
 * down, expired routes keep being served; when Redis is down, the directory answers.
 */
export function createRouteCache(options: RouteCacheOptions, events?: RouteEvents): RouteCache {
  const local = createLru<string, Entry>(options.maxEntries ?? 100_000)
  const inflight = new Map<string, Promise<TenantRoute>>()
  const listeners = new Set<(tenant: string) => void>()
  const redisTtl = options.redisTtlSeconds ?? 300
  const subscriber = options.redis?.duplicate()

  const forget = (tenant: string) => {
    local.delete(tenant)
    for (const listener of listeners) listener(tenant)
  }
  subscriber?.on('message', (_channel: string, tenant: string) => forget(tenant))
  // Subscribe once connected: without an offline queue a command sent earlier fails and would never
  // be retried. After a reconnect ioredis resubscribes by itself; subscribing again is harmless.
  subscriber?.on('ready', () => {
    subscriber.subscribe(keys.invalidations).catch(() => {})
  })
  subscriber?.on('error', () => {})

  async function fromRedis(tenant: string): Promise<TenantRoute | undefined> {
    if (!options.redis) return undefined
    try {
      const text = await options.redis.get(keys.route(tenant))
      return text ? (JSON.parse(text) as TenantRoute) : undefined
    } catch {
      return undefined
    }
  }

  async function fromDirectory(tenant: string): Promise<TenantRoute | null> {
    const [row] = await options.directory<
      { shard_id: string; epoch: number; state: TenantRoute['state']; limits: TenantLimits }[]
    >`
      select shard_id, epoch, state, limits from tenants where id = ${tenant}`
    if (!row) return null
    return { tenant, shard: row.shard_id, epoch: row.epoch, state: row.state, limits: row.limits ?? {} }
  }

  function remember(tenant: string, route: TenantRoute | null) {
    local.set(tenant, { route, expires: Date.now() + (route ? options.ttlMs : options.negativeTtlMs) })
  }

  async function load(tenant: string, fresh: boolean): Promise<TenantRoute> {
    const cached = fresh ? undefined : await fromRedis(tenant)
    if (cached) {
      events?.hit('redis')
      remember(tenant, cached)
      return cached
    }
    let route: TenantRoute | null
    try {
      route = await fromDirectory(tenant)
    } catch (error) {
      const stale = local.get(tenant)?.route
      if (stale) {
        events?.hit('stale')
        return stale
      }
      throw new SwitchyardError(
        'directory_unavailable',
        `the directory is unavailable: ${(error as Error).message}`,
      )
    }
    events?.hit('directory')
    remember(tenant, route)
    if (!route) throw unknown(tenant)
    options.redis?.set(keys.route(tenant), JSON.stringify(route), 'EX', redisTtl).catch(() => {})
    return route
  }

  return {
    async resolve(tenant, { fresh = false } = {}) {
      const entry = fresh ? undefined : local.get(tenant)
      if (entry && entry.expires > Date.now()) {
        events?.hit('local')
        if (!entry.route) throw unknown(tenant)
        return entry.route
      }
      const key = `${fresh ? 'fresh' : 'cached'}:${tenant}`
      let pending = inflight.get(key)
      if (!pending) {
        pending = load(tenant, fresh).finally(() => inflight.delete(key))
        inflight.set(key, pending)
      }
      return pending
    },
    async invalidate(tenant) {
      forget(tenant)
      if (options.redis) await publishInvalidation(options.redis, tenant)
    },
    onInvalidate(listener) {
      listeners.add(listener)
      return () => listeners.delete(listener)
    },
    async close() {
      subscriber?.disconnect()
    },
  }
}

/**
 * Drops the tenant's route from Redis and tells every router to forget it. Best effort (invariant 1):
 * a router that misses it finds out from the shard's stale-route error. False when the read cache's
 * bump did not happen: routers may serve the tenant reads cached before the change until their TTL.
 */
export async function publishInvalidation(redis: Redis, tenant: string): Promise<boolean> {
  // The tenant's rows or limits changed outside the routers (a cutover, set-limits): its cached reads go.
  const forgotten = await bumpTenantCache(redis, tenant)
  await redis.del(keys.route(tenant)).catch(() => {})
  await redis.publish(keys.invalidations, tenant).catch(() => {})
  return forgotten
}

const unknown = (tenant: string) => new SwitchyardError('tenant_unknown', `tenant ${tenant} does not exist`)
