import type { Redis } from 'ioredis'
import {
  bumpCacheEpoch,
  bumpVersions,
  NAMESPACE_FIELD,
  PRIMARY_ONLY_MS,
} from '../../directory/cache-versions.ts'

/** The Redis this router's cache talks to, as far as the cache must know it. */
export interface RedisInstance {
  /** run_id and replication id: a restart or a failover changes it, and with it every answer's key. */
  id: string
  /** Until when (Date.now() ms) answers are kept only from a primary: Redis may hold older versions. */
  primaryOnlyUntil: number
}

/**
 * Which Redis answers, read on every (re)connect. A Redis that loaded its data from disk, or that took
 * over from another, may hold versions from before writes that were acknowledged: answers kept then
 * come only from primaries for a while. A Redis that may evict keys (maxmemory with a policy other
 * than noeviction) could drop a versions hash or a floor: the cache keeps nothing there (and says so).
 */
export function watchInstance(redis: Redis | undefined, warn: (message: string) => void) {
  let current: RedisInstance | undefined
  let lastId: string | undefined
  let warned = false
  const identify = async () => {
    current = undefined
    try {
      const info = await redis?.info()
      if (!info) return
      const field = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(info)?.[1]?.trim()
      if (Number(field('maxmemory') ?? 0) > 0 && field('maxmemory_policy') !== 'noeviction') {
        if (!warned)
          warn('the read cache keeps nothing: Redis may evict keys (set maxmemory-policy noeviction)')
        warned = true
        return
      }
      const id = `${field('run_id')}/${field('master_replid')}`
      const fromDisk = field('aof_enabled') === '1' || (field('rdb_last_load_keys_loaded') ?? '1') !== '0'
      const uptimeMs = Number(field('uptime_in_seconds') ?? 0) * 1000
      let primaryOnlyUntil = fromDisk ? Date.now() + PRIMARY_ONLY_MS - uptimeMs : 0
      if (lastId !== undefined && lastId !== id) primaryOnlyUntil = Date.now() + PRIMARY_ONLY_MS
      lastId = id
      current = { id, primaryOnlyUntil }
    } catch {
      current = undefined
    }
  }
  // Again on every connect, a second after a failed read, and every minute (a policy may change).
  const check = async () => {
    await identify()
    if (!current && redis?.status === 'ready') setTimeout(() => void check(), 1_000).unref()
  }
  redis?.on('ready', () => void check())
  redis?.on('close', () => {
    current = undefined
  })
  if (redis?.status === 'ready') void check()
  setInterval(() => {
    if (redis?.status === 'ready') void identify()
  }, 60_000).unref()
  return { current: () => current }
}

/** Namespace bumps that failed, made again once Redis takes them (a bounded set; past it, the epoch). */
const OWED_MAX = 10_000
const OWED_RETRY_MS = 500

export function createOwedBumps(
  redis: Redis | undefined,
  ready: () => boolean,
  /** Called once a tenant's owed bump is made: its older answers are unreachable everywhere. */
  paid: (tenant: string) => void,
  /** Every shard: an owed epoch's writes may be on any, at LSNs not known. */
  shards: readonly string[],
) {
  const tenants = new Set<string>()
  let epochOwed = false
  let timer: NodeJS.Timeout | undefined
  const retry = async () => {
    timer = undefined
    if (redis && ready()) {
      const unknownFloors = new Map(shards.map((shard) => [shard, null]))
      if (epochOwed && (await bumpCacheEpoch(redis, unknownFloors))) epochOwed = false
      for (const tenant of [...tenants]) {
        if ((await bumpVersions(redis, tenant, [NAMESPACE_FIELD], 'unknown')).applied) {
          tenants.delete(tenant)
          paid(tenant)
        }
      }
    }
    if (epochOwed || tenants.size > 0) schedule()
  }
  const schedule = () => {
    timer ??= setTimeout(() => void retry(), OWED_RETRY_MS)
    timer.unref()
  }
  return {
    add(tenant: string) {
      if (tenants.size >= OWED_MAX) {
        tenants.clear()
        epochOwed = true
      } else tenants.add(tenant)
      schedule()
    },
  }
}
