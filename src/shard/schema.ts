import { sql } from 'drizzle-orm'
import { check, integer, pgSchema, text, timestamp, uuid } from 'drizzle-orm/pg-core'

/** The shard-side `switchyard` schema: what this shard owns, and the schema version it runs. */
export const switchyard = pgSchema('switchyard')

/**
 * The shard's own record of its tenants (invariant 2). `owner`: served here; `frozen`: fenced for a
 * cutover, reads only; `moved`: gone to another shard; `incoming`: being copied here, not served yet.
 */
export const tenantOwnership = switchyard.table(
  'tenant_ownership',
  {
    tenantId: uuid('tenant_id').primaryKey(),
    epoch: integer().notNull(),
    state: text({ enum: ['owner', 'frozen', 'moved', 'incoming'] }).notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [check('tenant_ownership_state_known', sql`${t.state} in ('owner', 'frozen', 'moved', 'incoming')`)],
)

export const schemaVersion = switchyard.table(
  'schema_version',
  {
    id: integer().primaryKey().default(1),
    version: text().notNull(),
    appliedAt: timestamp('applied_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [check('schema_version_single_row', sql`${t.id} = 1`)],
)
