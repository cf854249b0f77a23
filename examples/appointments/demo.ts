import type { Sql } from '../../src/shard/connection.ts'
import { appointmentStatus } from './schema.ts'

/**
 * A small, deterministic set of rows for one tenant, enough to try queries by hand: one business with
 * its hours, services, staff, customers and a few weeks of appointments. Written with the shard's admin
 * connection (the router's role could not write another tenant's rows, by design).
 */
export async function seedDemoTenant(sql: Sql, tenant: string, label: string): Promise<number> {
  const [present] = await sql`select 1 from businesses where tenant_id = ${tenant} limit 1`
  if (present) return 0
  return sql.begin(async (tx) => {
    const [business] = await tx<{ id: string }[]>`
      insert into businesses (tenant_id, name, timezone) values (${tenant}, ${`${label} Studio`}, 'Europe/Madrid')
      returning id`
    const businessId = business?.id as string
    await tx`
      insert into working_hours (tenant_id, business_id, weekday, opens, closes)
      select ${tenant}, ${businessId}, d, '09:00', '18:00' from generate_series(1, 5) d`
    const services = await tx<{ id: string; duration: number; price: string }[]>`
      insert into services (tenant_id, business_id, name, duration_minutes, price)
      select ${tenant}, ${businessId}, 'Service ' || n, 30 * n, 25 * n from generate_series(1, 4) n
      returning id, duration_minutes as duration, price`
    const staff = await tx<{ id: string }[]>`
      insert into staff (tenant_id, business_id, name, email)
      select ${tenant}, ${businessId}, 'Staff ' || n, 'staff' || n || '@example.com' from generate_series(1, 3) n
      returning id`
    const customers = await tx<{ id: string }[]>`
      insert into customers (tenant_id, name, email, phone)
      select ${tenant}, 'Customer ' || lpad(n::text, 3, '0'), 'customer' || n || '@example.com', '+34 600 000 ' || lpad(n::text, 3, '0')
      from generate_series(1, 30) n
      returning id`
    const rows = Array.from({ length: 60 }, (_, n) => {
      const service = services[n % services.length] as { id: string; duration: number; price: string }
      const start = new Date(Date.UTC(2026, 10, 2 + Math.floor(n / 4), 9 + (n % 4) * 2))
      return {
        tenant_id: tenant,
        business_id: businessId,
        service_id: service.id,
        staff_id: staff[n % staff.length]?.id ?? null,
        customer_id: customers[n % customers.length]?.id as string,
        start_time: start,
        end_time: new Date(start.getTime() + service.duration * 60_000),
        status: appointmentStatus[n % 3] as string,
        price: service.price,
      }
    })
    await tx`insert into appointments ${tx(rows)}`
    return 1 + 5 + services.length + staff.length + customers.length + rows.length
  })
}
