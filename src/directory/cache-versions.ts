import type { Redis } from './redis.ts'

/**
 * The read cache's versions in Redis (the router's src/router/cache keys answers by them). They live
 * here because writes that bypass the routers must bump them too: a move's cutover and `tenants
 * set-limits` (publishInvalidation), `migrate` (the epoch).
 */
export const CACHE_PREFIX = 'switchyard:cache:'
/** Every cached answer's key holds it: bumping it forgets every tenant's answers. */
export const CACHE_EPOCH_KEY = `${CACHE_PREFIX}epoch`
/** The version field of a tenant's whole namespace (next to one field per table). */
export const NAMESPACE_FIELD = '*'
/** Longer than any answer lives: a versions hash that expires takes no live answer's key with it. */
export const VERSIONS_TTL_SECONDS = 8 * 86_400

export const versionsKey = (tenant: string) => `${CACHE_PREFIX}${tenant}:v`

/** Forgets a tenant's cached answers (its namespace version goes up). Never throws. */
export async function bumpTenantCache(redis: Redis, tenant: string): Promise<void> {
  await redis
    .pipeline()
    .hincrby(versionsKey(tenant), NAMESPACE_FIELD, 1)
    .expire(versionsKey(tenant), VERSIONS_TTL_SECONDS)
    .exec()
    .catch(() => undefined)
}

/** Forgets every tenant's cached answers (after a migration changed rows outside the routers). Never throws. */
export async function bumpCacheEpoch(redis: Redis): Promise<void> {
  await redis.incr(CACHE_EPOCH_KEY).catch(() => undefined)
}
