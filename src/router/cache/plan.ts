import { MAX_CACHE_SECONDS, type Topology } from '../../config/topology.ts'
import { SwitchyardError } from '../../errors.ts'
import { type Classified, readsAsClock } from '../policy.ts'
import type { ShardRelations } from './relations.ts'

/** What a request asks of the cache (`x-switchyard-cache`): the tables' TTLs, its own, or none. */
export type CacheAsk = { kind: 'default' } | { kind: 'ttl'; seconds: number } | { kind: 'bypass' }

export const DEFAULT_ASK: CacheAsk = { kind: 'default' }

/** A read the cache may answer: how long, and the version fields (table tree roots) that key it. */
export interface CachePlan {
  ttlSeconds: number
  fields: readonly string[]
}

/** Why a read is not cached (for the `x-switchyard-cache: bypass` answer and the metrics). */
export type Bypass = { bypass: string }

/**
 * Whether one statement's answer may be cached, and for how long. Only reads, of the shard's plain tables
 * only (catalog rows change with migrations; a view's rows with tables it does not name), whose answer
 * depends on their rows and parameters alone: the clock, chance and the session make them uncacheable
 * unless the request asks (a report that may be 5 minutes old says so with `x-switchyard-cache: 300`).
 * Without asking, every table it reads must be one of `cache.tables`, and the shortest TTL of them wins.
 */
export function planCache(
  config: Topology['router']['cache'],
  statement: Classified,
  ask: CacheAsk,
  relations: ShardRelations | undefined,
  params: unknown,
): CachePlan | Bypass {
  if (ask.kind === 'bypass') return { bypass: 'no-cache asked' }
  if (statement.kind !== 'read') return { bypass: 'a write' }
  if (statement.catalog) return { bypass: 'reads the catalog' }
  if (statement.tables.length === 0) return { bypass: 'reads no table' }
  if (!relations) return { bypass: "the shard's tables are not known yet" }
  if (statement.calls.some((name) => relations.functions.has(name)))
    return { bypass: 'may call a function or operator of the tenant schemas' }
  const fields = statement.tables.map((table) => relations.fieldOf(table))
  if (fields.some((field) => field === undefined))
    return { bypass: 'reads a relation that is not a plain table' }
  const keyed = [...new Set(fields as string[])].sort()
  if (ask.kind === 'ttl') return { ttlSeconds: ask.seconds, fields: keyed }
  if (statement.volatile || readsClock(params)) return { bypass: 'depends on the clock or the session' }
  const ttls = statement.tables.map((table) =>
    Object.hasOwn(config.tables, table) ? config.tables[table] : undefined,
  )
  if (ttls.some((ttl) => ttl === undefined)) return { bypass: 'reads a table not in cache.tables' }
  return { ttlSeconds: Math.min(...(ttls as number[])), fields: keyed }
}

/**
 * A parameter PostgreSQL may read as the clock: `$1` sent as 'now' for a timestamptz is the time of the
 * run, not a value. Any string (or text bytes) holding a clock word, at any depth.
 */
function readsClock(value: unknown): boolean {
  if (typeof value === 'string') return readsAsClock(value)
  if (Buffer.isBuffer(value)) return readsAsClock(value.toString('latin1'))
  if (Array.isArray(value)) return value.some(readsClock)
  if (value && typeof value === 'object') return Object.values(value).some(readsClock)
  return false
}

/**
 * The version fields a write may change: its targets' trees and what cascades or declared triggers
 * reach (src/router/cache/relations.ts). `null`: anything — a function the policy cannot see into (or
 * one of the tenant schemas' own, named like a catalog one), a view, a rule, an undeclared trigger, a
 * relation the shard's catalog did not show, or a shard whose catalog is not read yet.
 */
export function touchedBy(
  statements: readonly Classified[],
  relations: ShardRelations | undefined,
): string[] | null {
  if (!relations) return null
  const touched = new Set<string>()
  for (const statement of statements) {
    if (statement.opaque || statement.calls.some((name) => relations.functions.has(name))) return null
    for (const table of statement.targets) {
      const fields = relations.writes(table)
      if (!fields) return null
      for (const field of fields) touched.add(field)
    }
  }
  return [...touched].sort()
}

/** `x-switchyard-cache` on a request: absent, `no-cache`, or seconds (1 to a week; at most `maxSeconds` are kept). */
export function parseCacheAsk(header: string | undefined, maxSeconds: number): CacheAsk {
  if (header === undefined || header === '') return DEFAULT_ASK
  const value = header.trim().toLowerCase()
  if (value === 'no-cache') return { kind: 'bypass' }
  if (/^\d{1,7}$/.test(value)) {
    const seconds = Number(value)
    if (seconds >= 1 && seconds <= MAX_CACHE_SECONDS)
      return { kind: 'ttl', seconds: Math.min(seconds, maxSeconds) }
  }
  throw new SwitchyardError(
    'invalid_input',
    `x-switchyard-cache must be no-cache or a number of seconds from 1 to ${MAX_CACHE_SECONDS}`,
  )
}
