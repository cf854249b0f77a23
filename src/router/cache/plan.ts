import { MAX_CACHE_SECONDS, type Topology } from '../../config/topology.ts'
import { SwitchyardError } from '../../errors.ts'
import type { Classified } from '../policy.ts'

/** What a request asks of the cache (`x-switchyard-cache`): the tables' TTLs, its own, or none. */
export type CacheAsk = { kind: 'default' } | { kind: 'ttl'; seconds: number } | { kind: 'bypass' }

export const DEFAULT_ASK: CacheAsk = { kind: 'default' }

/** A read the cache may answer: how long, and the tables whose versions key it. */
export interface CachePlan {
  ttlSeconds: number
  tables: readonly string[]
}

/** Why a read is not cached (for the `x-switchyard-cache: bypass` answer and the metrics). */
export type Bypass = { bypass: string }

/**
 * Whether one statement's answer may be cached, and for how long. Only reads, of tenant tables only
 * (catalog rows change with migrations, which bump nothing), whose answer depends on their rows and
 * parameters alone: the clock, chance and the session make them uncacheable unless the request asks (a
 * report that may be 5 minutes old says so with `x-switchyard-cache: 300`). Without asking, every table
 * it reads must be one of `cache.tables`, and the shortest TTL of them wins.
 */
export function planCache(
  config: Topology['router']['cache'],
  statement: Classified,
  ask: CacheAsk,
): CachePlan | Bypass {
  if (ask.kind === 'bypass') return { bypass: 'no-cache asked' }
  if (statement.kind !== 'read') return { bypass: 'a write' }
  if (statement.catalog) return { bypass: 'reads the catalog' }
  if (statement.tables.length === 0) return { bypass: 'reads no table' }
  if (ask.kind === 'ttl') return { ttlSeconds: ask.seconds, tables: statement.tables }
  if (statement.volatile) return { bypass: 'depends on the clock or the session' }
  const ttls = statement.tables.map((table) => config.tables[table])
  if (ttls.some((ttl) => ttl === undefined)) return { bypass: 'reads a table not in cache.tables' }
  return { ttlSeconds: Math.min(...(ttls as number[])), tables: statement.tables }
}

/**
 * The tables a write may change, whose cached reads must go: its targets and what `cache.dependencies`
 * says their triggers write. `null`: anything (a write the policy saw call a user function).
 */
export function touchedBy(
  config: Topology['router']['cache'],
  statements: readonly Classified[],
): string[] | null {
  if (statements.some((statement) => statement.opaque)) return null
  const touched = new Set<string>()
  for (const statement of statements) {
    for (const table of statement.targets) {
      touched.add(table)
      for (const dependent of config.dependencies[table] ?? []) touched.add(dependent)
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
