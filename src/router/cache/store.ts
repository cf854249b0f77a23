import { createHash } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { Counter } from 'prom-client'
import type { Topology } from '../../config/topology.ts'
import {
  CACHE_EPOCH_KEY,
  CACHE_PREFIX,
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
      if (!redis || !ready()) return undefined
      try {
        const replies = await redis
          .pipeline()
          .get(CACHE_EPOCH_KEY)
          .hmget(versionsKey(tenant), NAMESPACE_FIELD, ...plan.tables)
          .exec()
        if (!replies || replies.some(([error]) => error)) return undefined
        const epoch = replies[0]?.[1] ?? '0'
        const versions = ((replies[1]?.[1] ?? []) as (string | null)[]).map((version) => version ?? '0')
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
      if (!redis || !ready() || (tables && tables.length === 0)) return
      const key = versionsKey(tenant)
      const pipeline = redis.pipeline()
      for (const table of tables ?? [NAMESPACE_FIELD]) pipeline.hincrby(key, table, 1)
      await pipeline
        .expire(key, VERSIONS_TTL_SECONDS)
        .exec()
        .catch(() => undefined)
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
