import { createHash, randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { Counter } from 'prom-client'
import type { Topology } from '../../config/topology.ts'
import {
  bumpVersions,
  CACHE_EPOCH_KEY,
  CACHE_PREFIX,
  ENSURE_HASH,
  GENERATION_FIELD,
  lsnField,
  NAMESPACE_FIELD,
  NOW_MS,
  PRIMARY_FIELD,
  shardFloorKey,
  tableField,
  versionsKey,
} from '../../directory/cache-versions.ts'
import { runScript } from '../../directory/redis.ts'
import type { CancelSignal } from '../../shard/wire/cancel.ts'
import type { Classified } from '../policy.ts'
import type { StatementResult } from '../result.ts'
import { createByteLru, decode, encode, entryOf, roughBytes } from './local.ts'
import { type CachePlan, touchedBy } from './plan.ts'
import { createOwedBumps, watchInstance } from './redis-state.ts'
import { createRelationsBook, type RelationsCatalog, type ShardRelations } from './relations.ts'

/** A cached answer: one statement's result and the node that first gave it. */
export interface CachedAnswer {
  result: StatementResult
  node: string
  role: 'primary' | 'replica'
}

/** A miss's run: the answer, and what the replica it was read on had replayed (null: the primary). */
export interface Ran {
  answer: CachedAnswer
  replayedLsn: bigint | null
}

/** Where a request's lookup stands: its key (versions included) once Redis gave the versions. */
export interface Lookup {
  key: string
  plan: CachePlan
  tenant: string
  /** The LSN a replica must have replayed for its answer to be kept: the tenant's last write, a migration. */
  floor: bigint
  /** Keep only an answer read on the primary (writes whose LSN is not known, a Redis that restarted). */
  primaryOnly: boolean
}

/** A write as the cache must know it: its shard, what it ran (null: anything) and its commit LSN. */
export interface Change {
  shard: string
  statements: readonly Classified[] | null
  /** Null: nothing committed (or nothing changed); `unknown`: it may have committed. */
  lsn: bigint | null | 'unknown'
}

export interface CacheCounters {
  hit(fields: readonly string[], bytes: number): void
  miss(fields: readonly string[]): void
  stored(fields: readonly string[], bytes: number): void
  evicted(bytes: number): void
  /** An answer not kept: over maxEntryBytes, over its tenant's Redis budget, or read where it may be old. */
  refused(reason: 'too_large' | 'over_budget' | 'replica_behind'): void
  /** A write's bump Redis did not take: other routers may serve older answers until it is made. */
  bumpFailed(): void
}

/**
 * Read answers per tenant in Redis, with a small process-local copy in front (bounded in bytes). An
 * answer's key holds the tenant, the statement, its parameters and the version of every table tree it
 * read (and the tenant's namespace version, a global epoch, the Redis instance): a write bumps its
 * versions before it is acknowledged, so any read after it computes another key and misses, through
 * any router. Nothing is ever invalidated by deleting: old keys are simply never asked for again and
 * expire. Without Redis (none configured, or not answering) nothing is cached and nothing fails.
 */
export function createAnswerCache(
  redis: Redis | undefined,
  config: Topology['router']['cache'],
  counters: CacheCounters,
  loadRelations: (shard: string) => Promise<RelationsCatalog>,
  options: { shards: readonly string[]; warn?: (message: string) => void },
) {
  const local = createByteLru(config.localBytes, counters.evicted)
  const inFlight = new Map<string, Promise<Ran>>()
  const book = createRelationsBook(loadRelations, config.dependencies, (message) => options.warn?.(message))
  /** Tenants whose last bump failed: not cached here until then (one small entry per such tenant). */
  const unsafeUntil = new Map<string, number>()
  const longestTtlMs = Math.max(config.maxAskedSeconds, ...Object.values(config.tables)) * 1000
  const ready = () => redis?.status === 'ready'
  const instance = watchInstance(redis, options.warn ?? (() => {}))
  const owed = createOwedBumps(redis, ready, (tenant) => unsafeUntil.delete(tenant), options.shards)

  return {
    /** The shard's relations as this router knows them (undefined: not yet read; reads not cached). */
    relations: (shard: string) => book.latest(shard),

    /**
     * The key of `statement` with `params` for `tenant` now: the versions read in one round trip.
     * Undefined when Redis cannot say, or says the catalog changed since `relations` were read (then the
     * read runs uncached).
     */
    async lookup(
      tenant: string,
      shard: string,
      relations: ShardRelations,
      plan: CachePlan,
      statement: { sql: string; wire?: unknown },
      params: unknown,
    ): Promise<Lookup | undefined> {
      const redisNow = instance.current()
      if (!redis || !ready() || !redisNow || (unsafeUntil.get(tenant) ?? 0) > Date.now()) return undefined
      try {
        const [epoch, now, tenantSide, shardSide] = (await runScript(
          redis,
          LOOKUP,
          [versionsKey(tenant), CACHE_EPOCH_KEY, shardFloorKey(shard)],
          [randomUUID(), randomUUID(), lsnField(shard), NAMESPACE_FIELD, ...plan.fields.map(tableField)],
        )) as [string, number, (string | null)[], (string | null)[]]
        if (epoch !== relations.epoch) {
          book.sawEpoch(shard, epoch)
          return undefined
        }
        const [generation, primaryUntil, tenantLsn, ...versions] = tenantSide
        const [shardLsn, shardPrimaryUntil] = shardSide
        const digest = createHash('sha256')
          .update(
            JSON.stringify([
              redisNow.id,
              epoch,
              generation,
              versions.map((version) => version ?? '0'),
              plan.fields,
              plan.ttlSeconds,
              statement.sql,
              statement.wire ?? null,
              params,
            ]),
          )
          .digest('base64url')
        const floor = [tenantLsn, shardLsn].reduce(
          (max, lsn) => (lsn && BigInt(lsn) > max ? BigInt(lsn) : max),
          0n,
        )
        const primaryOnly =
          Math.max(Number(primaryUntil ?? 0), Number(shardPrimaryUntil ?? 0)) > now ||
          redisNow.primaryOnlyUntil > Date.now()
        return { key: `${CACHE_PREFIX}${tenant}:a:${digest}`, plan, tenant, floor, primaryOnly }
      } catch {
        return undefined
      }
    },

    /**
     * The answer under `lookup.key`, from here or Redis; on a miss `run` computes it, once per key at a
     * time, and it is kept only if it was read where every write the versions count is visible. A
     * request waiting for another's run stops waiting at its own deadline (`signal`).
     */
    async answer(
      lookup: Lookup,
      run: () => Promise<Ran>,
      signal?: CancelSignal,
    ): Promise<{ answer: CachedAnswer; hit: boolean }> {
      const here = local.get(lookup.key)
      if (here && here.expiresAt > Date.now()) {
        const answer = decode(here.encoded)
        if (answer) {
          counters.hit(lookup.plan.fields, here.encoded.length)
          return { answer, hit: true }
        }
      }
      const stored = await fetch(lookup.key)
      if (stored) {
        local.set(lookup.key, stored.entry)
        counters.hit(lookup.plan.fields, stored.entry.encoded.length)
        return { answer: stored.answer, hit: true }
      }
      counters.miss(lookup.plan.fields)
      // Single flight: concurrent misses of one key wait for the first one's answer.
      const running = inFlight.get(lookup.key)
      if (running) {
        const shared = await untilAborted(running, signal).catch(() => undefined)
        if (shared) return { answer: shared.answer, hit: false }
      }
      const mine = run()
      inFlight.set(lookup.key, mine)
      try {
        const ran = await mine
        const visible =
          ran.answer.role === 'primary' ||
          (!lookup.primaryOnly && ran.replayedLsn !== null && ran.replayedLsn >= lookup.floor)
        if (visible) await store(lookup, ran.answer)
        else counters.refused('replica_behind')
        return { answer: ran.answer, hit: false }
      } finally {
        if (inFlight.get(lookup.key) === mine) inFlight.delete(lookup.key)
      }
    },

    /**
     * After a write committed and before it is acknowledged: the version fields its statements may
     * change go up, with its commit LSN (statements `null`, or a write the router cannot account for:
     * the tenant's whole namespace). Waits for Redis; never throws.
     */
    async bump(tenant: string, change: Change): Promise<void> {
      if (!redis) return
      const relations = change.statements ? book.latest(change.shard) : undefined
      const fields = change.statements && touchedBy(change.statements, relations)
      if (fields?.length === 0 && change.lsn !== 'unknown') return
      const lsn =
        change.lsn === 'unknown'
          ? 'unknown'
          : change.lsn === null
            ? undefined
            : { shard: change.shard, lsn: change.lsn }
      let bumped = ready()
        ? await bumpVersions(redis, tenant, fields ? fields.map(tableField) : [NAMESPACE_FIELD], lsn)
        : undefined
      if (bumped?.applied && fields && bumped.epoch !== relations?.epoch) {
        // Fields worked out from a catalog older than the last migration's: they may miss a table.
        book.sawEpoch(change.shard, bumped.epoch)
        bumped = await bumpVersions(redis, tenant, [NAMESPACE_FIELD])
      }
      if (bumped?.applied) return
      // A bump that did not happen (Redis away, out of memory): this router caches nothing of the tenant
      // until every answer that may predate the write has expired or the owed bump is made, which it
      // retries for the other routers. (Until then they may serve older answers: docs/CACHE.md.)
      // Logged once per tenant while it stays owed: a Redis outage must not flood the log per write.
      const known = (unsafeUntil.get(tenant) ?? 0) > Date.now()
      unsafeUntil.set(tenant, Date.now() + longestTtlMs)
      owed.add(tenant)
      counters.bumpFailed()
      if (!known)
        options.warn?.(`a read cache bump was not taken by Redis: owed for tenant ${tenant}, retried`)
    },
  }

  async function fetch(
    key: string,
  ): Promise<{ entry: ReturnType<typeof entryOf>; answer: CachedAnswer } | undefined> {
    if (!redis || !ready()) return undefined
    const replies = await redis
      .pipeline()
      .getBuffer(key)
      .pttl(key)
      .exec()
      .catch(() => null)
    const encoded = replies?.[0]?.[1] as Buffer | null | undefined
    const ttlMs = Number(replies?.[1]?.[1] ?? -1)
    if (!encoded || ttlMs <= 0) return undefined
    const answer = decode(encoded)
    return answer && { answer, entry: entryOf(key, encoded, Date.now() + ttlMs) }
  }

  async function store(lookup: Lookup, answer: CachedAnswer) {
    if (!redis || !ready()) return
    // Measured before encoding: a large answer is not copied once more only to be refused.
    if (roughBytes(answer.result) > config.maxEntryBytes) return counters.refused('too_large')
    const encoded = encode(answer)
    if (encoded.length > config.maxEntryBytes) return counters.refused('too_large')
    const ttlMs = lookup.plan.ttlSeconds * 1000
    const kept = await runScript(
      redis,
      STORE,
      [lookup.key, keptKey(lookup.tenant), keptBytesKey(lookup.tenant)],
      [encoded, ttlMs, config.tenantBytes],
    ).catch(() => 0)
    if (kept !== 1) return counters.refused('over_budget')
    local.set(lookup.key, entryOf(lookup.key, encoded, Date.now() + ttlMs))
    counters.stored(lookup.plan.fields, encoded.length)
  }
}

/**
 * The epoch (made if it is gone: a random token, never one that was), the tenant's versions (its
 * generation first, then until when answers come only from a primary, its last write's LSN on the
 * shard) and the shard's floor, in one round trip. A hash that is gone is made again (ENSURE_HASH).
 */
const LOOKUP = `${ENSURE_HASH}
local epoch = redis.call('get', KEYS[2])
if not epoch then
  epoch = ARGV[2]
  redis.call('set', KEYS[2], epoch)
end
return {
  epoch, now,
  redis.call('hmget', KEYS[1], '${GENERATION_FIELD}', '${PRIMARY_FIELD}', ARGV[3], unpack(ARGV, 4)),
  redis.call('hmget', KEYS[3], 'lsn', '${PRIMARY_FIELD}'),
}
`

/** A tenant's kept answers: a sorted set of `<bytes>:<key>` by when each expires, and their sum. */
const keptKey = (tenant: string) => `${CACHE_PREFIX}${tenant}:kept`
const keptBytesKey = (tenant: string) => `${CACHE_PREFIX}${tenant}:kept-bytes`

/**
 * What Redis spends on an answer besides its value and keys: the entry, its expiry, the set's node
 * (measured on Redis 7.0: about 1.5× the counted bytes for tiny answers with 96; the budget is close,
 * not exact).
 */
const ENTRY_OVERHEAD = 250

/**
 * Keeps an answer if its tenant's budget allows. The tenant's answers that expired are let go first, so
 * the budget counts live answers only: a tenant's answers never pass `tenantBytes`, and other tenants'
 * answers, rate-limit counters and LSNs keep their room. Counted: the value, its key twice (the entry
 * and the set's member) and an overhead. Returns 1 when kept.
 */
const STORE = `
${NOW_MS}local ttl = tonumber(ARGV[2])
local gone = redis.call('zrangebyscore', KEYS[2], '-inf', now)
if #gone > 0 then
  local freed = 0
  for _, member in ipairs(gone) do freed = freed + tonumber(string.match(member, '^(%d+):')) end
  redis.call('zremrangebyscore', KEYS[2], '-inf', now)
  redis.call('decrby', KEYS[3], freed)
end
local size = string.len(ARGV[1]) + 2 * string.len(KEYS[1]) + ${ENTRY_OVERHEAD}
local member = size .. ':' .. KEYS[1]
local used = tonumber(redis.call('get', KEYS[3]) or '0')
if redis.call('zscore', KEYS[2], member) then size = 0 end
if used + size > tonumber(ARGV[3]) then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'px', ttl)
redis.call('zadd', KEYS[2], 'GT', now + ttl, member)
if size > 0 then redis.call('incrby', KEYS[3], size) end
local last = redis.call('zrange', KEYS[2], -1, -1, 'withscores')
if last[2] then
  local left = tonumber(last[2]) - now
  redis.call('pexpire', KEYS[2], left)
  redis.call('pexpire', KEYS[3], left)
end
return 1
`

/** `promise`, or undefined once `signal` aborts (the waiter's own deadline), whichever comes first. */
function untilAborted<T>(promise: Promise<T>, signal: CancelSignal | undefined): Promise<T | undefined> {
  if (!signal) return promise
  if (signal.aborted) return Promise.resolve(undefined)
  return new Promise((resolve, reject) => {
    const onAbort = () => resolve(undefined)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort))
  })
}

export type AnswerCache = ReturnType<typeof createAnswerCache>

/**
 * The cache's counters on the router's metrics: per version field read, so a join counts for each of its
 * tables. Only `cache.tables` name a series (the rest are `other`): tenants choose what they read, and
 * every name would be a series for ever.
 */
export function cacheCounters(
  metrics: {
    cacheLookups: Counter<'table' | 'result'>
    cacheBytes: Counter<'table' | 'event'>
  },
  tables: Readonly<Record<string, number>>,
): CacheCounters {
  const each = (fields: readonly string[], count: (table: string) => void) => {
    for (const field of fields) count(Object.hasOwn(tables, field) ? field : 'other')
  }
  return {
    hit(fields, bytes) {
      each(fields, (table) => {
        metrics.cacheLookups.inc({ table, result: 'hit' })
        metrics.cacheBytes.inc({ table, event: 'served' }, bytes)
      })
    },
    miss: (fields) => each(fields, (table) => metrics.cacheLookups.inc({ table, result: 'miss' })),
    stored: (fields, bytes) =>
      each(fields, (table) => metrics.cacheBytes.inc({ table, event: 'stored' }, bytes)),
    evicted: (bytes) => metrics.cacheBytes.inc({ table: '', event: 'evicted' }, bytes),
    refused: (reason) => metrics.cacheLookups.inc({ table: '', result: reason }),
    bumpFailed: () => metrics.cacheLookups.inc({ table: '', result: 'bump_failed' }),
  }
}
