/**
 * Which tenants sent this router the most requests in the last minute, for the `switchyard_top_tenant_requests`
 * gauge. A per-tenant label on every request metric would make a series per tenant (thousands) in
 * every histogram; this keeps one count per tenant for a minute in memory and exports only the top few
 * when scraped.
 *
 * The minute is six 10-second slots: a count lands in the current slot, and a slot older than the
 * minute is dropped when the clock passes it, so the window is the last 50 to 60 seconds.
 */

const SLOT_MS = 10_000
const SLOTS = 6
/**
 * Distinct tenants counted per slot at most: requests reach here only for tenants the directory knows,
 * so this bounds memory only against a directory of more tenants than this.
 */
const MAX_TENANTS_PER_SLOT = 100_000

export interface BusiestTenants {
  /** One request of `tenant`, now. */
  count(tenant: string): void
  /** The `n` tenants with the most requests in the last minute, most first (ties in tenant order). */
  top(n: number): { tenant: string; requests: number }[]
}

export function createBusiestTenants(now: () => number = Date.now): BusiestTenants {
  /** Slot number (ms / SLOT_MS) → tenant → requests; at most SLOTS entries. */
  const slots = new Map<number, Map<string, number>>()

  // Slots that ended more than a minute ago are forgotten, whenever anything looks at the counts.
  const dropOld = (current: number) => {
    for (const slot of slots.keys()) if (slot <= current - SLOTS) slots.delete(slot)
  }

  return {
    count(tenant) {
      const current = Math.floor(now() / SLOT_MS)
      let counts = slots.get(current)
      if (!counts) {
        dropOld(current)
        counts = new Map()
        slots.set(current, counts)
      }
      const known = counts.get(tenant)
      if (known !== undefined) counts.set(tenant, known + 1)
      else if (counts.size < MAX_TENANTS_PER_SLOT) counts.set(tenant, 1)
    },
    top(n) {
      dropOld(Math.floor(now() / SLOT_MS))
      const totals = new Map<string, number>()
      for (const counts of slots.values())
        for (const [tenant, requests] of counts) totals.set(tenant, (totals.get(tenant) ?? 0) + requests)
      return [...totals]
        .map(([tenant, requests]) => ({ tenant, requests }))
        .sort((a, b) => b.requests - a.requests || (a.tenant < b.tenant ? -1 : 1))
        .slice(0, n)
    },
  }
}
