/**
 * The seed's domain: an appointments-booking SaaS. Every table is a tenant table: `tenant_id` leads the
 * primary key (so it is in the replica identity a row-filtered publication needs), ids are UUIDv7 made
 * by PostgreSQL 18's uuidv7() (no sequences to keep in step across shards), and RLS is enabled here and
 * forced in migration 0001 (drizzle has no FORCE).
 */
import { type SQL, sql } from 'drizzle-orm'
import {
  type AnyPgColumn,
  boolean,
  check,
  foreignKey,
  index,
  integer,
  jsonb,
  numeric,
  pgPolicy,
  pgTable,
  primaryKey,
  smallint,
  text,
  time,
  timestamp,
  uuid,
} from 'drizzle-orm/pg-core'

/**
 * The tenant `switchyard.enter()` entered in this transaction, verified by the shard (a hand-set context
 * raises SY003); NULL outside one. In a sub-select, so it runs once per statement (an InitPlan), not per row.
 */
const currentTenant = sql`(select switchyard.current_tenant())`

/** The same policy on every tenant table: rows of the tenant the router entered, nothing else. */
const tenantIsolation = (tenantId: AnyPgColumn) => {
  const mine: SQL = sql`${tenantId} = ${currentTenant}`
  return pgPolicy('tenant_isolation', { as: 'permissive', for: 'all', using: mine, withCheck: mine })
}

const tenantId = () => uuid('tenant_id').notNull()
const id = () => uuid().notNull().default(sql`uuidv7()`)
const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow()

export const businesses = pgTable(
  'businesses',
  {
    tenantId: tenantId(),
    id: id(),
    name: text().notNull(),
    timezone: text().notNull().default('UTC'),
    settings: jsonb().$type<Record<string, unknown>>().notNull().default({}),
    createdAt: createdAt(),
  },
  (t) => [primaryKey({ columns: [t.tenantId, t.id] }), tenantIsolation(t.tenantId)],
).enableRLS()

export const services = pgTable(
  'services',
  {
    tenantId: tenantId(),
    id: id(),
    businessId: uuid('business_id').notNull(),
    name: text().notNull(),
    durationMinutes: integer('duration_minutes').notNull(),
    price: numeric({ precision: 10, scale: 2 }).notNull(),
    active: boolean().notNull().default(true),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.id] }),
    foreignKey({ columns: [t.tenantId, t.businessId], foreignColumns: [businesses.tenantId, businesses.id] }),
    check('services_duration_positive', sql`${t.durationMinutes} > 0`),
    tenantIsolation(t.tenantId),
  ],
).enableRLS()

export const staff = pgTable(
  'staff',
  {
    tenantId: tenantId(),
    id: id(),
    businessId: uuid('business_id').notNull(),
    name: text().notNull(),
    email: text(),
    active: boolean().notNull().default(true),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.id] }),
    foreignKey({ columns: [t.tenantId, t.businessId], foreignColumns: [businesses.tenantId, businesses.id] }),
    tenantIsolation(t.tenantId),
  ],
).enableRLS()

export const customers = pgTable(
  'customers',
  {
    tenantId: tenantId(),
    id: id(),
    name: text().notNull(),
    email: text(),
    phone: text(),
    notes: text(),
    createdAt: createdAt(),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.id] }),
    // The seed's index for customer search.
    index('idx_customers_tenant_name').on(t.tenantId, t.name),
    tenantIsolation(t.tenantId),
  ],
).enableRLS()

export const appointmentStatus = ['scheduled', 'confirmed', 'completed', 'cancelled', 'no_show'] as const

export const appointments = pgTable(
  'appointments',
  {
    tenantId: tenantId(),
    id: id(),
    businessId: uuid('business_id').notNull(),
    serviceId: uuid('service_id').notNull(),
    staffId: uuid('staff_id'),
    customerId: uuid('customer_id').notNull(),
    startTime: timestamp('start_time', { withTimezone: true }).notNull(),
    endTime: timestamp('end_time', { withTimezone: true }).notNull(),
    status: text({ enum: appointmentStatus }).notNull().default('scheduled'),
    price: numeric({ precision: 10, scale: 2 }),
    notes: text(),
    metadata: jsonb().$type<Record<string, unknown>>().notNull().default({}),
    createdAt: createdAt(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    // Partitioned by month on start_time (migration 0006: drizzle cannot declare partitions), so the
    // primary key must hold start_time too.
    primaryKey({ columns: [t.tenantId, t.id, t.startTime] }),
    foreignKey({ columns: [t.tenantId, t.businessId], foreignColumns: [businesses.tenantId, businesses.id] }),
    foreignKey({ columns: [t.tenantId, t.serviceId], foreignColumns: [services.tenantId, services.id] }),
    foreignKey({ columns: [t.tenantId, t.staffId], foreignColumns: [staff.tenantId, staff.id] }),
    foreignKey({ columns: [t.tenantId, t.customerId], foreignColumns: [customers.tenantId, customers.id] }),
    check(
      'appointments_status_known',
      sql`${t.status} in ('scheduled', 'confirmed', 'completed', 'cancelled', 'no_show')`,
    ),
    check('appointments_ends_after_start', sql`${t.endTime} > ${t.startTime}`),
    // The seed's indexes for frequent queries and reports.
    index('idx_appointments_tenant_status_date').on(t.tenantId, t.status, t.startTime),
    index('idx_appointments_tenant_business_date').on(t.tenantId, t.businessId, t.startTime),
    // The per-day quota (max_appointments_per_day) counts a tenant's appointments of one day on every
    // booking: without this it scans all of the tenant's appointments.
    index('idx_appointments_tenant_start').on(t.tenantId, t.startTime),
    tenantIsolation(t.tenantId),
  ],
).enableRLS()

export const workingHours = pgTable(
  'working_hours',
  {
    tenantId: tenantId(),
    id: id(),
    businessId: uuid('business_id').notNull(),
    /** Null: the business's own hours; otherwise one staff member's. */
    staffId: uuid('staff_id'),
    weekday: smallint().notNull(),
    opens: time().notNull(),
    closes: time().notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.tenantId, t.id] }),
    foreignKey({ columns: [t.tenantId, t.businessId], foreignColumns: [businesses.tenantId, businesses.id] }),
    check('working_hours_weekday', sql`${t.weekday} between 0 and 6`),
    check('working_hours_opens_before_closes', sql`${t.opens} < ${t.closes}`),
    tenantIsolation(t.tenantId),
  ],
).enableRLS()

/** Every tenant table of the example, in an order that respects foreign keys (parents first). */
export const tenantTables = [businesses, services, staff, customers, appointments, workingHours] as const
