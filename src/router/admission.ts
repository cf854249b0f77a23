import { createHash } from 'node:crypto'
import { keys, RATE_WINDOW_SECONDS, type Redis, runScript } from '../directory/redis.ts'
import { SwitchyardError } from '../errors.ts'
import { fromSortableLsn, sortableLsn } from '../shard/lsn.ts'

const WINDOW_SECONDS = RATE_WINDOW_SECONDS

/**
 * What a tenant may send an hour, in the seed's units (issue 19): its `api_rate_limit` counts the
 * application's API requests, each of which may send several statements. A statement tagged with the API
 * request it serves (`x-switchyard-request`, or `switchyard.request` on the PostgreSQL port) counts that
 * request once, however many statements it sends; an untagged statement counts against `statements`.
 */
export interface Quota {
  /** Distinct API requests an hour (the tenant's api_rate_limit). */
  apiRequests: number
  /** Router requests an hour that name no API request (a statement, a batch, a block's statement). */
  statements: number
  /**
   * Router requests one API request may make before the rest count as naming none: without it a tenant
   * naming one id on everything would pay for one API request an hour and nothing else.
   */
  perApiRequest: number
  /** The API request the statement serves, as the application named it; absent: untagged. */
  request?: string | undefined
}

/** What an application's request id may be: 1 to 128 visible ASCII characters (a UUID, a trace id). */
const API_REQUEST_ID = /^[\x21-\x7e]{1,128}$/
/** The HTTP header that names the API request a tenant request serves. */
export const API_REQUEST_HEADER = 'x-switchyard-request'

/** A request id as `name` (a header, a session setting) gave it, or `invalid_input`. */
export function checkedApiRequest(value: string, name: string): string {
  if (!API_REQUEST_ID.test(value))
    throw new SwitchyardError(
      'invalid_input',
      `${name} must be 1 to 128 visible ASCII characters (the application's request id)`,
    )
  return value
}

/** The request id of an HTTP request's `x-switchyard-request`, or `invalid_input`; absent is fine. */
export const apiRequestHeader = (value: string | undefined): string | undefined =>
  value === undefined ? undefined : checkedApiRequest(value, API_REQUEST_HEADER)

/** The IETF draft's RateLimit headers of an admitted request (a refusal's are set where it is answered). */
export function rateHeaders(admission: Admission): Record<string, string> {
  return {
    'RateLimit-Limit': String(admission.limit),
    'RateLimit-Remaining': String(Math.max(0, admission.remaining)),
    'RateLimit-Reset': String(admission.resetSeconds),
  }
}

export interface Admission {
  /** The limit the request was counted against: API requests when it named one, else statements. */
  limit: number
  remaining: number
  /** Seconds until the window resets. */
  resetSeconds: number
  /** The tenant's last acknowledged write on the shard admitted for, as far as any router knows. */
  lastWriteLsn: bigint | null
}

export interface AdmissionControl {
  /**
   * Counts the request against the tenant's hourly quota (throws `rate_limited` past it) and reads the
   * tenant's last write on `shard`, the shard its route names. A request naming an API request already
   * counted this hour passes without counting again.
   */
  admit(tenant: string, shard: string, quota: Quota): Promise<Admission>
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

// One round trip for every admission asked for in one turn of the event loop. Per request, three keys
// (the window's API requests: a hash of id digest → router requests made; the window's count of requests
// naming none; the tenant's last write LSN on the shard) and four ARGV (the digest or '', the API request
// limit, the statement budget, the per-API-request cap). An API request already in the hash passes while
// under the cap (reply: kind 1, minus the hash's size); a new one joins while the hash is under the limit
// (kind 1, its size: past the limit it does not join and is refused), so the hash never outgrows the
// limit. Past the cap, and without an id, the request counts against the budget (kind 0, INCR). Atomic:
// exact across routers.
const ADMIT = `
local replies = {}
for i = 1, #KEYS, 3 do
  local base = (i - 1) / 3 * 4 + 1
  local member, limit, perRequest = ARGV[base + 1], tonumber(ARGV[base + 2]), tonumber(ARGV[base + 4])
  local kind, count = 0, 0
  if member ~= '' then
    local used = redis.call('HGET', KEYS[i], member)
    if not used then
      kind = 1
      count = redis.call('HLEN', KEYS[i]) + 1
      if count <= limit then
        redis.call('HSET', KEYS[i], member, 1)
        if count == 1 then redis.call('EXPIRE', KEYS[i], ARGV[1]) end
      end
    elseif tonumber(used) < perRequest then
      redis.call('HINCRBY', KEYS[i], member, 1)
      kind = 1
      count = -redis.call('HLEN', KEYS[i])
    end
  end
  if kind == 0 then
    count = redis.call('INCR', KEYS[i + 1])
    if count == 1 then redis.call('EXPIRE', KEYS[i + 1], ARGV[1]) end
  end
  replies[#replies + 1] = kind
  replies[#replies + 1] = count
  replies[#replies + 1] = redis.call('GET', KEYS[i + 2]) or false
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
export function createAdmission(
  redis: Redis | undefined,
  options: {
    lsnTtlSeconds?: number
    /** Each admission asked for, refused or not (the busiest-tenants gauge counts them). */
    onAdmit?: (tenant: string) => void
  } = {},
): AdmissionControl {
  const { lsnTtlSeconds = 600, onAdmit } = options
  const localCounts = new Map<string, number>()
  /** API requests counted per tenant (digest → router requests made), at most its limit each. */
  const localRequests = new Map<string, Map<string, number>>()
  /** Keyed by `keys.lastWrite(tenant, shard)`. */
  const localLsn = new Map<string, bigint>()
  /** Tenants refused in a window, with that window. */
  const refused = new Map<string, number>()
  let localWindow = 0
  const currentWindow = () => Math.floor(Date.now() / 1000 / WINDOW_SECONDS)
  const shared = redis ? createAdmitBatches(redis) : undefined

  /** The ADMIT script's reply for this process alone. */
  function localAdmit(tenant: string, window: number, member: string, quota: Quota): AdmitCount {
    if (window !== localWindow) {
      localCounts.clear()
      localRequests.clear()
      localWindow = window
    }
    if (member !== '') {
      const counted = localRequests.get(tenant) ?? new Map<string, number>()
      localRequests.set(tenant, counted)
      const used = counted.get(member)
      if (used === undefined) {
        const count = counted.size + 1
        if (count <= quota.apiRequests) counted.set(member, 1)
        return { apiRequest: true, count }
      }
      if (used < quota.perApiRequest) {
        counted.set(member, used + 1)
        return { apiRequest: true, count: -counted.size }
      }
    }
    const count = (localCounts.get(tenant) ?? 0) + 1
    localCounts.set(tenant, count)
    return { apiRequest: false, count }
  }

  return {
    async admit(tenant, shard, quota) {
      onAdmit?.(tenant)
      const now = Math.floor(Date.now() / 1000)
      const window = Math.floor(now / WINDOW_SECONDS)
      const resetSeconds = (window + 1) * WINDOW_SECONDS - now
      const member = quota.request === undefined ? '' : requestDigest(quota.request)
      let counted: AdmitCount
      let sharedLsn: bigint | null = null
      try {
        if (!shared || redis?.status !== 'ready') throw new Error('redis not ready')
        const [reply, lsn] = await shared(tenant, shard, window, member, quota)
        counted = reply
        sharedLsn = lsn ? fromSortableLsn(lsn) : null
      } catch {
        counted = localAdmit(tenant, window, member, quota)
      }
      const { apiRequest, count } = counted
      const limit = apiRequest ? quota.apiRequests : quota.statements
      const local = localLsn.get(keys.lastWrite(tenant, shard)) ?? null
      const lastWriteLsn =
        sharedLsn === null ? local : local === null || sharedLsn > local ? sharedLsn : local
      // Negative: an API request already counted, one of -count this hour.
      if (count > limit) {
        refused.set(tenant, window)
        throw new SwitchyardError(
          'rate_limited',
          apiRequest
            ? `tenant ${tenant} is over its limit of ${limit} API requests per hour`
            : `tenant ${tenant} is over its budget of ${limit} requests per hour that name no API request (x-switchyard-request), or more than ${quota.perApiRequest} of one`,
          { limit, resetSeconds },
        )
      }
      if (refused.get(tenant) === window) refused.delete(tenant)
      return { limit, remaining: limit - Math.abs(count), resetSeconds, lastWriteLsn }
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

/**
 * What is kept of an application's request id: a digest of 12 bytes, so a set of a tenant's limit of them
 * stays small whatever the ids are, and the ids themselves (which may name users) are never stored.
 */
const requestDigest = (request: string) =>
  createHash('sha256').update(request).digest().subarray(0, 12).toString('base64url')

/** What a request was counted as: an API request (count: the hour's; negative: one already counted), or not. */
interface AdmitCount {
  apiRequest: boolean
  count: number
}

type AdmitReply = [counted: AdmitCount, lastWrite: string | null]

/**
 * Admissions asked for while the event loop turns are sent together, once the turn's microtasks are
 * done (setImmediate): one script call and one socket write for all of them, and a read's shard
 * pipeline has already gone out by then. At one request at a time that is one plain EVALSHA.
 */
function createAdmitBatches(redis: Redis) {
  interface Batch {
    keys: string[]
    args: (string | number)[]
    waiters: { resolve(reply: AdmitReply): void; reject(error: unknown): void }[]
  }
  let batch: Batch = { keys: [], args: [WINDOW_SECONDS], waiters: [] }
  let scheduled = false

  function flush() {
    scheduled = false
    const { keys: batchKeys, args, waiters } = batch
    batch = { keys: [], args: [WINDOW_SECONDS], waiters: [] }
    if (waiters.length === 0) return
    runScript(redis, ADMIT, batchKeys, args).then(
      (reply) => {
        const values = reply as (number | string | null)[]
        for (const [i, waiter] of waiters.entries())
          waiter.resolve([
            { apiRequest: values[3 * i] === 1, count: values[3 * i + 1] as number },
            (values[3 * i + 2] as string | null) ?? null,
          ])
      },
      (error: unknown) => {
        for (const waiter of waiters) waiter.reject(error)
      },
    )
  }

  return (tenant: string, shard: string, window: number, member: string, quota: Quota) =>
    new Promise<AdmitReply>((resolve, reject) => {
      batch.keys.push(
        keys.apiRequests(tenant, window),
        keys.rate(tenant, window),
        keys.lastWrite(tenant, shard),
      )
      batch.args.push(member, quota.apiRequests, quota.statements, quota.perApiRequest)
      batch.waiters.push({ resolve, reject })
      if (batch.waiters.length >= MAX_BATCH) flush()
      else if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    })
}
