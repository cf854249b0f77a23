import type { CancelSignal } from './cancel.ts'
import { ConnectionError, type ConnectOptions, connectWire, type WireConnection } from './connection.ts'
import { PoolTimeoutError, QueryCancelledError } from './errors.ts'

export interface WirePoolOptions extends ConnectOptions {
  /** Connections at most; callers past it wait for one to be released. */
  max: number
  /** Idle connections are closed after this long (the most recently used are kept busy first). */
  idleTimeoutMs?: number
  /**
   * Connections kept open even when idle, opened when the pool is made (and again by the idle sweep if
   * they were lost): the first requests for a tenant that just moved to a shard this router had not
   * used yet do not wait for logins in the middle of the cutover.
   */
  minIdle?: number
  /**
   * Runs on every new connection before anyone gets it. `false`: this session started wrong (the
   * check put it right for the next one): it is closed and one more is opened. A throw fails the open.
   */
  prepare?: (connection: WireConnection) => Promise<boolean>
}

export interface ReserveOptions {
  /** Aborting it gives up the wait: reserve() rejects with QueryCancelledError(signal.reason). */
  signal?: CancelSignal | undefined
  /** The longest wait for a connection (queued or opening): past it, PoolTimeoutError (`pool_timeout`). */
  timeoutMs?: number | undefined
}

export interface WirePool {
  /** A connection for this caller alone until `release`: opened on demand, or the next one released. */
  reserve(options?: ReserveOptions): Promise<WireConnection>
  /**
   * Back to the pool once its exchange (and any cancel) has settled; a connection left inside a
   * transaction is rolled back first, a broken one dropped.
   */
  release(connection: WireConnection): void
  /** Open connections, reserved or idle. */
  readonly size: number
  /** Connections reserved and not yet released. */
  readonly reserved: number
  /** Callers waiting for a connection. */
  readonly waiting: number
  /** Refuses new reservations, waits up to `timeoutMs` for reserved connections to come back, closes all. */
  close(timeoutMs?: number): Promise<void>
}

interface Waiter {
  /** False once it was served, timed out or aborted: a connection offered then goes to the next. */
  open: boolean
  resolve(connection: WireConnection): void
  reject(error: Error): void
}

export function createWirePool(options: WirePoolOptions): WirePool {
  const name = options.name ?? new URL(options.url).host
  const open = new Set<WireConnection>()
  const idle: { connection: WireConnection; since: number }[] = []
  const waiters: Waiter[] = []
  let connecting = 0
  let closing = false
  let drained: (() => void) | undefined
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000
  const minIdle = Math.min(options.minIdle ?? 0, options.max)
  const sweep = setInterval(
    () => {
      closeIdle()
      warm()
    },
    Math.max(1000, idleTimeoutMs / 2),
  )
  sweep.unref()
  warm()

  function closeIdle() {
    const now = Date.now()
    for (let i = idle.length - 1; i >= 0 && open.size > minIdle; i--) {
      const entry = idle[i] as (typeof idle)[number]
      if (now - entry.since < idleTimeoutMs) continue
      idle.splice(i, 1)
      void entry.connection.close()
    }
  }

  /** Opens connections up to `minIdle`; a node that does not answer is tried again at the next sweep. */
  function warm() {
    for (let missing = minIdle - open.size - connecting; missing > 0 && !closing; missing--) {
      openOne().then(
        (connection) => (closing ? void connection.close() : handOff(connection)),
        // A caller may have queued behind this connect: it gets an attempt of its own (and its error).
        () => replaceFor(nextWaiter()),
      )
    }
  }

  async function openOne(): Promise<WireConnection> {
    connecting++
    try {
      for (let attempt = 0; ; attempt++) {
        const connection = await connectWire(options)
        const ready = await (options.prepare?.(connection) ?? Promise.resolve(true)).catch(
          async (error: unknown) => {
            await connection.close()
            throw error
          },
        )
        if (ready || attempt > 0) {
          if (!ready) {
            await connection.close()
            throw new ConnectionError('SESSION_REFUSED', `${name}: a new session did not start clean`)
          }
          open.add(connection)
          connection.onClose(() => forget(connection))
          return connection
        }
        await connection.close()
      }
    } finally {
      connecting--
    }
  }

  function forget(connection: WireConnection) {
    open.delete(connection)
    const at = idle.findIndex((entry) => entry.connection === connection)
    if (at !== -1) idle.splice(at, 1)
    if (closing && open.size === 0) drained?.()
    else replaceFor(nextWaiter())
  }

  function nextWaiter(): Waiter | undefined {
    for (let waiter = waiters.shift(); waiter; waiter = waiters.shift()) if (waiter.open) return waiter
    return undefined
  }

  /** A connection went away while callers wait: open a new one for the first of them. */
  function replaceFor(waiter: Waiter | undefined) {
    if (!waiter) return
    openOne().then(
      (connection) => serve(waiter, connection),
      (error: Error) => waiter.reject(error),
    )
  }

  /** Gives `connection` to `waiter`, or to whoever is next if that one stopped waiting. */
  function serve(waiter: Waiter, connection: WireConnection) {
    if (waiter.open) waiter.resolve(connection)
    else handOff(connection)
  }

  function handOff(connection: WireConnection) {
    const waiter = nextWaiter()
    if (waiter) waiter.resolve(connection)
    else idle.push({ connection, since: Date.now() })
  }

  function ready(connection: WireConnection) {
    if (closing || connection.broken) {
      void connection.close()
      return
    }
    if (connection.transactionStatus === 'I') return handOff(connection)
    connection.execute('rollback').then(
      () => handOff(connection),
      () => void connection.close(),
    )
  }

  return {
    reserve(reserveOptions = {}) {
      if (closing) return Promise.reject(new ConnectionError('CONNECTION_ENDED', 'the pool is closed'))
      const { signal, timeoutMs } = reserveOptions
      if (signal?.aborted) return Promise.reject(new QueryCancelledError(signal.reason))
      for (let entry = idle.pop(); entry; entry = idle.pop()) {
        if (!entry.connection.broken) return Promise.resolve(entry.connection)
      }
      const opening = open.size + connecting < options.max
      if (opening && !signal && timeoutMs === undefined) return openOne()
      return new Promise<WireConnection>((resolve, reject) => {
        const started = performance.now()
        let timer: NodeJS.Timeout | undefined
        const settle = () => {
          waiter.open = false
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
        }
        const waiter: Waiter = {
          open: true,
          resolve(connection) {
            settle()
            resolve(connection)
          },
          reject(error) {
            settle()
            reject(error)
          },
        }
        const onAbort = () => waiter.reject(new QueryCancelledError(signal?.reason))
        signal?.addEventListener('abort', onAbort, { once: true })
        if (timeoutMs !== undefined)
          timer = setTimeout(
            () => waiter.reject(new PoolTimeoutError(name, Math.round(performance.now() - started))),
            timeoutMs,
          )
        if (opening) replaceFor(waiter)
        else waiters.push(waiter)
      })
    },
    release(connection) {
      // A cancelled pipeline settles before run() does, but a caller that lets go early must not
      // hand a connection with a cancel in flight to the next one.
      if (connection.busy) connection.idle().then(() => ready(connection))
      else ready(connection)
    },
    get size() {
      return open.size
    },
    get reserved() {
      return open.size - idle.length
    },
    get waiting() {
      return waiters.filter((waiter) => waiter.open).length
    },
    async close(timeoutMs = 10_000) {
      closing = true
      clearInterval(sweep)
      for (let waiter = nextWaiter(); waiter; waiter = nextWaiter())
        waiter.reject(new ConnectionError('CONNECTION_ENDED', 'the pool is closed'))
      for (const entry of idle.splice(0)) void entry.connection.close()
      if (open.size === 0) return
      const timer = setTimeout(() => {
        for (const connection of open) void connection.close()
      }, timeoutMs)
      await new Promise<void>((resolve) => {
        drained = resolve
      })
      clearTimeout(timer)
    },
  }
}
