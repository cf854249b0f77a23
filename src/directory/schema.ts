import { sql } from 'drizzle-orm'
import {
  check,
  index,
  integer,
  jsonb,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core'

const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow()
const updatedAt = () => timestamp('updated_at', { withTimezone: true }).notNull().defaultNow()

/** Shards as the directory knows them; connection details stay in the topology config. */
export const shards = pgTable(
  'shards',
  {
    id: text().primaryKey(),
    capacity: integer().notNull().default(100),
    state: text({ enum: ['active', 'draining'] })
      .notNull()
      .default('active'),
    /** The shard schema version `switchyard migrate` last applied. */
    schemaVersion: text('schema_version'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (t) => [
    check('shards_capacity_positive', sql`${t.capacity} > 0`),
    check('shards_state_known', sql`${t.state} in ('active', 'draining')`),
  ],
)

/** Per-tenant overrides of the seed's limits; absent keys take the config's defaults. */
export type TenantLimits = Partial<{
  max_appointments_per_day: number
  max_customers: number
  max_services: number
  max_staff: number
  api_rate_limit: number
}>

export const tenants = pgTable(
  'tenants',
  {
    id: uuid().primaryKey(),
    name: text().notNull(),
    shardId: text('shard_id')
      .notNull()
      .references(() => shards.id),
    /** Bumped at every cutover; a shard refuses a route that carries another epoch. */
    epoch: integer().notNull().default(1),
    state: text({ enum: ['active', 'moving', 'frozen'] })
      .notNull()
      .default('active'),
    limits: jsonb().$type<TenantLimits>().notNull().default({}),
    createdAt: createdAt(),
  },
  (t) => [
    index('tenants_shard_idx').on(t.shardId),
    check('tenants_state_known', sql`${t.state} in ('active', 'moving', 'frozen')`),
  ],
)

/** One row per tenant move; the mover persists its state here before each side effect. */
export const moves = pgTable(
  'moves',
  {
    id: uuid().primaryKey(),
    tenantId: uuid('tenant_id')
      .notNull()
      .references(() => tenants.id),
    sourceShard: text('source_shard')
      .notNull()
      .references(() => shards.id),
    targetShard: text('target_shard')
      .notNull()
      .references(() => shards.id),
    state: text().notNull(),
    fenceLsn: text('fence_lsn'),
    cutoverLsn: text('cutover_lsn'),
    progress: jsonb().$type<Record<string, unknown>>().notNull().default({}),
    error: text(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [
    uniqueIndex('moves_one_open_per_tenant')
      .on(t.tenantId)
      .where(sql`${t.state} not in ('done', 'aborted', 'failed')`),
  ],
)

/** API keys: only a hash of the secret is kept; the key is shown once, at creation. */
export const apiKeys = pgTable(
  'api_keys',
  {
    id: uuid().primaryKey(),
    /** The public part of the key, used to find the row. */
    prefix: text().notNull().unique(),
    secretHash: text('secret_hash').notNull(),
    scope: text({ enum: ['app', 'admin'] }).notNull(),
    /** Tenants an app key may act for; null means any tenant. */
    tenants: uuid().array(),
    name: text(),
    createdAt: createdAt(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
  },
  (t) => [check('api_keys_scope_known', sql`${t.scope} in ('app', 'admin')`)],
)
