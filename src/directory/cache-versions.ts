import { randomUUID } from 'node:crypto'
import { type Redis, runScript } from './redis.ts'

/**
 * The read cache's versions in Redis (the router's src/router/cache keys answers by them). They live
 * here because writes that bypass the routers must bump them too: a move's cutover and `tenants
 * set-limits` (publishInvalidation), `migrate` and partition changes (the epoch).
 */
export const CACHE_PREFIX = 'switchyard:cache:'
/** Every cached answer's key holds it: a new one forgets every tenant's answers. A random token, never a counter. */
export const CACHE_EPOCH_KEY = `${CACHE_PREFIX}epoch`
/** The version field of a tenant's whole namespace (table fields are `t:<table>`, so no table is it). */
export const NAMESPACE_FIELD = '*'
/** Longer than any answer lives: a versions hash that expires takes no live answer's key with it. */
export const VERSIONS_TTL_SECONDS = 8 * 86_400
/**
 * How long answers are kept only when read on a primary, where nothing the versions may not show is
 * known to have reached a replica: a versions hash made anew, a migration a shard's LSN was not read
 * for, a Redis that restarted or failed over.
 */
export const PRIMARY_ONLY_MS = 10 * 60_000

export const versionsKey = (tenant: string) => `${CACHE_PREFIX}${tenant}:v`
/** Per shard: the LSN a migration or partition change left its primary at (`lsn`), or `primary` until. */
export const shardFloorKey = (shard: string) => `${CACHE_PREFIX}shard:${shard}`
/** A table's version field. */
export const tableField = (table: string) => `t:${table}`
/** The tenant's last bumped write's LSN on `shard`: a replica's answer is kept only once it replayed it. */
export const lsnField = (shard: string) => `lsn:${shard}`
/** Until when (Redis time, ms) answers of the tenant are kept only from a primary. */
export const PRIMARY_FIELD = 'primary'
/** The versions hash's generation field: random, set when the hash is made, part of every answer's key. */
export const GENERATION_FIELD = 'gen'

/** Lua: Redis's clock in milliseconds as `now` (one clock for every router's expiries and windows). */
export const NOW_MS = `
local t = redis.call('time')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
`

/**
 * Makes the hash if it is gone: a new random generation, so counters that restart never rebuild an old
 * key. HSETNX runs on every call: when Redis refuses writes (out of memory) the caller fails closed.
 * Leaves the time (ms, Redis's clock) in \`now\`.
 */
export const ENSURE_HASH = `
${NOW_MS}if redis.call('hsetnx', KEYS[1], '${GENERATION_FIELD}', ARGV[1]) == 1 then
  redis.call('expire', KEYS[1], ${VERSIONS_TTL_SECONDS})
end
`

/**
 * The given fields up by one; the write's LSN on its shard kept if higher, or (ARGV[2] '!': a write
 * whose commit LSN is unknown) answers kept only from a primary for a while. Returns the epoch.
 */
const BUMP = `${ENSURE_HASH}
for i = 4, #ARGV do redis.call('hincrby', KEYS[1], ARGV[i], 1) end
if ARGV[2] == '!' then
  redis.call('hset', KEYS[1], '${PRIMARY_FIELD}', now + ${PRIMARY_ONLY_MS})
elseif ARGV[2] ~= '' and tonumber(ARGV[3]) > tonumber(redis.call('hget', KEYS[1], ARGV[2]) or '0') then
  redis.call('hset', KEYS[1], ARGV[2], ARGV[3])
end
redis.call('expire', KEYS[1], ${VERSIONS_TTL_SECONDS})
return redis.call('get', KEYS[2])
`

/**
 * The one way versions go up (a router's write, a cutover, set-limits): the given fields by one, and
 * the write's commit LSN on its shard (`lsn`) recorded in the same script, so an answer read on a
 * replica is only kept once that replica replayed every write the versions count. `applied` when Redis
 * ran it all, with the cache epoch it had then; never throws.
 */
export async function bumpVersions(
  redis: Redis,
  tenant: string,
  fields: readonly string[],
  /** The write's commit LSN on its shard; `unknown`: it may have committed, where is not known. */
  lsn?: { shard: string; lsn: bigint } | 'unknown',
): Promise<{ applied: boolean; epoch: string | null }> {
  const [field, value] =
    lsn === undefined ? ['', '0'] : lsn === 'unknown' ? ['!', '0'] : [lsnField(lsn.shard), lsn.lsn.toString()]
  try {
    const epoch = await runScript(
      redis,
      BUMP,
      [versionsKey(tenant), CACHE_EPOCH_KEY],
      [randomUUID(), field, value, ...fields],
    )
    return { applied: true, epoch: (epoch as string | null) ?? null }
  } catch {
    return { applied: false, epoch: null }
  }
}

/**
 * Forgets a tenant's cached answers (its namespace version goes up), after its rows changed outside the
 * routers at an LSN not known here: answers are kept only from a primary for a while. True when Redis
 * took it; never throws.
 */
export async function bumpTenantCache(redis: Redis, tenant: string): Promise<boolean> {
  return (await bumpVersions(redis, tenant, [NAMESPACE_FIELD], 'unknown')).applied
}

/** A shard's floor: the LSN given (kept if higher), or, with none known, answers from its primary only for a while. */
const RAISE_FLOOR = `
${NOW_MS}if ARGV[1] == '' then
  redis.call('hset', KEYS[1], '${PRIMARY_FIELD}', now + ${PRIMARY_ONLY_MS})
elseif tonumber(ARGV[1]) > tonumber(redis.call('hget', KEYS[1], 'lsn') or '0') then
  redis.call('hset', KEYS[1], 'lsn', ARGV[1])
end
`

/**
 * Forgets every tenant's cached answers (after a migration or a partition change altered rows or tables
 * outside the routers): first each shard's floor (its primary's LSN after the change, `null` when it
 * could not be read), so no replica that has not replayed the change has its answers kept under the
 * new epoch; then a new random epoch. True when Redis took all of it; never throws.
 */
export async function bumpCacheEpoch(
  redis: Redis,
  floors: ReadonlyMap<string, bigint | null> = new Map(),
): Promise<boolean> {
  try {
    for (const [shard, lsn] of floors)
      await runScript(redis, RAISE_FLOOR, [shardFloorKey(shard)], [lsn === null ? '' : lsn.toString()])
    await redis.set(CACHE_EPOCH_KEY, randomUUID())
    return true
  } catch {
    return false
  }
}
