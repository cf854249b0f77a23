import type { Sql } from '../../src/shard/connection.ts'

/** How much of each kind one tenant gets: the seed's shape (one business, a handful of services and staff). */
export interface TenantVolume {
  services: number
  staff: number
  customers: number
  appointments: number
  /** Appointments spread over this many days before and after today. */
  days: number
}

export const DEFAULT_VOLUME: TenantVolume = {
  services: 12,
  staff: 8,
  customers: 1_500,
  appointments: 3_000,
  days: 42,
}

/**
 * Fills one tenant with realistic rows, set-based on the shard primary (one statement per table, no
 * round trip per row): one business with its week of hours, services, staff, customers, and
 * appointments over past and future weeks (past ones completed, cancelled or no-show; future ones
 * scheduled or confirmed). Written as the admin, so row quotas (which need the router's limits) do not
 * apply: this is bulk data, not client traffic. Safe to re-run: a tenant that has a business is left
 * as it is. Returns the rows written.
 */
export async function fillTenant(
  sql: Sql,
  tenant: string,
  label: string,
  volume = DEFAULT_VOLUME,
): Promise<number> {
  const [present] = await sql`select 1 from businesses where tenant_id = ${tenant} limit 1`
  if (present) return 0
  return sql.begin(async (tx) => {
    const [business] = await tx<{ id: string }[]>`
      insert into businesses (tenant_id, name, timezone) values (${tenant}, ${label}, 'Europe/Madrid') returning id`
    const businessId = business?.id as string
    const hours = await tx`
      insert into working_hours (tenant_id, business_id, weekday, opens, closes)
      select ${tenant}, ${businessId}, d, '09:00', '19:00' from generate_series(1, 6) d`
    const services = await tx`
      insert into services (tenant_id, business_id, name, duration_minutes, price)
      select ${tenant}, ${businessId}, 'Service ' || n, 15 * (1 + n % 6), 10 + 5 * (n % 9)
      from generate_series(1, ${volume.services}) n`
    const staff = await tx`
      insert into staff (tenant_id, business_id, name, email)
      select ${tenant}, ${businessId}, 'Staff ' || n, 'staff' || n || '@' || ${tenant.slice(0, 8)} || '.example.com'
      from generate_series(1, ${volume.staff}) n`
    const customers = await tx`
      insert into customers (tenant_id, name, email, phone)
      select ${tenant},
             (array['Ana','Luis','Marta','Jorge','Lucía','Pablo','Elena','Diego','Sara','Hugo'])[1 + n % 10]
               || ' ' || (array['García','López','Martín','Sánchez','Pérez','Gómez','Ruiz','Díaz'])[1 + (n / 10) % 8]
               || ' ' || n,
             'customer' || n || '@example.com', '+34 6' || lpad(n::text, 8, '0')
      from generate_series(1, ${volume.customers}) n`
    const appointments = await tx`
      with s as (select array_agg(id order by name) as ids, array_agg(duration_minutes order by name) as mins,
                        array_agg(price order by name) as prices
                 from services where tenant_id = ${tenant}),
           st as (select array_agg(id order by name) as ids from staff where tenant_id = ${tenant}),
           c as (select array_agg(id) as ids from customers where tenant_id = ${tenant}),
           a as (select n, date_trunc('day', now())
                      + make_interval(days => (n % (2 * ${volume.days})) - ${volume.days})
                      + make_interval(hours => 9 + (n / 7) % 10, mins => 15 * (n % 4)) as start_time
                 from generate_series(1, ${volume.appointments}) n)
      insert into appointments (tenant_id, business_id, service_id, staff_id, customer_id, start_time, end_time, status, price)
      select ${tenant}, ${businessId},
             s.ids[1 + a.n % cardinality(s.ids)], st.ids[1 + a.n % cardinality(st.ids)],
             c.ids[1 + a.n % cardinality(c.ids)], a.start_time,
             a.start_time + make_interval(mins => s.mins[1 + a.n % cardinality(s.ids)]),
             case when a.start_time < now()
                  then (array['completed','completed','completed','cancelled','no_show'])[1 + a.n % 5]
                  else (array['scheduled','confirmed'])[1 + a.n % 2] end,
             s.prices[1 + a.n % cardinality(s.ids)]
      from a, s, st, c`
    return 1 + hours.count + services.count + staff.count + customers.count + appointments.count
  })
}
