import { SwitchyardError } from '../errors.ts'

/** Where an answer's bytes go: its ServerResponse, which says when they are gone (`close`). */
export interface Outgoing {
  once(event: 'close', listener: () => void): unknown
}

/**
 * Answers built but not yet read by their clients (invariant 8). An answer is a string the router holds
 * until the client's socket takes it: a client that sends requests and never reads would make the
 * router hold every answer at once. Each tenant may have a quarter of `maxBytes` unread and everyone
 * together `maxBytes`; past that a request is refused before it runs (nothing ran: safe to retry). A
 * client that reads nothing for long is dropped by the server's socket timeout, which frees its answers.
 */
export interface UnreadAnswers {
  /** Throws `tenant_busy` (429) or `router_busy` (503) when the tenant's or everyone's bytes are past the bound. */
  admit(tenant: string): void
  /** Counts `bytes` for `tenant` until `outgoing` closes (the bytes were sent, or the socket is gone). */
  hold(tenant: string, bytes: number, outgoing: Outgoing | undefined): void
  readonly bytes: number
}

export function createUnreadAnswers(maxBytes: number): UnreadAnswers {
  const perTenant = Math.floor(maxBytes / 4)
  const byTenant = new Map<string, number>()
  let total = 0
  return {
    admit(tenant) {
      if ((byTenant.get(tenant) ?? 0) > perTenant)
        throw new SwitchyardError(
          'tenant_busy',
          `tenant ${tenant}'s clients have not read ${byTenant.get(tenant)} bytes of earlier answers; read them, then retry`,
          { retryAfterSeconds: 1 },
        )
      if (total > maxBytes)
        throw new SwitchyardError(
          'router_busy',
          'this router holds too many answers its clients have not read yet; retry shortly',
          { retryAfterSeconds: 1 },
        )
    },
    hold(tenant, bytes, outgoing) {
      if (!outgoing) return
      total += bytes
      byTenant.set(tenant, (byTenant.get(tenant) ?? 0) + bytes)
      outgoing.once('close', () => {
        total -= bytes
        const left = (byTenant.get(tenant) ?? 0) - bytes
        if (left <= 0) byTenant.delete(tenant)
        else byTenant.set(tenant, left)
      })
    },
    get bytes() {
      return total
    },
  }
}
