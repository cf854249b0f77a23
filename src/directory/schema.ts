import { sql } from 'drizzle-orm'
import {
  bigint,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core'
import { NOT_FINISHED } from './move-states.ts'
import { TENANT_STATES, TENANT_STATES_SQL } from './tenant-state.ts'

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
    state: text({ enum: TENANT_STATES }).notNull().default('active'),
    limits: jsonb().$type<TenantLimits>().notNull().default({}),
    createdAt: createdAt(),
  },
  (t) => [
    index('tenants_shard_idx').on(t.shardId),
    check('tenants_state_known', sql`${t.state} in ${sql.raw(TENANT_STATES_SQL)}`),
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
      .where(sql`${t.state} ${sql.raw(NOT_FINISHED)}`),
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
    /**
     * SCRAM-SHA-256's StoredKey and ServerKey of the whole key (base64), with the directory's salt
     * (`scram_settings`): what the PostgreSQL front end checks a login against. Null for keys made
     * before it: they work over HTTP only.
     */
    scramStoredKey: text('scram_stored_key'),
    scramServerKey: text('scram_server_key'),
    createdAt: createdAt(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
  },
  (t) => [check('api_keys_scope_known', sql`${t.scope} in ('app', 'admin')`)],
)

/**
 * The capability routers present to every shard's `switchyard.enter()` (invariant 3): one row, made by
 * `switchyard migrate`, which gives each shard its SHA-256. SQL run as the router's role cannot read it
 * back: it lives here, where only routers and operators connect.
 */
export const routerCapability = pgTable(
  'router_capability',
  {
    id: integer().primaryKey().default(1),
    secret: text().notNull(),
    createdAt: createdAt(),
  },
  (t) => [check('router_capability_single_row', sql`${t.id} = 1`)],
)

/**
 * SCRAM-SHA-256's salt and iteration count for every API key (one row, made by the migration). With
 * SCRAM the router never sees the password, so it cannot tell which key a client holds: it checks the
 * client's proof against each key that may act for the tenant, which needs one salt for all of them
 * (sent before the key is known). Nothing is lost by sharing it: a key's secret is 256 random bits, so
 * there is no dictionary for a salt to spoil.
 */
export const scramSettings = pgTable(
  'scram_settings',
  {
    id: integer().primaryKey().default(1),
    /** 16 bytes, base64. */
    salt: text().notNull(),
    iterations: integer().notNull(),
  },
  (t) => [check('scram_settings_single_row', sql`${t.id} = 1`)],
)

/** A shard's fill as a plan saw it: before the plan and after it. */
export type PlanFill = { id: string; state: string; capacity: number; tenants: number; bytes: number }

export const planStrategies = ['count', 'size', 'drain'] as const
export const planStates = ['planned', 'applying', 'cancelled', 'done', 'failed'] as const
export const planMoveStates = ['pending', 'moving', 'done', 'failed'] as const

/**
 * A stored rebalance plan: what to move where, computed from one look at the directory and the shards.
 * `rebalance apply` (the executor) walks its moves in `position` order; the plan outlives any process.
 */
export const rebalancePlans = pgTable(
  'rebalance_plans',
  {
    id: uuid().primaryKey(),
    strategy: text({ enum: planStrategies }).notNull(),
    state: text({ enum: planStates }).notNull().default('planned'),
    /** The shard a drain plan empties; null for a rebalance. */
    drainShard: text('drain_shard').references(() => shards.id),
    /** Whether the plan's end state meets its strategy's goal; `reason` says why not. */
    balanced: boolean().notNull(),
    reason: text(),
    before: jsonb().$type<PlanFill[]>().notNull(),
    after: jsonb().$type<PlanFill[]>().notNull(),
    error: text(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [
    index('rebalance_plans_created_idx').on(t.createdAt),
    check('rebalance_plans_strategy_known', sql`${t.strategy} in ('count', 'size', 'drain')`),
    check(
      'rebalance_plans_state_known',
      sql`${t.state} in ('planned', 'applying', 'cancelled', 'done', 'failed')`,
    ),
  ],
)

/** One tenant move of a plan; `move_id` names the mover's row in `moves` once the move has started. */
export const rebalancePlanMoves = pgTable(
  'rebalance_plan_moves',
  {
    planId: uuid('plan_id')
      .notNull()
      .references(() => rebalancePlans.id, { onDelete: 'cascade' }),
    position: integer().notNull(),
    tenantId: uuid('tenant_id')
      .notNull()
      .references(() => tenants.id),
    fromShard: text('from_shard')
      .notNull()
      .references(() => shards.id),
    toShard: text('to_shard')
      .notNull()
      .references(() => shards.id),
    bytes: bigint({ mode: 'number' }).notNull(),
    state: text({ enum: planMoveStates }).notNull().default('pending'),
    moveId: uuid('move_id').references(() => moves.id),
    error: text(),
    updatedAt: updatedAt(),
  },
  (t) => [
    primaryKey({ columns: [t.planId, t.position] }),
    // A plan moves each tenant at most once.
    uniqueIndex('rebalance_plan_moves_tenant').on(t.planId, t.tenantId),
    index('rebalance_plan_moves_tenant_idx').on(t.tenantId),
    check('rebalance_plan_moves_state_known', sql`${t.state} in ('pending', 'moving', 'done', 'failed')`),
    check('rebalance_plan_moves_bytes', sql`${t.bytes} >= 0`),
  ],
)
