import { ConnectionError, type ConnectOptions, connectWire, type WireConnection } from './connection.ts'

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
}

export interface WirePool {
  /** A connection for this caller alone until `release`: opened on demand, or the next one released. */
  reserve(): Promise<WireConnection>
  /** Back to the pool; a connection left inside a transaction is rolled back first, a broken one dropped. */
  release(connection: WireConnection): void
  /** Open connections, reserved or idle. */
  readonly size: number
  /** Connections reserved and not yet released. */
  readonly reserved: number
  /** Refuses new reservations, waits up to `timeoutMs` for reserved connections to come back, closes all. */
  close(timeoutMs?: number): Promise<void>
}

interface Waiter {
  resolve(connection: WireConnection): void
  reject(error: Error): void
}

export function createWirePool(options: WirePoolOptions): WirePool {
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
        () => {},
      )
    }
  }

  async function openOne(): Promise<WireConnection> {
    connecting++
    try {
      const connection = await connectWire(options)
      open.add(connection)
      connection.onClose(() => forget(connection))
      return connection
    } finally {
      connecting--
    }
  }

  function forget(connection: WireConnection) {
    open.delete(connection)
    const at = idle.findIndex((entry) => entry.connection === connection)
    if (at !== -1) idle.splice(at, 1)
    if (closing && open.size === 0) drained?.()
    else replaceFor(waiters.shift())
  }

  /** A connection went away while callers wait: open a new one for the first of them. */
  function replaceFor(waiter: Waiter | undefined) {
    if (!waiter) return
    openOne().then(waiter.resolve, waiter.reject)
  }

  function handOff(connection: WireConnection) {
    const waiter = waiters.shift()
    if (waiter) waiter.resolve(connection)
    else idle.push({ connection, since: Date.now() })
  }

  return {
    reserve() {
      if (closing) return Promise.reject(new ConnectionError('CONNECTION_ENDED', 'the pool is closed'))
      for (let entry = idle.pop(); entry; entry = idle.pop()) {
        if (!entry.connection.broken) return Promise.resolve(entry.connection)
      }
      if (open.size + connecting < options.max) return openOne()
      return new Promise<WireConnection>((resolve, reject) => waiters.push({ resolve, reject }))
    },
    release(connection) {
      if (closing || connection.broken) {
        void connection.close()
        return
      }
      if (connection.transactionStatus === 'I') return handOff(connection)
      connection.execute('rollback').then(
        () => handOff(connection),
        () => void connection.close(),
      )
    },
    get size() {
      return open.size
    },
    get reserved() {
      return open.size - idle.length
    },
    async close(timeoutMs = 10_000) {
      closing = true
      clearInterval(sweep)
      for (const waiter of waiters.splice(0))
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
