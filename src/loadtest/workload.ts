import type { Topology } from '../config/topology.ts'
import { shardPrimary } from '../directory/tenants.ts'
import { openAdmin, type Sql } from '../shard/connection.ts'
import { LOADTEST_VOLUME, type LoadtestTenant } from './seed.ts'

/** What a request needs to know about its tenant: ids to book with and rows to search and change. */
export interface TenantContext {
  id: string
  name: string
  /** The tenant's shard when the run started (moves change it; the router follows). */
  shard: string
  business: string
  services: { id: string; minutes: number; price: string }[]
  staff: string[]
  customers: string[]
  /** Future appointments whose status the run changes; bookings of the run join them. */
  appointments: string[]
}

export type OperationName =
  | 'appointments_by_status'
  | 'appointments_by_business_day'
  | 'customer_search'
  | 'book_appointment'
  | 'change_status'
  | BookingPageOperationName

/** A booking page's reads the seed caches, and the edit that makes one of them stale (BOOKING_PAGE). */
export type BookingPageOperationName = 'business_info' | 'services_list' | 'working_hours' | 'edit_service'

/** One request of the pg-proxy protocol (`POST /v1/query`). */
export interface ProxyQuery {
  sql: string
  params: unknown[]
  method: 'all' | 'execute'
}

export interface Operation {
  name: OperationName
  kind: 'read' | 'write'
  /** Share within its kind (reads add up to 1, writes add up to 1). */
  weight: number
  build(tenant: TenantContext): ProxyQuery
}

const DAY_MS = 86_400_000
/** Reads look at the days `seed` filled with appointments, before and after today. */
const HISTORY_DAYS = LOADTEST_VOLUME.days
const today = () => Math.floor(Date.now() / DAY_MS) * DAY_MS
const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)] as T
const between = (low: number, high: number) => low + Math.floor(Math.random() * (high - low + 1))
const dayIso = (offsetDays: number) => new Date(today() + offsetDays * DAY_MS).toISOString()

/** Name prefixes a receptionist types: the first letters of the generator's first names. */
const SEARCH_PREFIXES = ['An', 'Lu', 'Mar', 'Jor', 'Luc', 'Pa', 'Ele', 'Die', 'Sa', 'Hug']

/** `Mar` → `Mas`: the exclusive upper bound of the names starting with a prefix, so the index serves it. */
const prefixEnd = (prefix: string) =>
  prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)

/**
 * The seed's frequent queries, each filtering by tenant first ("SIEMPRE filtrar por tenantId primero")
 * so its composite indexes serve them: appointments by status and date range, a business's day with
 * customer and service (the seed's `include`), customer search by name prefix; and the writes of a
 * booking app: book an appointment, change its status.
 */
export const OPERATIONS: readonly Operation[] = [
  {
    name: 'appointments_by_status',
    kind: 'read',
    weight: 0.4,
    build(tenant) {
      const future = Math.random() < 0.5
      const from = future ? between(0, HISTORY_DAYS - 7) : -between(7, HISTORY_DAYS)
      const status = future ? pick(['scheduled', 'confirmed']) : pick(['completed', 'cancelled', 'no_show'])
      return {
        sql: `select id, customer_id, service_id, staff_id, start_time, end_time, status, price
              from appointments
              where tenant_id = $1 and status = $2 and start_time >= $3 and start_time < $4
              order by start_time limit 50`,
        params: [tenant.id, status, dayIso(from), dayIso(from + 7)],
        method: 'all',
      }
    },
  },
  {
    name: 'appointments_by_business_day',
    kind: 'read',
    weight: 0.35,
    build(tenant) {
      const day = between(-HISTORY_DAYS, HISTORY_DAYS - 1)
      return {
        sql: `select a.id, a.start_time, a.end_time, a.status, c.name as customer, c.phone, s.name as service
              from appointments a
              join customers c on c.tenant_id = a.tenant_id and c.id = a.customer_id
              join services s on s.tenant_id = a.tenant_id and s.id = a.service_id
              where a.tenant_id = $1 and a.business_id = $2 and a.start_time >= $3 and a.start_time < $4
              order by a.start_time`,
        params: [tenant.id, tenant.business, dayIso(day), dayIso(day + 1)],
        method: 'all',
      }
    },
  },
  {
    name: 'customer_search',
    kind: 'read',
    weight: 0.25,
    build(tenant) {
      const prefix = pick(SEARCH_PREFIXES)
      return {
        sql: `select id, name, email, phone from customers
              where tenant_id = $1 and name >= $2 and name < $3 order by name limit 20`,
        params: [tenant.id, prefix, prefixEnd(prefix)],
        method: 'all',
      }
    },
  },
  {
    name: 'book_appointment',
    kind: 'write',
    weight: 0.5,
    build(tenant) {
      // Spread over a year ahead: a busy tenant books a few a day, far below max_appointments_per_day.
      const start =
        today() + between(1, 365) * DAY_MS + between(9, 18) * 3_600_000 + 15 * between(0, 3) * 60_000
      const service = pick(tenant.services)
      return {
        sql: `insert into appointments
                (tenant_id, business_id, service_id, staff_id, customer_id, start_time, end_time, status, price)
              values ($1, $2, $3, $4, $5, $6, $7, 'scheduled', $8) returning id`,
        params: [
          tenant.id,
          tenant.business,
          service.id,
          pick(tenant.staff),
          pick(tenant.customers),
          new Date(start).toISOString(),
          new Date(start + service.minutes * 60_000).toISOString(),
          service.price,
        ],
        method: 'all',
      }
    },
  },
  {
    name: 'change_status',
    kind: 'write',
    weight: 0.5,
    build(tenant) {
      return {
        sql: 'update appointments set status = $3, updated_at = now() where tenant_id = $1 and id = $2',
        params: [tenant.id, pick(tenant.appointments), pick(['confirmed', 'scheduled', 'cancelled'])],
        method: 'execute',
      }
    },
  },
]

/** One of `ops` (their weights adding up to 1), drawn by weight. */
function byWeight(ops: readonly Operation[]): Operation {
  let u = Math.random()
  for (const op of ops) {
    u -= op.weight
    if (u < 0) return op
  }
  return ops[ops.length - 1] as Operation
}

/** Picks an operation: a write with probability `writeShare`, then one of its kind by weight. */
export function operationPicker(writeShare: number): () => Operation {
  const reads = OPERATIONS.filter((op) => op.kind === 'read')
  const writes = OPERATIONS.filter((op) => op.kind === 'write')
  return () => byWeight(Math.random() < writeShare ? writes : reads)
}

/** A read of the tenant's business: its parameters are the tenant and the business. */
function businessRead(name: BookingPageOperationName, weight: number, sql: string): Operation {
  return {
    name,
    kind: 'read',
    weight,
    build: (tenant) => ({ sql, params: [tenant.id, tenant.business], method: 'all' }),
  }
}

/**
 * What a booking page reads on every visit, and the seed keeps in Redis by hand (businesses for an hour,
 * services for 30 minutes, working hours for a day): the router's read cache serves these
 * (`router.cache.tables` defaults to the same tables and TTLs). Weights within each kind. And the
 * owner's edit of a service (its price), which makes the services list stale: the cache must miss after it.
 */
export const BOOKING_PAGE: readonly Operation[] = [
  businessRead(
    'business_info',
    0.3,
    'select id, name, timezone, settings from businesses where tenant_id = $1 and id = $2',
  ),
  businessRead(
    'services_list',
    0.4,
    `select id, name, duration_minutes, price from services
     where tenant_id = $1 and business_id = $2 and active order by name`,
  ),
  businessRead(
    'working_hours',
    0.3,
    `select weekday, opens, closes, staff_id from working_hours
     where tenant_id = $1 and business_id = $2 order by weekday, opens`,
  ),
  {
    name: 'edit_service',
    kind: 'write',
    weight: 1,
    build(tenant) {
      // Its price now and then 5 more: the list's rows change, the service stays bookable.
      const service = pick(tenant.services)
      return {
        sql: 'update services set price = $3 where tenant_id = $1 and id = $2',
        params: [tenant.id, service.id, (Number(service.price) + pick([0, 5])).toFixed(2)],
        method: 'execute',
      }
    },
  },
]

/**
 * A read-heavy day of a booking app: `writeShare` of the requests write, the rest read. Of the reads,
 * `bookingPageShare` are a booking page's (BOOKING_PAGE, cacheable), the others the load test's reads
 * (OPERATIONS, not cacheable: they read appointments and customers). Of the writes, `serviceEditShare`
 * edit a service, the others are the load test's (bookings, status changes).
 */
export const READ_HEAVY_MIX = { writeShare: 0.1, bookingPageShare: 0.7, serviceEditShare: 0.1 }

/** Picks an operation of READ_HEAVY_MIX (or another mix of the same shape). */
export function readHeavyPicker(mix: typeof READ_HEAVY_MIX = READ_HEAVY_MIX): () => Operation {
  const of = (ops: readonly Operation[], kind: Operation['kind']) => ops.filter((op) => op.kind === kind)
  const groups = {
    page: of(BOOKING_PAGE, 'read'),
    reads: of(OPERATIONS, 'read'),
    edits: of(BOOKING_PAGE, 'write'),
    writes: of(OPERATIONS, 'write'),
  }
  return () => {
    if (Math.random() < mix.writeShare)
      return byWeight(Math.random() < mix.serviceEditShare ? groups.edits : groups.writes)
    return byWeight(Math.random() < mix.bookingPageShare ? groups.page : groups.reads)
  }
}

/**
 * Zipf over ranks 1..n: rank r is drawn with probability ∝ 1/r^s. s = 0 is uniform; at s = 1 with 300
 * tenants the busiest gets ~16% of the requests and the last ~0.05%.
 */
export function zipfPicker<T>(items: readonly T[], exponent: number): () => T {
  const cumulative: number[] = []
  let sum = 0
  for (let rank = 1; rank <= items.length; rank++) {
    sum += 1 / rank ** exponent
    cumulative.push(sum)
  }
  return () => {
    const u = Math.random() * sum
    let low = 0
    let high = cumulative.length - 1
    while (low < high) {
      const mid = (low + high) >> 1
      if ((cumulative[mid] as number) < u) low = mid + 1
      else high = mid
    }
    return items[low] as T
  }
}

/** How many future appointments per tenant the run may change the status of. */
const CHANGEABLE = 50
const KNOWN_CUSTOMERS = 100

/**
 * Reads, on each shard's primary, the ids the workload needs per tenant (business, services, staff,
 * some customers and future appointments). Tenants without data are left out.
 */
export async function loadTenantContexts(
  topology: Topology,
  tenants: readonly LoadtestTenant[],
): Promise<TenantContext[]> {
  const shards = [...new Set(tenants.map((tenant) => tenant.shard))]
  const loaded = await Promise.all(
    shards.map(async (shard) => {
      const sql = openAdmin(shardPrimary(topology, shard))
      try {
        return await contextsOn(
          sql,
          tenants.filter((tenant) => tenant.shard === shard),
        )
      } finally {
        await sql.end({ timeout: 5 })
      }
    }),
  )
  const byId = new Map(loaded.flat().map((context) => [context.id, context]))
  return tenants.flatMap((tenant) => byId.get(tenant.id) ?? [])
}

async function contextsOn(sql: Sql, tenants: LoadtestTenant[]): Promise<TenantContext[]> {
  const ids = tenants.map((tenant) => tenant.id)
  const [businesses, services, staff, customers, appointments] = await Promise.all([
    sql<{ tenant_id: string; id: string }[]>`
      select tenant_id, min(id::text) as id from businesses where tenant_id = any(${ids}::uuid[]) group by 1`,
    sql<{ tenant_id: string; id: string; minutes: number; price: string }[]>`
      select tenant_id, id, duration_minutes as minutes, price::text as price
      from services where tenant_id = any(${ids}::uuid[])`,
    sql<
      { tenant_id: string; id: string }[]
    >`select tenant_id, id from staff where tenant_id = any(${ids}::uuid[])`,
    sql<{ tenant_id: string; id: string }[]>`
      select t.id as tenant_id, c.id from unnest(${ids}::uuid[]) t(id)
      cross join lateral (select id from customers where tenant_id = t.id limit ${KNOWN_CUSTOMERS}) c`,
    sql<{ tenant_id: string; id: string }[]>`
      select t.id as tenant_id, a.id from unnest(${ids}::uuid[]) t(id)
      cross join lateral (select id from appointments where tenant_id = t.id and start_time > now()
                          order by start_time limit ${CHANGEABLE}) a`,
  ])
  const of = <R extends { tenant_id: string }>(rows: R[], tenant: string) =>
    rows.filter((row) => row.tenant_id === tenant)
  return tenants.flatMap((tenant) => {
    const business = businesses.find((row) => row.tenant_id === tenant.id)
    const context: TenantContext = {
      id: tenant.id,
      name: tenant.name,
      shard: tenant.shard,
      business: business?.id ?? '',
      services: of(services, tenant.id).map(({ id, minutes, price }) => ({ id, minutes, price })),
      staff: of(staff, tenant.id).map((row) => row.id),
      customers: of(customers, tenant.id).map((row) => row.id),
      appointments: of(appointments, tenant.id).map((row) => row.id),
    }
    const usable = business && context.services.length && context.staff.length && context.customers.length
    return usable && context.appointments.length ? [context] : []
  })
}
