import type { Topology } from '../config/topology.ts'
import type { Directory } from '../directory/connection.ts'
import { keys, RATE_WINDOW_SECONDS, type Redis } from '../directory/redis.ts'
import type { TenantLimits } from '../directory/schema.ts'
import { effectiveLimits, findTenant, type TenantRow } from '../directory/tenants.ts'
import { type Queries, rootMessage, type Sql, withAdmin } from '../shard/connection.ts'
import { type OwnershipState, readOwnership } from '../shard/ownership.ts'
import type { ShardState } from './placement.ts'

/** A replica's distance from its primary, as whoever asks measures it (`cluster status`, the router's monitor). */
export interface ReplicaLag {
  name: string
  shard: string
  /** Bytes of WAL the primary has written that the replica has not replayed; null when unknown (down). */
  lagBytes: number | null
}

export type ReplicaLags = () => Promise<ReplicaLag[]>

export interface ShardStats {
  id: string
  state: ShardState
  capacity: number
  tenants: number
  /**
   * Live rows in the tenant tables, as PostgreSQL's statistics estimate them
   * (`pg_stat_all_tables.n_live_tup`, kept current by every insert and delete, no scan); null when the
   * primary did not answer.
   */
  rows: number | null
  /** `pg_total_relation_size` of the tenant tables (heap, indexes, TOAST); null when the primary did not answer. */
  bytes: number | null
  replicas: { name: string; lagBytes: number | null }[]
  /** Why rows and bytes are missing. */
  error?: string
}

/** Per shard: fill from the directory, rows and bytes from its primary, replica lag from `lags`. */
export async function shardStats(
  directory: Directory,
  topology: Topology,
  lags: ReplicaLags,
): Promise<ShardStats[]> {
  const [fills, replicas] = await Promise.all([shardFills(directory.sql), lags()])
  return Promise.all(
    fills.map(async (fill) => {
      const shard = topology.shards.find((s) => s.id === fill.id)
      const base = {
        ...fill,
        replicas: replicas
          .filter((r) => r.shard === fill.id)
          .map((r) => ({ name: r.name, lagBytes: r.lagBytes })),
      }
      if (!shard) return { ...base, rows: null, bytes: null, error: 'not in the topology config' }
      try {
        return { ...base, ...(await withAdmin(shard.primary, (sql) => shardUsage(sql, topology))) }
      } catch (error) {
        return { ...base, rows: null, bytes: null, error: rootMessage(error) }
      }
    }),
  )
}

export type ShardFillRow = { id: string; state: ShardState; capacity: number; tenants: number }

/** Every shard the directory knows, in id order, with how many tenants it holds. */
export async function shardFills(sql: Queries): Promise<ShardFillRow[]> {
  return sql<ShardFillRow[]>`
    select s.id, s.state, s.capacity, count(t.id)::int as tenants
    from shards s left join tenants t on t.shard_id = s.id
    group by s.id order by s.id`
}

async function shardUsage(sql: Sql, topology: Topology): Promise<{ rows: number; bytes: number }> {
  // relkind 'r' takes partitions (which hold the rows) and skips their parents (which hold none).
  const [row] = await sql<{ rows: string; bytes: string }[]>`
    select coalesce(sum(greatest(s.n_live_tup, 0)), 0)::bigint::text as rows,
           coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint::text as bytes
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    left join pg_stat_all_tables s on s.relid = c.oid
    where n.nspname = any(${topology.tenantSchema.schemas}) and c.relkind = 'r'`
  return { rows: Number(row?.rows ?? 0), bytes: Number(row?.bytes ?? 0) }
}

/** The tenant tables of a shard (those with a `tenant_id`), partitioned ones through their parent. */
async function tenantTables(sql: Queries, schemas: readonly string[]): Promise<string[]> {
  const rows = await sql<{ name: string }[]>`
    select format('%I.%I', n.nspname, c.relname) as name
    from pg_class c
    join pg_namespace n on n.oid = c.relnamespace
    join pg_attribute a on a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped
    where n.nspname = any(${schemas as string[]}) and c.relkind in ('r', 'p') and not c.relispartition
    order by n.nspname, c.relname`
  return rows.map((row) => row.name)
}

export interface TableUsage {
  /** `schema.table`. */
  table: string
  /** Exact: `count(*)` of the tenant's rows. */
  rows: number
  /** `sum(pg_column_size(row))` of the tenant's rows: their data, without indexes or page overhead. */
  bytes: number
}

/**
 * One tenant's rows and bytes per table, counted exactly on its shard's primary as the shard's admin.
 * Row security is switched off for it (only switchyard.enter() can make a tenant context): an admin that
 * RLS would filter fails loudly instead of reporting the tenant as empty.
 */
export async function tenantUsage(
  url: string,
  schemas: readonly string[],
  tenant: string,
): Promise<TableUsage[]> {
  return withAdmin(url, (sql) =>
    sql.begin(async (tx) => {
      const tables = await tenantTables(tx, schemas)
      if (tables.length === 0) return []
      await tx`set local row_security = off`
      const union = tables
        .map(
          (table, i) =>
            `select ${i} as i, count(*)::bigint::text as rows, coalesce(sum(pg_column_size(t.*)), 0)::bigint::text as bytes from ${table} t where t.tenant_id = $1`,
        )
        .join(' union all ')
      const rows = await tx.unsafe<{ i: number; rows: string; bytes: string }[]>(union, [tenant])
      return rows
        .sort((a, b) => a.i - b.i)
        .map((row) => ({ table: tables[row.i] as string, rows: Number(row.rows), bytes: Number(row.bytes) }))
    }),
  )
}

/**
 * Bytes per tenant on one shard (`sum(pg_column_size(row))` over its tenant tables): the weights the
 * planner balances. One scan of every tenant table; row security is switched off for it, so an admin
 * that RLS would filter fails loudly instead of reporting every tenant as empty.
 */
export async function tenantBytesOnShard(
  url: string,
  schemas: readonly string[],
): Promise<Map<string, number>> {
  return withAdmin(url, (sql) =>
    sql.begin(async (tx) => {
      const tables = await tenantTables(tx, schemas)
      if (tables.length === 0) return new Map()
      await tx`set local row_security = off`
      const union = tables
        .map((table) => `select t.tenant_id, pg_column_size(t.*) as bytes from ${table} t`)
        .join(' union all ')
      const rows = await tx.unsafe<{ tenant: string; bytes: string }[]>(
        `select tenant_id::text as tenant, sum(bytes)::bigint::text as bytes from (${union}) u group by tenant_id`,
      )
      return new Map(rows.map((row) => [row.tenant, Number(row.bytes)]))
    }),
  )
}

/**
 * Bytes of every tenant on the given shards (default: all of the topology's), read in parallel.
 * `unreachable` names the shards whose primary did not answer (their tenants are absent from `bytes`).
 */
export async function tenantBytes(
  topology: Topology,
  shardIds: readonly string[] = topology.shards.map((s) => s.id),
): Promise<{ bytes: Map<string, number>; unreachable: { shard: string; error: string }[] }> {
  const shards = topology.shards.filter((s) => shardIds.includes(s.id))
  const outcomes = await Promise.allSettled(
    shards.map((s) => tenantBytesOnShard(s.primary, topology.tenantSchema.schemas)),
  )
  const bytes = new Map<string, number>()
  const unreachable: { shard: string; error: string }[] = []
  outcomes.forEach((outcome, i) => {
    if (outcome.status === 'fulfilled') for (const [tenant, b] of outcome.value) bytes.set(tenant, b)
    else unreachable.push({ shard: shards[i]?.id as string, error: rootMessage(outcome.reason) })
  })
  return { bytes, unreachable }
}

export type RequestRate =
  | {
      available: true
      /** Distinct API requests (x-switchyard-request) counted in the window: what api_rate_limit limits. */
      apiRequests: number
      /** Router requests counted in the window that named no API request (or passed one's cap). */
      count: number
      windowStart: string
      windowSeconds: number
      /** `count` over the minutes of the window gone so far (at least one). */
      perMinute: number
    }
  | { available: false; reason: string }

/** The tenant's recent request rate: the router's rate-limit counter for the current window, from Redis. */
export async function requestRate(redis: Redis | undefined, tenant: string): Promise<RequestRate> {
  if (!redis) return { available: false, reason: 'Redis is not configured: each router counts on its own' }
  if (redis.status !== 'ready') return { available: false, reason: 'Redis is unavailable' }
  const now = Date.now() / 1000
  const window = Math.floor(now / RATE_WINDOW_SECONDS)
  const start = window * RATE_WINDOW_SECONDS
  try {
    const [untagged, apiRequests] = await Promise.all([
      redis.get(keys.rate(tenant, window)),
      redis.hlen(keys.apiRequests(tenant, window)),
    ])
    const count = Number(untagged ?? 0)
    const minutes = Math.max(1, (now - start) / 60)
    return {
      available: true,
      apiRequests,
      count,
      windowStart: new Date(start * 1000).toISOString(),
      windowSeconds: RATE_WINDOW_SECONDS,
      perMinute: Math.round((count / minutes) * 100) / 100,
    }
  } catch (error) {
    return { available: false, reason: `Redis is unavailable: ${(error as Error).message}` }
  }
}

export interface TenantStats {
  /** Per tenant table; null when the shard's primary did not answer (`error` says why). */
  tables: TableUsage[] | null
  rows: number | null
  bytes: number | null
  requests: RequestRate
  error?: string
}

/** What `tenants show` and `GET /admin/v1/tenants/:id` add to the directory row. */
export async function tenantStats(
  topology: Topology,
  redis: Redis | undefined,
  tenant: { id: string; shardId: string },
): Promise<TenantStats> {
  const shard = topology.shards.find((s) => s.id === tenant.shardId)
  const requests = await requestRate(redis, tenant.id)
  if (!shard) {
    const error = `shard "${tenant.shardId}" is not in the topology config`
    return { tables: null, rows: null, bytes: null, requests, error }
  }
  try {
    const tables = await tenantUsage(shard.primary, topology.tenantSchema.schemas, tenant.id)
    const rows = tables.reduce((sum, t) => sum + t.rows, 0)
    const bytes = tables.reduce((sum, t) => sum + t.bytes, 0)
    return { tables, rows, bytes, requests }
  } catch (error) {
    return { tables: null, rows: null, bytes: null, requests, error: rootMessage(error) }
  }
}

export type TenantDescription = TenantRow & {
  /** The ownership record on the tenant's shard; null when there is none or the shard did not answer. */
  ownership: { epoch: number; state: OwnershipState } | null
  /** The config's defaults with the tenant's overrides (`limits`) on top. */
  effectiveLimits: Required<TenantLimits>
  usage: TenantStats
}

/** A tenant as `tenants show` and `GET /admin/v1/tenants/:id` present it. */
export async function describeTenant(
  directory: Directory,
  topology: Topology,
  redis: Redis | undefined,
  id: string,
): Promise<TenantDescription> {
  const row = await findTenant(directory, id)
  const shard = topology.shards.find((s) => s.id === row.shardId)
  const [ownership, usage] = await Promise.all([
    shard ? withAdmin(shard.primary, (sql) => readOwnership(sql, row.id)).catch(() => undefined) : undefined,
    tenantStats(topology, redis, row),
  ])
  return {
    ...row,
    ownership: ownership ?? null,
    effectiveLimits: effectiveLimits(topology, row.limits),
    usage,
  }
}
