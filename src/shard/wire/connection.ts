import { connect as connectSocket } from 'node:net'
import {
  type ColumnDescription,
  MessageWriter,
  readCommandComplete,
  readDataRow,
  readErrorFields,
  readRowDescription,
  writeBind,
  writeClose,
  writeDescribeStatement,
  writeExecute,
  writeParse,
  writePassword,
  writeQuery,
  writeSaslInitial,
  writeSaslResponse,
  writeStartup,
  writeSync,
  writeTerminate,
} from './messages.ts'
import { md5Password, startScram } from './scram.ts'

/**
 * One PostgreSQL connection that runs pipelines: any number of prepared statements followed by ONE
 * Sync, so the server answers a whole transaction with one flush and the client reads it in one pass.
 * Without BEGIN in it, a pipeline is one implicit transaction that ends at the Sync (and rolls back if
 * any step failed: the server skips the rest up to the Sync).
 */
export interface WireConnection {
  /** Runs the steps in order, then Sync. Rejects with a `PipelineError` naming the step that failed. */
  run(steps: readonly PipelineStep[]): Promise<StepResult[]>
  /** A simple-protocol query whose results nobody reads (ROLLBACK after a failed explicit transaction). */
  execute(sql: string): Promise<void>
  /** As the last ReadyForQuery said: idle, in a transaction block, or in a failed one. */
  readonly transactionStatus: 'I' | 'T' | 'E'
  /** The socket is gone or the server ended the session: drop the connection. */
  readonly broken: boolean
  close(): Promise<void>
  /** Called once when the socket closes, for whatever reason. */
  onClose(listener: () => void): void
}

export interface PipelineStep {
  sql: string
  /** Text values (or null), types left for the server to infer. */
  params: readonly (string | null)[]
}

export interface StepResult {
  command: string
  rowCount: number | null
  fields: ColumnDescription[]
  rows: (string | null)[][]
}

export interface ConnectOptions {
  /** postgres://user:password@host:port/database */
  url: string
  /** Run-time parameters sent at startup (application_name, statement_timeout, search_path, …). */
  parameters?: Record<string, string>
  connectTimeoutMs?: number
  /** Prepared statements kept per connection; the oldest are closed past this. */
  maxStatements?: number
}

/** A server's ErrorResponse, its fields named as postgres.js names them (`code` is the SQLSTATE). */
export class PostgresError extends Error {
  readonly code: string
  severity?: string
  detail?: string
  hint?: string
  position?: string
  routine?: string;
  [field: string]: unknown

  constructor(fields: Record<string, string>) {
    super(fields.message ?? 'unknown server error')
    this.name = 'PostgresError'
    this.code = fields.code ?? 'XX000'
    Object.assign(this, fields)
  }
}

/** The socket failed or closed: `code` is the system's (ECONNREFUSED, ECONNRESET, …) or CONNECTION_CLOSED. */
export class ConnectionError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message)
    this.name = 'ConnectionError'
  }
}

/** Step `step` of a pipeline failed with the server's error; the steps after it did not run. */
export class PipelineError extends Error {
  constructor(
    readonly step: number,
    override readonly cause: PostgresError,
  ) {
    super(cause.message)
    this.name = 'PipelineError'
  }
}

/** Errors after which the server dropped or replaced a cached plan: prepare again and rerun once. */
const STALE_STATEMENT_ROUTINES = new Set(['FetchPreparedStatement', 'RevalidateCachedQuery'])

interface PreparedStatement {
  name: string
  /** From Describe at prepare time: null until the server answered it. */
  fields: ColumnDescription[] | null
  parsed: boolean
}

/** What the connection is waiting for: it reads each backend message until ReadyForQuery. */
interface Exchange {
  message(type: number, body: Buffer): void | Promise<void>
  fail(error: Error): void
}

let statementNames = 0

export async function connectWire(options: ConnectOptions): Promise<WireConnection> {
  const url = new URL(options.url)
  const user = decodeURIComponent(url.username)
  const password = decodeURIComponent(url.password)
  const socket = connectSocket({ host: url.hostname || '127.0.0.1', port: Number(url.port || 5432) })
  socket.setNoDelay(true)
  socket.setKeepAlive(true, 60_000)
  const writer = new MessageWriter()
  const statements = new Map<string, PreparedStatement>()
  const maxStatements = options.maxStatements ?? 1000
  const closeListeners: (() => void)[] = []
  let exchange: Exchange | null = null
  let status: 'I' | 'T' | 'E' = 'I'
  let broken = false
  let closed = false

  const failWith = (error: Error) => {
    broken = true
    const current = exchange
    exchange = null
    current?.fail(error)
  }

  // A message split over several reads waits in `partial` until `partialNeeds` bytes are there, so a
  // large result is copied once, not once per read.
  let partial: Buffer[] = []
  let partialBytes = 0
  let partialNeeds = 0
  socket.on('data', (chunk: Buffer) => {
    let data = chunk
    if (partialBytes > 0) {
      partial.push(chunk)
      partialBytes += chunk.length
      if (partialBytes < partialNeeds) return
      data = Buffer.concat(partial, partialBytes)
      partial = []
      partialBytes = 0
    }
    let at = 0
    while (data.length - at >= 5) {
      const size = data.readInt32BE(at + 1)
      if (data.length - at - 1 < size) break
      const type = data[at] as number
      const body = data.subarray(at + 5, at + 1 + size)
      at += 1 + size
      dispatchMessage(type, body)
    }
    if (at === data.length) return
    const rest = data.subarray(at)
    partial = [rest]
    partialBytes = rest.length
    partialNeeds = rest.length >= 5 ? 1 + rest.readInt32BE(1) : 5
  })
  socket.on('error', (error: NodeJS.ErrnoException) => {
    failWith(new ConnectionError(error.code ?? 'ECONNRESET', error.message))
  })
  socket.on('close', () => {
    closed = true
    failWith(new ConnectionError('CONNECTION_CLOSED', `connection to ${url.host} closed`))
    for (const listener of closeListeners.splice(0)) listener()
  })

  function dispatchMessage(type: number, body: Buffer) {
    // 'E' with FATAL/PANIC: the server is ending the session (shutdown, terminate): no ReadyForQuery follows.
    if (type === 0x45) {
      const fields = readErrorFields(body)
      if (fields.severity === 'FATAL' || fields.severity === 'PANIC') {
        failWith(new PostgresError(fields))
        socket.destroy()
        return
      }
    }
    if (type === 0x5a) status = String.fromCharCode(body[0] as number) as 'I' | 'T' | 'E'
    const current = exchange
    if (!current) return // ParameterStatus, notices, notifications between exchanges
    const handled = current.message(type, body)
    if (handled instanceof Promise) handled.catch((error: Error) => failWith(error))
  }

  function begin<T>(
    send: () => void,
    reader: (done: (value: T) => void, fail: (e: Error) => void) => Exchange,
  ) {
    if (broken) return Promise.reject(new ConnectionError('CONNECTION_CLOSED', 'connection is closed'))
    if (exchange) return Promise.reject(new Error('the connection is busy: one exchange at a time'))
    return new Promise<T>((resolve, reject) => {
      try {
        send()
      } catch (error) {
        writer.take()
        throw error
      }
      exchange = reader(
        (value) => {
          exchange = null
          resolve(value)
        },
        (error) => {
          exchange = null
          reject(error)
        },
      )
      socket.write(writer.take())
    })
  }

  await startup()

  async function startup(): Promise<void> {
    const timeoutMs = options.connectTimeoutMs ?? 3000
    const timer = setTimeout(() => {
      failWith(new ConnectionError('CONNECT_TIMEOUT', `no connection to ${url.host} within ${timeoutMs} ms`))
      socket.destroy()
    }, timeoutMs)
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', () => {
          exchange = null
          resolve()
        })
        exchange = { message: () => {}, fail: reject }
      })
      await begin<void>(
        () =>
          writeStartup(writer, {
            user,
            database: decodeURIComponent(url.pathname.slice(1)) || user,
            client_encoding: 'UTF8',
            ...options.parameters,
          }),
        (done, fail) => authentication(user, password, done, fail),
      )
    } catch (error) {
      socket.destroy()
      throw error
    } finally {
      clearTimeout(timer)
    }
  }

  function authentication(
    user: string,
    password: string,
    done: () => void,
    fail: (e: Error) => void,
  ): Exchange {
    let scram: ReturnType<typeof startScram> | undefined
    const send = () => socket.write(writer.take())
    return {
      fail,
      async message(type, body) {
        if (type === 0x45) return fail(new PostgresError(readErrorFields(body)))
        if (type === 0x5a) return done()
        if (type !== 0x52) return // BackendKeyData, ParameterStatus, notices
        const method = body.readInt32BE(0)
        if (method === 0) return
        if (method === 3) writePassword(writer, password)
        else if (method === 5) writePassword(writer, md5Password(user, password, body.subarray(4, 8)))
        else if (method === 10) {
          if (!body.includes('SCRAM-SHA-256')) throw new Error('the server offers no SCRAM-SHA-256')
          scram = startScram(password)
          writeSaslInitial(writer, 'SCRAM-SHA-256', scram.clientFirst)
        } else if (method === 11 && scram) {
          writeSaslResponse(writer, await scram.clientFinal(body.toString('utf8', 4)))
        } else if (method === 12 && scram) {
          scram.verifyServerFinal(body.toString('utf8', 4))
          return
        } else throw new Error(`authentication method ${method} is not supported`)
        send()
      },
    }
  }

  function prepare(sql: string, fresh: PreparedStatement[]): PreparedStatement {
    const known = statements.get(sql)
    if (known) return known
    if (statements.size >= maxStatements) evictOldest()
    const statement: PreparedStatement = { name: `sy${++statementNames}`, fields: null, parsed: false }
    statements.set(sql, statement)
    writeParse(writer, statement.name, sql)
    writeDescribeStatement(writer, statement.name)
    fresh.push(statement)
    return statement
  }

  function evictOldest() {
    const [sql, oldest] = statements.entries().next().value as [string, PreparedStatement]
    statements.delete(sql)
    writeClose(writer, oldest.name)
  }

  async function run(steps: readonly PipelineStep[], retried = false): Promise<StepResult[]> {
    const fresh: PreparedStatement[] = []
    const used: PreparedStatement[] = []
    try {
      return await begin<StepResult[]>(
        () => {
          for (const step of steps) {
            const statement = prepare(step.sql, fresh)
            writeBind(writer, statement.name, step.params)
            writeExecute(writer)
            used.push(statement)
          }
          writeSync(writer)
        },
        (done, fail) => pipelineReader(used, fresh, done, fail),
      )
    } catch (error) {
      // Statements the server never prepared (or never described) must be prepared again next time.
      for (const statement of fresh) if (!statement.fields) forget(statement)
      if (!(error instanceof PipelineError) || !STALE_STATEMENT_ROUTINES.has(error.cause.routine ?? ''))
        throw error
      forget(used[error.step] as PreparedStatement)
      if (retried) throw error
      if (status !== 'I') await execute('rollback')
      return run(steps, true)
    }
  }

  function forget(statement: PreparedStatement) {
    for (const [sql, known] of statements) if (known === statement) statements.delete(sql)
  }

  function pipelineReader(
    used: readonly PreparedStatement[],
    fresh: PreparedStatement[],
    done: (results: StepResult[]) => void,
    fail: (error: Error) => void,
  ): Exchange {
    const results: StepResult[] = []
    let rows: (string | null)[][] = []
    let parsed = 0
    let described = 0
    let failure: PipelineError | undefined
    return {
      fail,
      message(type, body) {
        switch (type) {
          case 0x44: // DataRow
            rows.push(readDataRow(body))
            return
          case 0x43: {
            // CommandComplete
            const fields = used[results.length]?.fields ?? []
            results.push({ ...readCommandComplete(body), fields, rows })
            rows = []
            return
          }
          case 0x31: // ParseComplete
            ;(fresh[parsed++] as PreparedStatement).parsed = true
            return
          case 0x54: // RowDescription (of a Describe of a statement)
            ;(fresh[described++] as PreparedStatement).fields = readRowDescription(body)
            return
          case 0x6e: // NoData
            ;(fresh[described++] as PreparedStatement).fields = []
            return
          case 0x49: // EmptyQueryResponse
            results.push({ command: '', rowCount: null, fields: [], rows: [] })
            return
          case 0x45: // ErrorResponse: the server skips the rest, up to the Sync
            failure = new PipelineError(results.length, new PostgresError(readErrorFields(body)))
            return
          case 0x5a: // ReadyForQuery
            if (failure) fail(failure)
            else done(results)
            return
          // BindComplete, CloseComplete, ParameterDescription, notices: nothing to keep.
        }
      },
    }
  }

  function execute(sql: string): Promise<void> {
    return begin<void>(
      () => writeQuery(writer, sql),
      (done, fail) => {
        let failure: PostgresError | undefined
        return {
          fail,
          message(type, body) {
            if (type === 0x45) failure = new PostgresError(readErrorFields(body))
            if (type === 0x5a) {
              if (failure) fail(failure)
              else done()
            }
          },
        }
      },
    )
  }

  return {
    run: (steps) => run(steps),
    execute,
    get transactionStatus() {
      return status
    },
    get broken() {
      return broken
    },
    onClose(listener) {
      if (closed) listener()
      else closeListeners.push(listener)
    },
    close() {
      if (closed) return Promise.resolve()
      broken = true
      return new Promise<void>((resolve) => {
        socket.once('close', () => resolve())
        writeTerminate(writer)
        socket.end(writer.take())
        // A server that does not answer the Terminate must not hold the close open.
        setTimeout(() => socket.destroy(), 2000).unref()
      })
    },
  }
}
