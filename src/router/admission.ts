import { createHash } from 'node:crypto'
import { keys, RATE_WINDOW_SECONDS, type Redis } from '../directory/redis.ts'
import { SwitchyardError } from '../errors.ts'
import { fromSortableLsn, sortableLsn } from '../shard/lsn.ts'

const WINDOW_SECONDS = RATE_WINDOW_SECONDS

export interface Admission {
  limit: number
  remaining: number
  /** Seconds until the window resets. */
  resetSeconds: number
  /** The tenant's last acknowledged write, as far as any router knows (read-your-writes). */
  lastWriteLsn: bigint | null
}

export interface AdmissionControl {
  /** Counts the request against the tenant's hourly limit; throws `rate_limited` past it. */
  admit(tenant: string, limit: number): Promise<Admission>
  /**
   * Records a write's LSN so every router's next read of the tenant waits for it. Awaited before the
   * write is acknowledged: a client that reads through another router right after must find it.
   */
  recordWrite(tenant: string, lsn: bigint): Promise<void>
  /** The tenant's last write as far as this router alone knows, without a round trip. */
  localLastWrite(tenant: string): bigint | null
  /**
   * True when this router already refused the tenant in the current window: its requests are then
   * admitted before they run, so a tenant over its limit costs the shards nothing.
   */
  overLimit(tenant: string): boolean
}

// One round trip per request: count it in the current window and read the tenant's last write LSN.
const ADMIT = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return { count, redis.call('GET', KEYS[2]) or false }`

// Keep the highest LSN: two routers may record writes of the same tenant out of order.
const RECORD = `
local current = redis.call('GET', KEYS[1])
if not current or current < ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1`

/**
 * Per-tenant rate limits (fixed hourly windows, INCR is atomic so exactly `limit` requests pass in a
 * window however many routers run) and the last-write LSN. Without Redis both fall back to this
 * process: limits then count per router instance, and read-your-writes holds per instance.
 */
export function createAdmission(redis: Redis | undefined, lsnTtlSeconds = 600): AdmissionControl {
  const localCounts = new Map<string, number>()
  const localLsn = new Map<string, bigint>()
  /** Tenants refused in a window, with that window. */
  const refused = new Map<string, number>()
  let localWindow = 0
  const currentWindow = () => Math.floor(Date.now() / 1000 / WINDOW_SECONDS)

  function localAdmit(tenant: string, window: number) {
    if (window !== localWindow) {
      localCounts.clear()
      localWindow = window
    }
    const count = (localCounts.get(tenant) ?? 0) + 1
    localCounts.set(tenant, count)
    return count
  }

  return {
    async admit(tenant, limit) {
      const now = Math.floor(Date.now() / 1000)
      const window = Math.floor(now / WINDOW_SECONDS)
      const resetSeconds = (window + 1) * WINDOW_SECONDS - now
      let count: number
      let shared: bigint | null = null
      try {
        const live = redis?.status === 'ready' ? redis : undefined
        if (!live) throw new Error('redis not ready')
        const [n, lsn] = (await runScript(
          live,
          ADMIT,
          [keys.rate(tenant, window), keys.lastWrite(tenant)],
          [WINDOW_SECONDS],
        )) as [number, string | null]
        count = n
        shared = lsn ? fromSortableLsn(lsn) : null
      } catch {
        count = localAdmit(tenant, window)
      }
      const local = localLsn.get(tenant) ?? null
      const lastWriteLsn = shared === null ? local : local === null || shared > local ? shared : local
      if (count > limit) {
        refused.set(tenant, window)
        throw new SwitchyardError(
          'rate_limited',
          `tenant ${tenant} is over its limit of ${limit} requests per hour`,
          {
            limit,
            resetSeconds,
          },
        )
      }
      if (refused.get(tenant) === window) refused.delete(tenant)
      return { limit, remaining: limit - count, resetSeconds, lastWriteLsn }
    },
    localLastWrite: (tenant) => localLsn.get(tenant) ?? null,
    overLimit: (tenant) => refused.get(tenant) === currentWindow(),
    async recordWrite(tenant, lsn) {
      const known = localLsn.get(tenant)
      if (known === undefined || lsn > known) localLsn.set(tenant, lsn)
      if (redis?.status !== 'ready') return
      await runScript(redis, RECORD, [keys.lastWrite(tenant)], [sortableLsn(lsn), lsnTtlSeconds]).catch(
        () => {},
      )
    },
  }
}

const shas = new Map<string, string>()

/** EVALSHA (the script's body is sent once per Redis, not per request), loading it on NOSCRIPT. */
async function runScript(
  redis: Redis,
  script: string,
  scriptKeys: string[],
  args: (string | number)[],
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
