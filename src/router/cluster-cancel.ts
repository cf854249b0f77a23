import type { Worker } from 'node:cluster'
import { z } from 'zod'

/**
 * CancelRequests under `router --workers N`. PostgreSQL clients send a cancel on a connection of its own,
 * and the primary hands that connection to the next worker, seldom the one serving the session. A worker
 * that does not know the session passes the cancel to the primary, which passes it to every other worker;
 * the one that has the session checks its key (constant time) and cancels. Nothing is answered: a
 * CancelRequest never is.
 */

const CANCEL = 'switchyard:wire-cancel'
const CANCEL_HERE = 'switchyard:wire-cancel-here'

/** Protocol 3.2 allows keys of up to 256 bytes: 512 hex digits. */
const Cancel = z.strictObject({
  type: z.enum([CANCEL, CANCEL_HERE]),
  pid: z.number().int(),
  secret: z.string().regex(/^[0-9a-f]{0,512}$/),
})

/** How a worker's PostgreSQL front end reaches sessions in the other workers. */
export interface CancelRelay {
  /** A cancel for a session this worker does not have. */
  forward(pid: number, secret: Buffer): void
  /** Calls `cancel` for each cancel another worker forwarded. */
  onForwarded(cancel: (pid: number, secret: Buffer) => void): void
}

/** In a worker: cancels go through the primary. */
export function cancelsThroughPrimary(): CancelRelay {
  return {
    forward(pid, secret) {
      process.send?.({ type: CANCEL, pid, secret: secret.toString('hex') })
    },
    onForwarded(cancel) {
      process.on('message', (raw: unknown) => {
        const message = Cancel.safeParse(raw)
        if (message.success && message.data.type === CANCEL_HERE)
          cancel(message.data.pid, Buffer.from(message.data.secret, 'hex'))
      })
    },
  }
}

/** In the primary: a worker's cancel goes to every other worker serving now. */
export function relayCancels(workers: () => Worker[]) {
  return {
    onMessage(from: Worker, raw: unknown) {
      const message = Cancel.safeParse(raw)
      if (!message.success || message.data.type !== CANCEL) return
      for (const worker of workers())
        if (worker !== from && worker.isConnected()) worker.send({ ...message.data, type: CANCEL_HERE })
    },
  }
}
