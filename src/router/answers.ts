import { SwitchyardError } from '../errors.ts'

/** Where an answer's bytes go: its ServerResponse and the request's socket, which say when they are gone. */
export interface Outgoing {
  once(event: 'finish' | 'close', listener: () => void): unknown
  req?: {
    socket?: {
      destroyed: boolean
      once(event: 'close', listener: () => void): unknown
      removeListener(event: 'close', listener: () => void): unknown
    } | null
  }
}

/**
 * Answers built but not yet read by their clients (invariant 8). An answer is a string the router holds
 * until the client's socket takes it: a client that sends requests and never reads would make the
 * router hold every answer at once. Each tenant may have a quarter of `maxBytes` unread and everyone
 * together `maxBytes`. A request is refused before it runs when its tenant (or everyone) is past that,
 * and a read's answer is refused when it would pass it (nothing was changed: safe to retry); a write's
 * answer is always sent (a tenant's concurrent writes are bounded by its share of the pools). A client
 * that reads nothing for long is dropped by the server's socket timeout, which frees its answers.
 */
export interface UnreadAnswers {
  /** Throws `tenant_busy` (429) or `router_busy` (503) when the tenant's or everyone's bytes are past the bound. */
  admit(tenant: string, adding?: number): void
  /**
   * Counts `bytes` for `tenant` until the answer is handed to the socket or the socket is gone,
   * whichever comes first (a pipelined response that never got the socket sees only the latter).
   */
  hold(tenant: string, bytes: number, outgoing: Outgoing | undefined): void
  /** Counts `bytes` for `tenant` until the returned release is called (a PostgreSQL session's socket drains). */
  take(tenant: string, bytes: number): () => void
  readonly bytes: number
}

export function createUnreadAnswers(maxBytes: number): UnreadAnswers {
  const perTenant = Math.floor(maxBytes / 4)
  const byTenant = new Map<string, number>()
  let total = 0
  function take(tenant: string, bytes: number): () => void {
    total += bytes
    byTenant.set(tenant, (byTenant.get(tenant) ?? 0) + bytes)
    let held = true
    return () => {
      if (!held) return
      held = false
      total -= bytes
      const left = (byTenant.get(tenant) ?? 0) - bytes
      if (left <= 0) byTenant.delete(tenant)
      else byTenant.set(tenant, left)
    }
  }
  return {
    admit(tenant, adding = 0) {
      const mine = byTenant.get(tenant) ?? 0
      // With nothing held, one answer always goes (its size is bounded by maxResultBytes alone).
      if (mine > 0 && mine + adding > perTenant)
        throw new SwitchyardError(
          'tenant_busy',
          `tenant ${tenant}'s clients have not read ${mine} bytes of earlier answers; read them, then retry`,
          { retryAfterSeconds: 1 },
        )
      if (total > 0 && total + adding > maxBytes)
        throw new SwitchyardError(
          'router_busy',
          'this router holds too many answers its clients have not read yet; retry shortly',
          { retryAfterSeconds: 1 },
        )
    },
    take,
    hold(tenant, bytes, outgoing) {
      const socket = outgoing?.req?.socket
      if (!outgoing || !socket || socket.destroyed) return
      const taken = take(tenant, bytes)
      const release = () => {
        // A keep-alive socket serves many answers: its listener goes with the answer it was added for.
        socket.removeListener('close', release)
        taken()
      }
      outgoing.once('finish', release)
      outgoing.once('close', release)
      socket.once('close', release)
    },
    get bytes() {
      return total
    },
  }
}
