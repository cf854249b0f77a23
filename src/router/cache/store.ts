import { createHash, randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { Counter } from 'prom-client'
import type { Topology } from '../../config/topology.ts'
import {
  bumpVersions,
  CACHE_EPOCH_KEY,
  CACHE_PREFIX,
  GENERATION_FIELD,
  NAMESPACE_FIELD,
  VERSIONS_TTL_SECONDS,
  versionsKey,
} from '../../directory/cache-versions.ts'
import type { StatementResult } from '../result.ts'
import type { CachePlan } from './plan.ts'

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
}

export interface CacheCounters {
  hit(tables: readonly string[], bytes: number): void
  miss(tables: readonly string[]): void
  stored(tables: readonly string[], bytes: number): void
  evicted(bytes: number): void
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
) {
  const local = createByteLru(config.localBytes, counters.evicted)
  const inFlight = new Map<string, Promise<CachedAnswer | undefined>>()
  /** Tenants whose last bump failed: not cached here until then (one small entry per such tenant). */
  const unsafeUntil = new Map<string, number>()
  const longestTtlMs = Math.max(config.maxAskedSeconds, ...Object.values(config.tables)) * 1000
  const ready = () => redis?.status === 'ready'

  return {
    /**
     * The key of `statement` with `params` for `tenant` now: the tables' versions read in one round
     * trip. Undefined when Redis cannot say (then the read runs uncached).
     */
    async lookup(
      tenant: string,
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
          ...plan.tables,
        )) as [string | null, (string | null)[]]
        const [epoch, fields] = reply
        // The generation (first) is never null: the script made the hash if it was gone.
        const versions = fields.map((version) => version ?? '0')
        const digest = createHash('sha256')
          .update(
            JSON.stringify([epoch, versions, plan.tables, statement.sql, statement.wire ?? null, params]),
          )
          .digest('base64url')
        return { key: `${CACHE_PREFIX}${tenant}:a:${digest}`, plan }
      } catch {
        return undefined
      }
    },

    /** The answer under `lookup.key`, from here or Redis; on a miss `run` computes it, once per key at a time. */
    async answer(
      lookup: Lookup,
      run: () => Promise<CachedAnswer>,
    ): Promise<{ answer: CachedAnswer; hit: boolean }> {
      const here = local.get(lookup.key)
      if (here && here.expiresAt > Date.now()) {
        counters.hit(lookup.plan.tables, here.bytes)
        return { answer: here.answer, hit: true }
      }
      const stored = await fetch(lookup.key)
      if (stored) {
        local.set(lookup.key, stored)
        counters.hit(lookup.plan.tables, stored.bytes)
        return { answer: stored.answer, hit: true }
      }
      counters.miss(lookup.plan.tables)
      // Single flight: concurrent misses of one key wait for the first one's answer.
      const running = inFlight.get(lookup.key)
      if (running) {
        const shared = await running.catch(() => undefined)
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
     * After a write committed and before it is acknowledged: its tables' versions go up (null: the
     * tenant's whole namespace, for a write the router cannot see into). Waits for Redis; never throws.
     */
    async bump(tenant: string, tables: readonly string[] | null): Promise<void> {
      if (!redis || (tables && tables.length === 0)) return
      const bumped = ready() && (await bumpVersions(redis, tenant, tables ?? [NAMESPACE_FIELD]))
      // A bump that did not happen (Redis away, out of memory): this router caches nothing of the tenant
      // until every answer that may predate the write has expired. (Other routers cannot know: docs/CACHE.md.)
      if (!bumped) unsafeUntil.set(tenant, Date.now() + longestTtlMs)
    },
  }

  async function fetch(key: string): Promise<Entry | undefined> {
    if (!redis || !ready()) return undefined
    const replies = await redis
      .pipeline()
      .getBuffer(key)
      .pttl(key)
      .exec()
      .catch(() => null)
    const raw = replies?.[0]?.[1] as Buffer | null | undefined
    const ttlMs = Number(replies?.[1]?.[1] ?? -1)
    if (!raw || ttlMs <= 0) return undefined
    const answer = decode(raw)
    return answer && { answer, bytes: raw.length, expiresAt: Date.now() + ttlMs }
  }

  async function store(lookup: Lookup, answer: CachedAnswer) {
    const encoded = encode(answer)
    if (encoded.length > config.maxEntryBytes || !redis || !ready()) return
    local.set(lookup.key, {
      answer,
      bytes: encoded.length,
      expiresAt: Date.now() + lookup.plan.ttlSeconds * 1000,
    })
    counters.stored(lookup.plan.tables, encoded.length)
    await redis.set(lookup.key, encoded, 'EX', lookup.plan.ttlSeconds).catch(() => undefined)
  }
}

export type AnswerCache = ReturnType<typeof createAnswerCache>

/** The cache's counters on the router's metrics: per table read, so a join counts for each of its tables. */
export function cacheCounters(metrics: {
  cacheLookups: Counter<'table' | 'result'>
  cacheBytes: Counter<'table' | 'event'>
}): CacheCounters {
  const each = (tables: readonly string[], count: (table: string) => void) => {
    for (const table of tables) count(table)
  }
  return {
    hit(tables, bytes) {
      each(tables, (table) => {
        metrics.cacheLookups.inc({ table, result: 'hit' })
        metrics.cacheBytes.inc({ table, event: 'served' }, bytes)
      })
    },
    miss: (tables) => each(tables, (table) => metrics.cacheLookups.inc({ table, result: 'miss' })),
    stored: (tables, bytes) =>
      each(tables, (table) => metrics.cacheBytes.inc({ table, event: 'stored' }, bytes)),
    evicted: (bytes) => metrics.cacheBytes.inc({ table: '', event: 'evicted' }, bytes),
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

interface Entry {
  answer: CachedAnswer
  bytes: number
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
      if (entry.bytes > maxBytes) return
      const old = entries.get(key)
      if (old) {
        bytes -= old.bytes
        entries.delete(key)
      }
      entries.set(key, entry)
      bytes += entry.bytes
      for (const [oldest, value] of entries) {
        if (bytes <= maxBytes) break
        entries.delete(oldest)
        bytes -= value.bytes
        evicted(value.bytes)
      }
    },
  }
}
