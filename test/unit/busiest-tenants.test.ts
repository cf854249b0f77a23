import { describe, expect, it } from 'vitest'
import { createBusiestTenants } from '../../src/router/busiest-tenants.ts'
import { createMetrics, TOP_TENANTS } from '../../src/router/metrics.ts'

describe('the busiest tenants of the last minute (switchyard_top_tenant_requests)', () => {
  it('ranks tenants by their requests of the last minute, most first, and names only the top n', () => {
    let now = 1_000_000
    const busiest = createBusiestTenants(() => now)
    const send = (tenant: string, times: number) => {
      for (let i = 0; i < times; i++) busiest.count(tenant)
    }
    send('b', 3)
    send('a', 5)
    now += 25_000
    send('b', 4)
    send('c', 1)
    expect(busiest.top(2)).toEqual([
      { tenant: 'b', requests: 7 },
      { tenant: 'a', requests: 5 },
    ])
    expect(busiest.top(10)).toHaveLength(3)
  })

  it('forgets requests once they are more than a minute old', () => {
    let now = 0
    const busiest = createBusiestTenants(() => now)
    busiest.count('old')
    now = 30_000
    busiest.count('recent')
    now = 65_000
    // The first 10-second slot has left the minute; the one 35 s ago is still in it.
    expect(busiest.top(10)).toEqual([{ tenant: 'recent', requests: 1 }])
    now = 100_000
    expect(busiest.top(10)).toEqual([])
  })

  it('exports only the top tenants, and a tenant that leaves the top loses its series', async () => {
    const metrics = createMetrics()
    const sample = async () =>
      (await metrics.registry.getSingleMetric('switchyard_top_tenant_requests')?.get())?.values ?? []
    for (let t = 0; t < TOP_TENANTS + 5; t++)
      for (let i = 0; i <= t; i++) metrics.countTenantRequest(`tenant-${String(t).padStart(2, '0')}`)
    const first = await sample()
    expect(first).toHaveLength(TOP_TENANTS)
    expect(first.map((s) => s.labels.tenant)).not.toContain('tenant-00')
    expect(Math.min(...first.map((s) => s.value))).toBe(6)
    for (let i = 0; i < 100; i++) metrics.countTenantRequest('tenant-00')
    const second = await sample()
    expect(second).toHaveLength(TOP_TENANTS)
    expect(second.map((s) => s.labels.tenant)).toContain('tenant-00')
    expect(second.map((s) => s.labels.tenant)).not.toContain('tenant-05')
  })
})
