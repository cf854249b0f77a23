import { createHash, randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { Counter } from 'prom-client'
import type { Topology } from '../../config/topology.ts'
import {
  bumpCacheEpoch,
  bumpVersions,
  CACHE_EPOCH_KEY,
  CACHE_PREFIX,
  GENERATION_FIELD,
  NAMESPACE_FIELD,
  VERSIONS_TTL_SECONDS,
  versionsKey,
} from '../../directory/cache-versions.ts'
import type { CancelSignal } from '../../shard/wire/cancel.ts'
import type { Classified } from '../policy.ts'
import type { StatementResult } from '../result.ts'
import { type CachePlan, touchedBy } from './plan.ts'
import { createRelationsBook, type RelationsCatalog, type ShardRelations } from './relations.ts'

/** A cached answer: one statement's result and the node that first gave it. */
export interface CachedAnswer {
  result: StatementResult
  node: string
  role: 'primary' | 'replica'
}

/** Where a request's lookup stands: its key (versions included) once Redis gave the versions. */
export interface Lookup {
  key: string
  plan: CachePlan
  tenant: string
}

export interface CacheCounters {
  hit(fields: readonly string[], bytes: number): void
  miss(fields: readonly string[]): void
  stored(fields: readonly string[], bytes: number): void
  evicted(bytes: number): void
  /** An answer not kept: over maxEntryBytes, or over its tenant's Redis budget. */
  refused(reason: 'entry' | 'tenant'): void
}

/**
 * Read answers per tenant in Redis, with a small process-local copy in front (bounded in bytes). An
 * answer's key holds the tenant, the statement, its parameters and the version of every table it read
 * (and the tenant's namespace version, and a global epoch): a write bumps its tables' versions before
 * it is acknowledged, so any read after it computes another key and misses — through any router. Nothing
 * is ever invalidated by deleting: old keys are simply never asked for again and expire.
 * Without Redis (none configured, or not answering) nothing is cached and nothing fails.
 */
export function createAnswerCache(
  redis: Redis | undefined,
  config: Topology['router']['cache'],
  counters: CacheCounters,
  loadRelations: (shard: string) => Promise<RelationsCatalog>,
) {
  const local = createByteLru(config.localBytes, counters.evicted)
  const inFlight = new Map<string, Promise<CachedAnswer | undefined>>()
  const book = createRelationsBook(loadRelations, config.dependencies)
  /** Tenants whose last bump failed: not cached here until then (one small entry per such tenant). */
  const unsafeUntil = new Map<string, number>()
  const longestTtlMs = Math.max(config.maxAskedSeconds, ...Object.values(config.tables)) * 1000
  const ready = () => redis?.status === 'ready'
  const owed = createOwedBumps(redis, ready)

  return {
    /** The shard's relations as this router knows them (undefined: not yet read; reads not cached). */
    relations: (shard: string) => book.latest(shard),

    /**
     * The key of `statement` with `params` for `tenant` now: the fields' versions read in one round
     * trip. Undefined when Redis cannot say, or says the catalog changed since `relations` were read
     * (then the read runs uncached).
     */
    async lookup(
      tenant: string,
      shard: string,
      relations: ShardRelations,
      plan: CachePlan,
      statement: { sql: string; wire?: unknown },
      params: unknown,
    ): Promise<Lookup | undefined> {
      if (!redis || !ready() || (unsafeUntil.get(tenant) ?? 0) > Date.now()) return undefined
      try {
        const reply = (await redis.eval(
          LOOKUP,
          2,
          versionsKey(tenant),
          CACHE_EPOCH_KEY,
          randomUUID(),
          VERSIONS_TTL_SECONDS,
          NAMESPACE_FIELD,
          ...plan.fields,
        )) as [string | null, (string | null)[]]
        const [epoch, fields] = reply
        if (epoch !== relations.epoch) {
          book.sawEpoch(shard, epoch)
          return undefined
        }
        // The generation (first) is never null: the script made the hash if it was gone.
        const versions = fields.map((version) => version ?? '0')
        const digest = createHash('sha256')
          .update(
            JSON.stringify([epoch, versions, plan.fields, statement.sql, statement.wire ?? null, params]),
          )
          .digest('base64url')
        return { key: `${CACHE_PREFIX}${tenant}:a:${digest}`, plan, tenant }
      } catch {
        return undefined
      }
    },

    /**
     * The answer under `lookup.key`, from here or Redis; on a miss `run` computes it, once per key at a
     * time. A request waiting for another's run stops waiting at its own deadline (`signal`).
     */
    async answer(
      lookup: Lookup,
      run: () => Promise<CachedAnswer>,
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
        if (shared) return { answer: shared, hit: false }
      }
      const mine = run()
      inFlight.set(lookup.key, mine)
      try {
        const answer = await mine
        await store(lookup, answer)
        return { answer, hit: false }
      } finally {
        if (inFlight.get(lookup.key) === mine) inFlight.delete(lookup.key)
      }
    },

    /**
     * After a write committed and before it is acknowledged: the version fields its statements may
     * change on its shard go up (`null`, or a write the router cannot account for: the tenant's whole
     * namespace). Waits for Redis; never throws.
     */
    async bump(
      tenant: string,
      write: { shard: string; statements: readonly Classified[] } | null,
    ): Promise<void> {
      if (!redis) return
      const relations = write ? book.latest(write.shard) : undefined
      const fields = write && touchedBy(write.statements, relations)
      if (fields?.length === 0) return
      let bumped = ready() ? await bumpVersions(redis, tenant, fields ?? [NAMESPACE_FIELD]) : undefined
      if (bumped?.applied && fields && bumped.epoch !== relations?.epoch) {
        // Fields worked out from a catalog older than the last migration's: they may miss a table.
        if (write) book.sawEpoch(write.shard, bumped.epoch)
        bumped = await bumpVersions(redis, tenant, [NAMESPACE_FIELD])
      }
      if (bumped?.applied) return
      // A bump that did not happen (Redis away, out of memory): this router caches nothing of the tenant
      // until every answer that may predate the write has expired, and bumps its namespace as soon as
      // Redis takes it, for the other routers. (Until then they may serve older answers: docs/CACHE.md.)
      unsafeUntil.set(tenant, Date.now() + longestTtlMs)
      owed.add(tenant)
    },
  }

  async function fetch(key: string): Promise<{ entry: Entry; answer: CachedAnswer } | undefined> {
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
    return answer && { answer, entry: { encoded, expiresAt: Date.now() + ttlMs } }
  }

  async function store(lookup: Lookup, answer: CachedAnswer) {
    if (!redis || !ready()) return
    // Measured before encoding: a large answer is not copied once more only to be refused.
    if (roughBytes(answer.result) > config.maxEntryBytes) return counters.refused('entry')
    const encoded = encode(answer)
    if (encoded.length > config.maxEntryBytes) return counters.refused('entry')
    const ttlMs = lookup.plan.ttlSeconds * 1000
    const kept = await redis
      .eval(STORE, 2, lookup.key, budgetKey(lookup.tenant), encoded, ttlMs, config.tenantBytes)
      .catch(() => 0)
    if (kept !== 1) return counters.refused('tenant')
    local.set(lookup.key, { encoded, expiresAt: Date.now() + ttlMs })
    counters.stored(lookup.plan.fields, encoded.length)
  }
}

/** A tenant's answers' bytes kept in Redis within the longest TTL they asked for (its budget). */
const budgetKey = (tenant: string) => `${CACHE_PREFIX}${tenant}:bytes`

/**
 * Keeps an answer if its tenant's budget allows: the tenant's counter counts every byte kept until the
 * longest TTL among them passes (an answer no longer asked for still counts until then), so a tenant's
 * live answers never pass `tenantBytes` and other tenants' rate-limit counters and LSNs keep their room.
 */
const STORE = `
local size = string.len(ARGV[1])
local ttl = tonumber(ARGV[2])
local used = redis.call('incrby', KEYS[2], size)
local kept = 0
if used > tonumber(ARGV[3]) then
  redis.call('decrby', KEYS[2], size)
else
  redis.call('set', KEYS[1], ARGV[1], 'px', ttl)
  kept = 1
end
if redis.call('pttl', KEYS[2]) < ttl then redis.call('pexpire', KEYS[2], ttl) end
return kept
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

/** A lower bound of an answer's encoded size, cheap: its values' and raw rows' lengths. */
function roughBytes(result: StatementResult): number {
  let bytes = 0
  for (const row of result.raw ?? []) bytes += row.length
  for (const row of result.rows) for (const value of row) bytes += value?.length ?? 0
  return bytes
}

/** Namespace bumps that failed, made again once Redis takes them (a bounded set; past it, the epoch). */
const OWED_MAX = 10_000
const OWED_RETRY_MS = 500

function createOwedBumps(redis: Redis | undefined, ready: () => boolean) {
  const tenants = new Set<string>()
  let epochOwed = false
  let timer: NodeJS.Timeout | undefined
  const retry = async () => {
    timer = undefined
    if (redis && ready()) {
      if (epochOwed && (await bumpCacheEpoch(redis))) epochOwed = false
      for (const tenant of [...tenants]) {
        if ((await bumpVersions(redis, tenant, [NAMESPACE_FIELD])).applied) tenants.delete(tenant)
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
    refused: (reason) =>
      metrics.cacheLookups.inc({ table: '', result: reason === 'entry' ? 'too_large' : 'over_budget' }),
  }
}

/**
 * The epoch and the tenant's versions (its generation first), in one round trip. A hash that is gone
 * (expired after 8 days without a bump, evicted, lost in a failover) is made again with a new random
 * generation, so counters that restart at 0 never rebuild an old answer's key.
 */
const LOOKUP = `
if redis.call('exists', KEYS[1]) == 0 then
  redis.call('hset', KEYS[1], '${GENERATION_FIELD}', ARGV[1])
  redis.call('expire', KEYS[1], ARGV[2])
end
return { redis.call('get', KEYS[2]), redis.call('hmget', KEYS[1], '${GENERATION_FIELD}', unpack(ARGV, 3)) }
`

/** The local copy keeps the encoded answer: its bytes are what it counts, decoded on each hit. */
interface Entry {
  encoded: Buffer
  /** When it leaves Redis (Date.now() milliseconds): the local copy goes then too. */
  expiresAt: number
}

/** JSON, with the PostgreSQL front end's raw DataRow bodies as base64. */
function encode(answer: CachedAnswer): Buffer {
  const { raw, ...result } = answer.result
  return Buffer.from(
    JSON.stringify({ ...answer, result, raw: raw?.map((row) => row.toString('base64')) ?? null }),
  )
}

function decode(bytes: Buffer): CachedAnswer | undefined {
  try {
    const parsed = JSON.parse(bytes.toString()) as CachedAnswer & { raw: string[] | null }
    const { raw, ...answer } = parsed
    if (raw) answer.result.raw = raw.map((row) => Buffer.from(row, 'base64'))
    return answer
  } catch {
    return undefined
  }
}

/** Least recently used out first once the entries' bytes pass `maxBytes` (a Map keeps insertion order). */
function createByteLru(maxBytes: number, evicted: (bytes: number) => void) {
  const entries = new Map<string, Entry>()
  let bytes = 0
  return {
    get(key: string): Entry | undefined {
      const entry = entries.get(key)
      if (entry) {
        entries.delete(key)
        entries.set(key, entry)
      }
      return entry
    },
    set(key: string, entry: Entry) {
      if (entry.encoded.length > maxBytes) return
      const old = entries.get(key)
      if (old) {
        bytes -= old.encoded.length
        entries.delete(key)
      }
      entries.set(key, entry)
      bytes += entry.encoded.length
      for (const [oldest, value] of entries) {
        if (bytes <= maxBytes) break
        entries.delete(oldest)
        bytes -= value.encoded.length
        evicted(value.encoded.length)
      }
    },
  }
}
