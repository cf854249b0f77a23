import { keys, RATE_WINDOW_SECONDS, type Redis, runScript } from '../directory/redis.ts'
import { SwitchyardError } from '../errors.ts'
import { fromSortableLsn, sortableLsn } from '../shard/lsn.ts'

const WINDOW_SECONDS = RATE_WINDOW_SECONDS

export interface Admission {
  limit: number
  remaining: number
  /** Seconds until the window resets. */
  resetSeconds: number
  /** The tenant's last acknowledged write on the shard admitted for, as far as any router knows. */
  lastWriteLsn: bigint | null
}

export interface AdmissionControl {
  /**
   * Counts the request against the tenant's hourly limit (throws `rate_limited` past it) and reads the
   * tenant's last write on `shard`, the shard its route names.
   */
  admit(tenant: string, shard: string, limit: number): Promise<Admission>
  /**
   * Records a write's LSN so every router's next read of the tenant waits for it. Awaited before the
   * write is acknowledged: a client that reads through another router right after must find it.
   */
  recordWrite(tenant: string, shard: string, lsn: bigint): Promise<void>
  /** The tenant's last write on `shard` as far as this router alone knows, without a round trip. */
  localLastWrite(tenant: string, shard: string): bigint | null
  /**
   * True when this router already refused the tenant in the current window: its requests are then
   * admitted before they run, so a tenant over its limit costs the shards nothing.
   */
  overLimit(tenant: string): boolean
}

// One round trip for every admission asked for in one turn of the event loop: for each tenant (a pair
// of keys), count the request in the current window and read the tenant's last write LSN.
const ADMIT = `
local replies = {}
for i = 1, #KEYS, 2 do
  local count = redis.call('INCR', KEYS[i])
  if count == 1 then redis.call('EXPIRE', KEYS[i], ARGV[1]) end
  replies[#replies + 1] = count
  replies[#replies + 1] = redis.call('GET', KEYS[i + 1]) or false
end
return replies`

/** Admissions sent in one script call at most; more wait for the next call. */
const MAX_BATCH = 128

// Keep the highest LSN: two routers may record writes of the same tenant out of order.
const RECORD = `
local current = redis.call('GET', KEYS[1])
if not current or current < ARGV[1] then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) end
return 1`

/**
 * Per-tenant rate limits (fixed hourly windows, INCR is atomic so exactly `limit` requests pass in a
 * window however many routers run) and the last-write LSN, kept per tenant and shard: a position in one
 * server's WAL says nothing about another's, and after a move the tenant's writes are on the new shard
 * (whose replicas serve it only once they have replayed the cutover). Without Redis both fall back to this
 * process: limits then count per router instance, and read-your-writes holds per instance.
 */
export function createAdmission(redis: Redis | undefined, lsnTtlSeconds = 600): AdmissionControl {
  const localCounts = new Map<string, number>()
  /** Keyed by `keys.lastWrite(tenant, shard)`. */
  const localLsn = new Map<string, bigint>()
  /** Tenants refused in a window, with that window. */
  const refused = new Map<string, number>()
  let localWindow = 0
  const currentWindow = () => Math.floor(Date.now() / 1000 / WINDOW_SECONDS)
  const shared = redis ? createAdmitBatches(redis) : undefined

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
    async admit(tenant, shard, limit) {
      const now = Math.floor(Date.now() / 1000)
      const window = Math.floor(now / WINDOW_SECONDS)
      const resetSeconds = (window + 1) * WINDOW_SECONDS - now
      let count: number
      let sharedLsn: bigint | null = null
      try {
        if (!shared || redis?.status !== 'ready') throw new Error('redis not ready')
        const [n, lsn] = await shared(tenant, shard, window)
        count = n
        sharedLsn = lsn ? fromSortableLsn(lsn) : null
      } catch {
        count = localAdmit(tenant, window)
      }
      const local = localLsn.get(keys.lastWrite(tenant, shard)) ?? null
      const lastWriteLsn =
        sharedLsn === null ? local : local === null || sharedLsn > local ? sharedLsn : local
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
    localLastWrite: (tenant, shard) => localLsn.get(keys.lastWrite(tenant, shard)) ?? null,
    overLimit: (tenant) => refused.get(tenant) === currentWindow(),
    async recordWrite(tenant, shard, lsn) {
      const key = keys.lastWrite(tenant, shard)
      const known = localLsn.get(key)
      if (known === undefined || lsn > known) localLsn.set(key, lsn)
      if (redis?.status !== 'ready') return
      await runScript(redis, RECORD, [key], [sortableLsn(lsn), lsnTtlSeconds]).catch(() => {})
    },
  }
}

type AdmitReply = [count: number, lastWrite: string | null]

/**
 * Admissions asked for while the event loop turns are sent together, once the turn's microtasks are
 * done (setImmediate): one script call and one socket write for all of them, and a read's shard
 * pipeline has already gone out by then. At one request at a time that is one plain EVALSHA.
 */
function createAdmitBatches(redis: Redis) {
  interface Batch {
    keys: string[]
    waiters: { resolve(reply: AdmitReply): void; reject(error: unknown): void }[]
  }
  let batch: Batch = { keys: [], waiters: [] }
  let scheduled = false

  function flush() {
    scheduled = false
    const { keys: batchKeys, waiters } = batch
    batch = { keys: [], waiters: [] }
    if (waiters.length === 0) return
    runScript(redis, ADMIT, batchKeys, [WINDOW_SECONDS]).then(
      (reply) => {
        const values = reply as (number | string | null)[]
        for (const [i, waiter] of waiters.entries())
          waiter.resolve([values[2 * i] as number, (values[2 * i + 1] as string | null) ?? null])
      },
      (error: unknown) => {
        for (const waiter of waiters) waiter.reject(error)
      },
    )
  }

  return (tenant: string, shard: string, window: number) =>
    new Promise<AdmitReply>((resolve, reject) => {
      batch.keys.push(keys.rate(tenant, window), keys.lastWrite(tenant, shard))
      batch.waiters.push({ resolve, reject })
      if (batch.waiters.length >= MAX_BATCH) flush()
      else if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    })
}
