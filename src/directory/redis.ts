import { createHash } from 'node:crypto'
import { Redis } from 'ioredis'

/**
 * Redis is only ever speed (invariant 1): commands fail fast instead of queueing while it is away, and
 * callers fall back to the directory or to process-local state.
 */
export function openRedis(url: string): Redis {
  return new Redis(url, {
    lazyConnect: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1000,
    commandTimeout: 250,
    enableAutoPipelining: true,
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  })
}

export type { Redis }

export const keys = {
  route: (tenant: string) => `switchyard:route:${tenant}`,
  invalidations: 'switchyard:invalidate',
  /** Per shard: LSNs of different servers do not compare, and a tenant that moved writes elsewhere. */
  lastWrite: (tenant: string, shard: string) => `switchyard:lsn:${tenant}:${shard}`,
  /** Statements without an API request id, counted in the window (INCR). */
  rate: (tenant: string, window: number) => `switchyard:rate:${tenant}:${window}`,
  /** The API requests counted in the window: a set of their ids' digests, at most the tenant's limit. */
  apiRequests: (tenant: string, window: number) => `switchyard:apireq:${tenant}:${window}`,
}

/** Rate limits count requests in fixed windows of this many seconds (the seed's limits are per hour). */
export const RATE_WINDOW_SECONDS = 3600

/**
 * Waits until a new client can take commands (without an offline queue, commands sent before that fail
 * at once); false when Redis did not answer within `timeoutMs`.
 */
export function redisReady(redis: Redis, timeoutMs = 1000): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true)
  return new Promise((resolve) => {
    const done = (ready: boolean) => {
      clearTimeout(timer)
      redis.off('ready', onReady)
      resolve(ready)
    }
    const onReady = () => done(true)
    const timer = setTimeout(() => done(false), timeoutMs)
    redis.on('ready', onReady)
  })
}

/** A short-lived client for one command-line action: `use` gets undefined when Redis is not configured. */
export async function withRedis<T>(
  url: string | undefined,
  use: (redis: Redis | undefined) => Promise<T>,
): Promise<T> {
  if (!url) return use(undefined)
  const redis = openRedis(url)
  redis.on('error', () => {})
  try {
    await redisReady(redis)
    return await use(redis)
  } finally {
    redis.disconnect()
  }
}

const shas = new Map<string, string>()

/** EVALSHA (the script's body is sent once per Redis, not per request), loading it on NOSCRIPT. */
export async function runScript(
  redis: Redis,
  script: string,
  scriptKeys: string[],
  args: (string | number | Buffer)[],
): Promise<unknown> {
  let sha = shas.get(script)
  if (!sha) {
    sha = createHash('sha1').update(script).digest('hex')
    shas.set(script, sha)
  }
  try {
    return await redis.evalsha(sha, scriptKeys.length, ...scriptKeys, ...args)
  } catch (error) {
    if (!String((error as Error).message).startsWith('NOSCRIPT')) throw error
    return redis.eval(script, scriptKeys.length, ...scriptKeys, ...args)
  }
}
