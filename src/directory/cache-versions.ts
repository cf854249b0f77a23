import { randomUUID } from 'node:crypto'
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

/** The versions hash's generation field: random, set when the hash is made, part of every answer's key. */
export const GENERATION_FIELD = 'gen'

/**
 * The one way versions go up (a router's write, a cutover, set-limits): the given fields by one, and
 * the hash's generation set if the hash is new, so counters that restart never rebuild an old key.
 * `applied` when Redis applied every command, with the cache epoch it had then; never throws.
 */
export async function bumpVersions(
  redis: Redis,
  tenant: string,
  fields: readonly string[],
): Promise<{ applied: boolean; epoch: string | null }> {
  const key = versionsKey(tenant)
  const pipeline = redis.pipeline().hsetnx(key, GENERATION_FIELD, randomUUID())
  for (const field of fields) pipeline.hincrby(key, field, 1)
  const replies = await pipeline
    .expire(key, VERSIONS_TTL_SECONDS)
    .get(CACHE_EPOCH_KEY)
    .exec()
    .catch(() => null)
  const applied = Boolean(replies) && !replies?.some(([error]) => error)
  return { applied, epoch: (replies?.at(-1)?.[1] as string | null | undefined) ?? null }
}

/** Forgets a tenant's cached answers (its namespace version goes up). True when Redis took it; never throws. */
export async function bumpTenantCache(redis: Redis, tenant: string): Promise<boolean> {
  return (await bumpVersions(redis, tenant, [NAMESPACE_FIELD])).applied
}

/**
 * Forgets every tenant's cached answers (after a migration or a partition change altered rows or tables
 * outside the routers). True when Redis took it; never throws.
 */
export async function bumpCacheEpoch(redis: Redis): Promise<boolean> {
  return redis
    .incr(CACHE_EPOCH_KEY)
    .then(() => true)
    .catch(() => false)
}
