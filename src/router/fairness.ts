import { SwitchyardError } from '../errors.ts'
import type { CancelSignal } from '../shard/wire/cancel.ts'
import { QueryCancelledError } from '../shard/wire/connection.ts'

/**
 * A fair share of each node's pool per tenant (invariant 8). At most `perTenant` of one tenant's
 * transactions hold connections of one node at a time; up to `queue` more wait for the tenant's own
 * transactions to finish (first come, first served), and past that the tenant is told to slow down
 * (429 `tenant_busy`). However many requests a tenant sends, the rest of the pool stays for the others:
 * twenty `pg_sleep(29)` of one tenant no longer fill a primary's pool.
 */
export interface TenantShares {
  /**
   * A slot of `node` for `tenant`, now or when one of the tenant's transactions there ends; the
   * returned function gives it back (call it once). Rejects with `tenant_busy` when the queue is full,
   * or with a QueryCancelledError carrying the signal's reason when it aborts while waiting.
   */
  acquire(tenant: string, node: string, signal?: CancelSignal): Promise<() => void>
}

interface Share {
  running: number
  waiting: { grant(): void; abort(reason: unknown): void }[]
}

export function createTenantShares(perTenant: number, queue: number): TenantShares {
  const shares = new Map<string, Share>()

  function release(key: string, share: Share) {
    const next = share.waiting.shift()
    if (next) return next.grant()
    share.running--
    if (share.running === 0) shares.delete(key)
  }

  return {
    acquire(tenant, node, signal) {
      const key = `${node}\u0000${tenant}`
      let share = shares.get(key)
      if (!share) {
        share = { running: 0, waiting: [] }
        shares.set(key, share)
      }
      const held = share
      let released = false
      const done = () => {
        if (released) return
        released = true
        release(key, held)
      }
      if (held.running < perTenant) {
        held.running++
        return Promise.resolve(done)
      }
      if (held.waiting.length >= queue) {
        return Promise.reject(
          new SwitchyardError(
            'tenant_busy',
            `tenant ${tenant} already has ${perTenant} transactions running on ${node} and ${queue} waiting; retry shortly`,
            { retryAfterSeconds: 1 },
          ),
        )
      }
      if (signal?.aborted) return Promise.reject(new QueryCancelledError(signal.reason))
      return new Promise((resolve, reject) => {
        const waiter = {
          // A slot handed over keeps `running` as it is: the finished transaction's becomes this one's.
          grant() {
            signal?.removeEventListener('abort', onAbort)
            resolve(done)
          },
          abort(reason: unknown) {
            const at = held.waiting.indexOf(waiter)
            if (at !== -1) held.waiting.splice(at, 1)
            reject(reason)
          },
        }
        const onAbort = () => waiter.abort(new QueryCancelledError(signal?.reason))
        signal?.addEventListener('abort', onAbort, { once: true })
        held.waiting.push(waiter)
      })
    },
  }
}
