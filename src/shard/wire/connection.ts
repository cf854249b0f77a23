import { randomBytes } from 'node:crypto'
import type { CancelSignal } from './cancel.ts'
import {
  AuthenticationError,
  ConnectionError,
  PipelineError,
  PostgresError,
  QueryCancelledError,
  ResultTooLargeError,
  TooManyParametersError,
  WireError,
} from './errors.ts'
import {
  type ColumnDescription,
  MAX_PARAMETERS,
  MessageWriter,
  readCommandComplete,
  readDataRow,
  readErrorFields,
  readParameterDescription,
  readRowDescription,
  readSaslMechanisms,
  writeBind,
  writeClose,
  writeCopyFail,
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
import { type ChannelBinding, md5Password, startScram } from './scram.ts'
import { type Endpoint, openTransport, sendCancelRequest, type TlsOptions, type Transport } from './tls.ts'

export * from './errors.ts'
export type { SslMode, TlsOptions } from './tls.ts'

/**
 * One PostgreSQL connection that runs pipelines: any number of prepared statements followed by ONE
 * Sync, so the server answers a whole transaction with one flush and the client reads it in one pass.
 * Without BEGIN in it, a pipeline is one implicit transaction that ends at the Sync (and rolls back if
 * any step failed: the server skips the rest up to the Sync).
 */
export interface WireConnection {
  /**
   * Runs the steps in order, then Sync. Rejects with a `WireError` that says how many steps completed
   * and whether anything was sent: `PipelineError` (a step failed on the server), `ResultTooLargeError`,
   * `QueryCancelledError` (the signal aborted), `TooManyParametersError`, `ConnectionError`. After a
   * cancel (by signal, by budget or by `cancel()`) it settles only once the cancel can no longer hit a
   * later query on this connection; past `cancelGraceMs` the connection is dropped instead.
   */
  run(steps: readonly PipelineStep[], options?: RunOptions): Promise<StepResult[]>
  /**
   * Prepares the statements (Parse and Describe, nothing bound or run) and tells what each takes and
   * returns: a front end's answer to its client's Describe. Cached statements cost no round trip.
   */
  describe(
    statements: readonly Pick<PipelineStep, 'sql' | 'paramTypes'>[],
    options?: RunOptions,
  ): Promise<StatementDescription[]>
  /** A simple-protocol query whose results nobody reads (ROLLBACK after a failed explicit transaction). */
  execute(sql: string): Promise<void>
  /**
   * Cancels the running pipeline (which then rejects with `QueryCancelledError` carrying `reason`);
   * resolves once the server has taken the cancel request. Nothing running: nothing is sent. For a
   * client that went away this is cheaper than a signal per run.
   */
  cancel(reason?: unknown): Promise<void>
  /** As the last ReadyForQuery said: idle, in a transaction block, or in a failed one. */
  readonly transactionStatus: 'I' | 'T' | 'E'
  /** The socket is gone or the server ended the session: drop the connection. */
  readonly broken: boolean
  /** An exchange is running (or a cancelled pipeline has not settled yet). */
  readonly busy: boolean
  /** Resolves when no exchange is running (a cancelled pipeline has settled) or the connection broke. */
  idle(): Promise<void>
  /** What the login negotiated. */
  readonly info: ConnectionInfo
  close(): Promise<void>
  /** Called once when the socket closes, for whatever reason. */
  onClose(listener: () => void): void
}

export interface ConnectionInfo {
  /** The backend's process id (pg_stat_activity.pid). */
  pid: number
  tls: boolean
  /** SCRAM-SHA-256-PLUS (channel-bound), SCRAM-SHA-256, or with allowInsecureAuth md5, password or trust. */
  authentication: string
}

export interface PipelineStep {
  sql: string
  /**
   * Text values (or null), types left for the server to infer; or, with `paramFormats` saying so, a
   * client's binary values. At most 65535.
   */
  params: readonly (string | Buffer | null)[]
  /**
   * What the PostgreSQL front end passes on from its client (src/router/wire): Parse's parameter types
   * (OIDs, 0: inferred; part of what names the prepared statement), Bind's format codes for parameters
   * and for result columns, and `raw`: keep each DataRow's body as it came (in `StepResult.raw`)
   * instead of decoding it as text.
   */
  paramTypes?: readonly number[] | undefined
  paramFormats?: readonly number[] | undefined
  resultFormats?: readonly number[] | undefined
  raw?: boolean | undefined
}

export interface StepResult {
  command: string
  rowCount: number | null
  fields: ColumnDescription[]
  rows: (string | null)[][]
  /** With `raw`: each DataRow's body (column count, then each value's length and bytes). */
  raw?: Buffer[]
  /** Of `describe()`: the statement's parameter types. */
  paramTypes?: number[]
}

/** What a Describe of a statement tells: its parameters' types and its result columns (none: no rows). */
export interface StatementDescription {
  paramTypes: number[]
  fields: ColumnDescription[]
}

export interface RunOptions {
  /** Aborting it cancels the pipeline on the server; run() rejects with QueryCancelledError(signal.reason). */
  signal?: CancelSignal | undefined
  /**
   * A deadline: past it the pipeline is cancelled as by an aborted signal, with reason `DEADLINE`. It
   * costs a timer, where a signal costs an EventTarget listener (measured: several µs per run more).
   */
  timeoutMs?: number | undefined
  /** DataRows the whole pipeline may return; past it: cancelled, ResultTooLargeError. */
  maxRows?: number | undefined
  /**
   * Bytes the whole pipeline may return: DataRow payloads plus what rendering them costs (renderCost);
   * COPY TO STDOUT data counts too.
   */
  maxBytes?: number | undefined
}

/**
 * What a statement's columns add to the answer the router builds from its rows, besides the values
 * PostgreSQL sends: each row repeats every column's name (object rows) and some punctuation, and each
 * result describes every column once (name, type, table, …). Charged to the byte budget so that it
 * bounds what the router holds and sends, not just what it reads: 150 rows of 1,660 NULL columns named
 * with 63 characters are 1 MB of DataRows and 18 MB of JSON.
 */
export function renderCost(fields: readonly ColumnDescription[]): { row: number; result: number } {
  let names = 0
  for (const field of fields) names += field.name.length
  return { row: names + 8 * fields.length, result: names + 128 * fields.length }
}

export interface ConnectOptions {
  /** postgres://user:password@host:port/database */
  url: string
  /** How errors name the node (default host:port). */
  name?: string
  /** Run-time parameters sent at startup (application_name, statement_timeout, search_path, …). */
  parameters?: Record<string, string>
  connectTimeoutMs?: number
  /** Prepared statements kept per connection (least recently used closed past it). Default 1000. */
  maxStatements?: number
  /**
   * Bytes of SQL text the kept statements may add up to (default 4 MiB). A statement longer than this
   * alone runs as the unnamed statement, parsed every time.
   */
  maxStatementBytes?: number
  /** The budgets of a run that names none: a safety net (default 1,000,000 rows, 256 MiB). */
  maxRows?: number
  maxBytes?: number
  /** How long a cancelled pipeline may take to settle before the connection is dropped (default 2000). */
  cancelGraceMs?: number
  /** TLS to the node; sslmode `prefer` by default. */
  tls?: TlsOptions
  /**
   * Accept cleartext passwords, MD5 and logins without any authentication (trust). Off by default,
   * TLS or not: with SCRAM the node never learns the password (the router's role has the same one on
   * every node), and only SCRAM's final message proves that the node knew it.
   */
  allowInsecureAuth?: boolean
}

/** The reason of a QueryCancelledError when `timeoutMs` ran out. */
export const DEADLINE = 'deadline'

const NO_TYPES: readonly number[] = []

/** Errors after which the server dropped or replaced a cached plan: prepare again and rerun once. */
const STALE_STATEMENT_ROUTINES = new Set(['FetchPreparedStatement', 'RevalidateCachedQuery'])

/** Nothing PostgreSQL sends is larger (MaxAllocSize); a bigger length means the stream is corrupt. */
const MAX_MESSAGE_BYTES = 0x3fffffff
/** Of an ErrorResponse, what is read: severity and SQLSTATE come first, the message may quote a huge value. */
const MAX_ERROR_BYTES = 64 * 1024

const DEFAULTS = {
  maxStatements: 1000,
  maxStatementBytes: 4 * 1024 * 1024,
  maxRows: 1_000_000,
  maxBytes: 256 * 1024 * 1024,
  cancelGraceMs: 2000,
  connectTimeoutMs: 3000,
}

interface PreparedStatement {
  /** Random per-connection prefix + counter; '' for a statement too long to keep. */
  name: string
  sql: string
  /** What names it in the cache: its SQL, and its parameter types when Parse gives them. */
  key: string
  paramTypes: readonly number[]
  /** From ParameterDescription at prepare time. */
  described: number[] | null
  /** SQL bytes counted against maxStatementBytes (0 when not kept). */
  bytes: number
  /** new: planned in this run; sent: Parse written; parsed: ParseComplete came; ready: described too. */
  state: 'new' | 'sent' | 'parsed' | 'ready'
  /** From Describe at prepare time. */
  fields: ColumnDescription[] | null
  /** What each of its rows and its description cost the byte budget besides the DataRow (renderCost). */
  rowCost: number
  resultCost: number
  /** The run that used it last: statements of the running pipeline are never evicted by it. */
  run: number
}

/** What the connection is waiting for: it reads each backend message until ReadyForQuery. */
interface Exchange {
  message(type: number, buffer: Buffer, start: number, end: number): undefined | Promise<void>
  /** A non-fatal ErrorResponse. */
  error(error: PostgresError): void
  /** The connection failed: the exchange ends with this error. */
  fail(error: Error): void
}

/** One pipeline on the wire: its statements, what came back so far, and how it is ending. */
interface Run {
  steps: readonly PipelineStep[]
  /** Parse and Describe only (`describe()`): nothing is bound or executed. */
  describeOnly: boolean
  options: RunOptions
  used: PreparedStatement[]
  /** Statements this pipeline prepares, in the order of their Parse messages. */
  fresh: PreparedStatement[]
  /** The Closes sent at its front. */
  closing: string[]
  /** This is the rerun after a stale statement: there is no third run. */
  rerun: boolean
  resolve(results: StepResult[]): void
  reject(error: Error): void
  results: StepResult[]
  rows: (string | null)[][]
  raw: Buffer[]
  parsed: number
  described: number
  closesDone: number
  failure: PipelineError | undefined
  /** Why it was stopped (cancel, budget): wins over whatever the server says after. */
  stopped: WireError | undefined
  /** Its own ReadyForQuery came while its cancel was still being sent. */
  ready: boolean
  cancel: 'none' | 'sending' | 'closed'
  cancelSent: Promise<void> | undefined
  /** A lone Sync went out after the cancel settled; its ReadyForQuery ends the pipeline. */
  syncing: boolean
  grace: NodeJS.Timeout | undefined
  onAbort: (() => void) | undefined
  deadline: NodeJS.Timeout | undefined
}

export async function connectWire(options: ConnectOptions): Promise<WireConnection> {
  const url = new URL(options.url)
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1'
  const port = Number(url.port || 5432)
  const endpoint: Endpoint = { host, port, name: options.name ?? `${host}:${port}`, tls: options.tls ?? {} }
  const timeoutMs = options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs
  const deadline = new AbortController()
  const timer = setTimeout(
    () =>
      deadline.abort(
        new ConnectionError('CONNECT_TIMEOUT', `no connection to ${endpoint.name} within ${timeoutMs} ms`),
      ),
    timeoutMs,
  )
  try {
    const transport = await openTransport(endpoint, deadline.signal)
    return await login(transport, endpoint, options, deadline.signal)
  } finally {
    clearTimeout(timer)
  }
}

async function login(
  transport: Transport,
  endpoint: Endpoint,
  options: ConnectOptions,
  deadline: AbortSignal,
): Promise<WireConnection> {
  const url = new URL(options.url)
  const user = decodeURIComponent(url.username)
  const password = decodeURIComponent(url.password)
  const socket = transport.socket
  const writer = new MessageWriter()
  const name = endpoint.name
  const maxStatements = options.maxStatements ?? DEFAULTS.maxStatements
  const maxStatementBytes = options.maxStatementBytes ?? DEFAULTS.maxStatementBytes
  const defaultMaxRows = options.maxRows ?? DEFAULTS.maxRows
  const defaultMaxBytes = options.maxBytes ?? DEFAULTS.maxBytes
  const cancelGraceMs = options.cancelGraceMs ?? DEFAULTS.cancelGraceMs
  // The cancel request goes out even when the grace ran out: a connection dropped mid-query leaves
  // the query running until the backend next writes to the socket.
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs

  // Prepared statements by SQL text (and parameter types), least recently used first (a hit moves to the end).
  const statements = new Map<string, PreparedStatement>()
  let statementBytes = 0
  /** Statements to close at the front of the next pipeline, before any step can fail. */
  const closeQueue: string[] = []
  // Unguessable, so SQL-level PREPARE or DEALLOCATE by anyone else cannot name ours.
  const statementPrefix = `sy${randomBytes(6).toString('hex')}_`
  let statementCount = 0
  let runs = 0

  const closeListeners: (() => void)[] = []
  const idleWaiters: (() => void)[] = []
  let exchange: Exchange | null = null
  /** The pipeline running now, if the exchange is one. */
  let current: Run | null = null
  let status: 'I' | 'T' | 'E' = 'I'
  let broken = false
  let closed = false
  let loggedIn = false
  let pid = 0
  let secretKey: Buffer | null = null
  let authentication = 'none'

  // The current exchange's budgets, checked on each DataRow's header before its body is read.
  let rowsLeft = Number.POSITIVE_INFINITY
  let bytesLeft = Number.POSITIVE_INFINITY
  let rowLimit = 0
  let byteLimit = 0
  /** Skip every DataRow and CopyData body as it arrives (after a budget overflow or a cancel). */
  let discarding = true

  const failWith = (error: Error) => {
    broken = true
    const ended = exchange
    exchange = null
    ended?.fail(error)
    settleIdle()
  }

  /** A handler threw or the bytes made no sense: fail the exchange, drop the socket, keep the process. */
  const protocolFailure = (error: unknown) => {
    const failure =
      error instanceof WireError || error instanceof PostgresError
        ? error
        : new ConnectionError('PROTOCOL_ERROR', `${name}: ${(error as Error)?.message ?? String(error)}`, {
            cause: error,
          })
    failWith(failure)
    socket.destroy()
  }

  function settleIdle() {
    if (exchange) return
    for (const waiter of idleWaiters.splice(0)) waiter()
  }

  // Framing. A message's header (type, length) is read first; its body is then either dispatched
  // straight from the chunk it arrived in, copied once into a buffer of its exact size when it spans
  // chunks, or skipped as it arrives (DataRow past the budget, CopyData, notices).
  const head = Buffer.allocUnsafe(5)
  let headHave = 0
  let body: Buffer | null = null
  let bodyHave = 0
  let bodyType = 0
  /** Bytes of the current message still to skip. */
  let skipLeft = 0
  /** Bytes to skip once `body` is complete (the unread tail of a long ErrorResponse). */
  let bodyTail = 0
  /** Bytes received so far: a cancelled pipeline still skipping a long message is making progress. */
  let received = 0

  socket.on('data', (chunk: Buffer) => {
    received += chunk.length
    try {
      receive(chunk)
    } catch (error) {
      protocolFailure(error)
    }
  })
  socket.on('error', (error: NodeJS.ErrnoException) => {
    failWith(new ConnectionError(error.code ?? 'ECONNRESET', `${name}: ${error.message}`))
  })
  socket.on('close', () => {
    closed = true
    failWith(new ConnectionError('CONNECTION_CLOSED', `connection to ${name} closed`))
    for (const listener of closeListeners.splice(0)) listener()
  })

  function receive(chunk: Buffer) {
    const length = chunk.length
    let at = 0
    while (at < length && !broken) {
      if (skipLeft > 0) {
        const take = Math.min(skipLeft, length - at)
        skipLeft -= take
        at += take
      } else if (body !== null) {
        const take = Math.min(body.length - bodyHave, length - at)
        chunk.copy(body, bodyHave, at, at + take)
        bodyHave += take
        at += take
        if (bodyHave < body.length) return
        const whole = body
        body = null
        skipLeft = bodyTail
        dispatch(bodyType, whole, 0, whole.length)
      } else if (headHave > 0 || length - at < 5) {
        const take = Math.min(5 - headHave, length - at)
        chunk.copy(head, headHave, at, at + take)
        headHave += take
        at += take
        if (headHave < 5) return
        headHave = 0
        at = message(head[0] as number, head.readInt32BE(1), chunk, at)
      } else {
        at = message(chunk[at] as number, chunk.readInt32BE(at + 1), chunk, at + 5)
      }
    }
  }

  /** A message whose header was read; its body starts at `at`. Returns where the next message starts. */
  function message(type: number, size: number, chunk: Buffer, at: number): number {
    if (size < 4 || size > MAX_MESSAGE_BYTES)
      throw new ConnectionError(
        'PROTOCOL_ERROR',
        `${name} sent a message (type 0x${type.toString(16)}) claiming ${size} bytes`,
      )
    const length = size - 4
    const keep = skips(type, length) ? -1 : type === 0x45 ? Math.min(length, MAX_ERROR_BYTES) : length
    const available = chunk.length - at
    if (keep >= 0 && available >= keep) dispatch(type, chunk, at, at + keep)
    else if (keep >= 0) {
      body = Buffer.allocUnsafe(keep)
      chunk.copy(body, 0, at)
      bodyHave = available
      bodyType = type
      bodyTail = length - keep
      return chunk.length
    }
    if (available >= length) return at + length
    skipLeft = length - available
    return chunk.length
  }

  /** Whether a message's body is skipped unread. Two integer compares per DataRow. */
  function skips(type: number, size: number): boolean {
    switch (type) {
      case 0x44: // DataRow
        if (discarding) return true
        rowsLeft--
        bytesLeft -=
          size + ((current?.used[current.results.length] as PreparedStatement | undefined)?.rowCost ?? 0)
        if (rowsLeft < 0) return overflow('rows')
        if (bytesLeft < 0) return overflow('bytes')
        return false
      case 0x64: // CopyData (COPY TO STDOUT): counted against the byte budget, never kept
        if (discarding) return true
        bytesLeft -= size
        if (bytesLeft < 0) overflow('bytes')
        return true
      case 0x4e: // NoticeResponse
      case 0x41: // NotificationResponse
      case 0x53: // ParameterStatus
        return true
      default:
        return false
    }
  }

  function overflow(limit: 'rows' | 'bytes'): true {
    discarding = true
    if (current) void stop(current, new ResultTooLargeError(limit, limit === 'rows' ? rowLimit : byteLimit))
    return true
  }

  function dispatch(type: number, buffer: Buffer, start: number, end: number) {
    switch (type) {
      case 0x45: {
        // ErrorResponse; FATAL or PANIC: the server is ending the session, no ReadyForQuery follows.
        const error = new PostgresError(readErrorFields(buffer, start, end))
        if (error.severity === 'FATAL' || error.severity === 'PANIC') {
          failWith(
            loggedIn ? new ConnectionError(error.code, `${name}: ${error.message}`, { cause: error }) : error,
          )
          socket.destroy()
          return
        }
        exchange?.error(error)
        return
      }
      case 0x5a: // ReadyForQuery
        status = buffer[start] === 0x54 ? 'T' : buffer[start] === 0x45 ? 'E' : 'I'
        break
      case 0x4b: // BackendKeyData: the key has any length (protocol 3.2 allows up to 256 bytes)
        pid = buffer.readInt32BE(start)
        secretKey = Buffer.from(buffer.subarray(start + 4, end))
        return
    }
    const handled = exchange?.message(type, buffer, start, end)
    if (handled) handled.catch(protocolFailure)
  }

  function describe(statement: PreparedStatement, fields: ColumnDescription[]) {
    statement.fields = fields
    const cost = renderCost(fields)
    statement.rowCost = cost.row
    statement.resultCost = cost.result
  }

  /** Starts an exchange: its messages go out in one write; `budget` arms the DataRow checks. */
  function begin(next: Exchange, budget?: { rows: number; bytes: number }) {
    exchange = next
    if (budget) {
      rowsLeft = rowLimit = budget.rows
      bytesLeft = byteLimit = budget.bytes
      discarding = false
    } else discarding = true
    socket.write(writer.take())
  }

  // ---- Login ----

  await new Promise<void>((resolve, reject) => {
    const onDeadline = () => {
      failWith(deadline.reason as Error)
      socket.destroy()
    }
    deadline.addEventListener('abort', onDeadline, { once: true })
    const done = (error?: Error) => {
      deadline.removeEventListener('abort', onDeadline)
      exchange = null
      if (!error) return resolve()
      socket.destroy()
      reject(error)
    }
    writeStartup(writer, {
      user,
      database: decodeURIComponent(url.pathname.slice(1)) || user,
      client_encoding: 'UTF8',
      ...options.parameters,
    })
    begin(authenticationExchange(done))
  })
  loggedIn = true

  function authenticationExchange(done: (error?: Error) => void): Exchange {
    const insecure = options.allowInsecureAuth === true
    const bindingMode = endpoint.tls.channelBinding ?? 'prefer'
    let scram: ReturnType<typeof startScram> | undefined
    let step: 'start' | 'sasl-initial' | 'sasl-response' | 'sasl-done' | 'password' | 'ok' = 'start'
    const refuse = (code: ConstructorParameters<typeof AuthenticationError>[0], message: string): never => {
      throw new AuthenticationError(code, name, message)
    }

    return {
      fail: done,
      error: done,
      message(type, buffer, start, end) {
        if (type === 0x52) return request(buffer.readInt32BE(start), buffer, start + 4, end)
        if (type === 0x5a) {
          if (step !== 'ok') refuse('auth_failed', 'ReadyForQuery came before AuthenticationOk')
          done()
        }
        return undefined
      },
    }

    function request(code: number, buffer: Buffer, start: number, end: number): undefined | Promise<void> {
      switch (code) {
        case 0: // AuthenticationOk
          if (scram) {
            if (!scram.verified)
              refuse(
                'auth_downgrade',
                'AuthenticationOk came before the SCRAM final message: the server never proved it knows the password',
              )
          } else if (step !== 'password' && !insecure)
            refuse('auth_insecure', 'the server let the router in without authentication (trust)')
          if (bindingMode === 'require' && scram?.mechanism !== 'SCRAM-SHA-256-PLUS')
            refuse(
              'channel_binding_required',
              'channelBinding is require, and the login was not channel-bound',
            )
          authentication = scram?.mechanism ?? (step === 'password' ? authentication : 'trust')
          step = 'ok'
          return undefined
        case 3: // AuthenticationCleartextPassword
          if (!insecure) refuse('auth_insecure', 'the server asks for the password in clear text')
          writePassword(writer, password)
          authentication = 'password'
          step = 'password'
          break
        case 5: // AuthenticationMD5Password
          if (!insecure) refuse('auth_insecure', 'the server asks for an MD5 password')
          writePassword(writer, md5Password(user, password, buffer.subarray(start, start + 4)))
          authentication = 'md5'
          step = 'password'
          break
        case 10: {
          // AuthenticationSASL
          if (step !== 'start') refuse('auth_failed', 'the server started SASL twice')
          scram = startScram(password, channelBinding(readSaslMechanisms(buffer, start, end)))
          writeSaslInitial(writer, scram.mechanism, scram.clientFirst)
          step = 'sasl-initial'
          break
        }
        case 11: {
          // AuthenticationSASLContinue
          if (!scram || step !== 'sasl-initial') return refuse('auth_failed', 'unexpected SASLContinue')
          step = 'sasl-response'
          return scram.clientFinal(buffer.toString('utf8', start, end)).then(
            (payload) => {
              writeSaslResponse(writer, payload)
              socket.write(writer.take())
            },
            (error: Error) => refuse('auth_failed', error.message),
          )
        }
        case 12: // AuthenticationSASLFinal
          if (!scram || step !== 'sasl-response') return refuse('auth_failed', 'unexpected SASLFinal')
          try {
            scram.verifyServerFinal(buffer.toString('utf8', start, end))
          } catch (error) {
            refuse('auth_failed', (error as Error).message)
          }
          step = 'sasl-done'
          return undefined
        default:
          return refuse('auth_unsupported', `the server asks for authentication method ${code}`)
      }
      socket.write(writer.take())
      return undefined
    }

    function channelBinding(mechanisms: string[]): ChannelBinding {
      const plus = mechanisms.includes('SCRAM-SHA-256-PLUS')
      const plain = mechanisms.includes('SCRAM-SHA-256')
      let binding: ChannelBinding = { kind: 'none' }
      if (bindingMode !== 'disable' && transport.tls) {
        if (plus && transport.serverEndPoint)
          binding = { kind: 'bind', serverEndPoint: transport.serverEndPoint }
        // Offered but not computable for this certificate's signature algorithm: PostgreSQL cannot either.
        else if (!plus) binding = { kind: 'supported' }
      }
      if (bindingMode === 'require' && binding.kind !== 'bind')
        refuse(
          'channel_binding_required',
          transport.tls
            ? 'channelBinding is require, and the server offers no SCRAM-SHA-256-PLUS this client can use'
            : 'channelBinding is require, and the connection has no TLS',
        )
      if (binding.kind !== 'bind' && !plain)
        refuse('auth_unsupported', `the server offers no usable SASL mechanism (${mechanisms.join(', ')})`)
      return binding
    }
  }

  // ---- Pipelines ----

  /** The cached statement for `step`, refreshed as most recently used; or a new one, to prepare. */
  function statementFor(
    step: Pick<PipelineStep, 'sql' | 'paramTypes'>,
    run: number,
    fresh: PreparedStatement[],
  ): PreparedStatement {
    const { sql } = step
    const paramTypes = step.paramTypes ?? NO_TYPES
    // NUL cannot occur in SQL text: the types cannot be confused with part of it.
    const key = paramTypes.length ? `${paramTypes.join(',')}\u0000${sql}` : sql
    const known = statements.get(key)
    if (known) {
      if (known.run !== run) {
        known.run = run
        statements.delete(key)
        statements.set(key, known)
      }
      return known
    }
    const bytes = Buffer.byteLength(sql)
    // A pipeline never evicts its own statements: past the cache's size its new ones run unnamed (parsed
    // each time) rather than leave thousands prepared in the backend at once (each costs it kilobytes).
    const kept = bytes <= maxStatementBytes && fresh.length < maxStatements
    const statement: PreparedStatement = {
      name: kept ? `${statementPrefix}${++statementCount}` : '',
      sql,
      key,
      paramTypes,
      described: null,
      bytes: kept ? bytes : 0,
      state: 'new',
      fields: null,
      rowCost: 0,
      resultCost: 0,
      run,
    }
    if (kept) {
      statements.set(key, statement)
      statementBytes += bytes
    }
    fresh.push(statement)
    return statement
  }

  /** Least recently used first, never one the running pipeline uses; their Close goes out first. */
  function evict(run: number) {
    while (statements.size > maxStatements || statementBytes > maxStatementBytes) {
      const oldest = statements.values().next().value as PreparedStatement
      if (oldest.run === run) return
      forget(oldest)
    }
  }

  /** Drops a statement from the cache; it is closed on the server at the front of the next pipeline. */
  function forget(statement: PreparedStatement, onServer = true) {
    if (statement.name === '' || statements.get(statement.key) !== statement) return
    statements.delete(statement.key)
    statementBytes -= statement.bytes
    if (onServer) closeQueue.push(statement.name)
  }

  function run(steps: readonly PipelineStep[], options: RunOptions = {}): Promise<StepResult[]> {
    return new Promise<StepResult[]>((resolve, reject) =>
      start(steps, options, resolve, reject, false, false),
    )
  }

  async function describeStatements(
    wanted: readonly Pick<PipelineStep, 'sql' | 'paramTypes'>[],
    options: RunOptions = {},
  ): Promise<StatementDescription[]> {
    const steps = wanted.map((step) => ({ sql: step.sql, paramTypes: step.paramTypes, params: [] }))
    const results = await new Promise<StepResult[]>((resolve, reject) =>
      start(steps, options, resolve, reject, false, true),
    )
    return results.map((result) => ({ paramTypes: result.paramTypes ?? [], fields: result.fields }))
  }

  /** Why a pipeline cannot go out at all (nothing is written then). */
  function refusal(steps: readonly PipelineStep[], signal: CancelSignal | undefined): WireError | undefined {
    if (broken) return new ConnectionError('CONNECTION_CLOSED', `connection to ${name} is closed`)
    if (exchange) return new WireError('connection_busy', 'the connection is busy: one exchange at a time')
    if (signal?.aborted) return new QueryCancelledError(signal.reason)
    for (let i = 0; i < steps.length; i++) {
      const count = (steps[i] as PipelineStep).params.length
      if (count > MAX_PARAMETERS) return new TooManyParametersError(i, count)
    }
    return undefined
  }

  function start(
    steps: readonly PipelineStep[],
    options: RunOptions,
    resolve: (results: StepResult[]) => void,
    reject: (error: Error) => void,
    rerun: boolean,
    describeOnly: boolean,
  ) {
    const refused = refusal(steps, options.signal)
    if (refused) {
      refused.sent = rerun
      reject(refused)
      return settleIdle()
    }
    const token = ++runs
    const fresh: PreparedStatement[] = []
    const used: PreparedStatement[] = new Array(steps.length)
    for (let i = 0; i < steps.length; i++) used[i] = statementFor(steps[i] as PipelineStep, token, fresh)
    evict(token)
    const closing = closeQueue.splice(0)
    for (const statement of closing) writeClose(writer, statement)
    for (let i = 0; i < steps.length; i++) {
      const statement = used[i] as PreparedStatement
      if (statement.state === 'new') {
        writeParse(writer, statement.name, statement.sql, statement.paramTypes)
        writeDescribeStatement(writer, statement.name)
        statement.state = 'sent'
      }
      if (describeOnly) continue
      const step = steps[i] as PipelineStep
      writeBind(writer, statement.name, step.params, step.paramFormats, step.resultFormats)
      writeExecute(writer)
    }
    writeSync(writer)
    const signal = options.signal
    const run: Run = {
      steps,
      describeOnly,
      options,
      used,
      fresh,
      closing,
      rerun,
      resolve,
      reject,
      results: [],
      rows: [],
      raw: [],
      parsed: 0,
      described: 0,
      closesDone: 0,
      failure: undefined,
      stopped: undefined,
      ready: false,
      cancel: 'none',
      cancelSent: undefined,
      syncing: false,
      grace: undefined,
      onAbort: undefined,
      deadline: undefined,
    }
    current = run
    begin(pipelineExchange, {
      rows: options.maxRows ?? defaultMaxRows,
      bytes: options.maxBytes ?? defaultMaxBytes,
    })
    if (signal) {
      run.onAbort = () => void stop(run, new QueryCancelledError(signal.reason))
      signal.addEventListener('abort', run.onAbort)
    }
    if (options.timeoutMs !== undefined)
      run.deadline = setTimeout(() => void stop(run, new QueryCancelledError(DEADLINE)), options.timeoutMs)
  }

  /** The running pipeline's messages; one object for every pipeline, its state in `current`. */
  const pipelineExchange: Exchange = {
    fail(error) {
      if (current) finish(current, error)
    },
    error(error) {
      const run = current
      if (run && !run.syncing && !run.failure) run.failure = new PipelineError(run.results.length, error)
    },
    message(type, buffer, start, end) {
      const run = current as Run
      switch (type) {
        case 0x44: // DataRow
          if (run.steps[run.results.length]?.raw) run.raw.push(Buffer.from(buffer.subarray(start, end)))
          else run.rows.push(readDataRow(buffer, start, end))
          break
        case 0x43: {
          // CommandComplete
          const statement = run.used[run.results.length] as PreparedStatement | undefined
          const result: StepResult = {
            ...readCommandComplete(buffer, start, end),
            fields: statement?.fields ?? [],
            rows: run.rows,
          }
          if (run.steps[run.results.length]?.raw) {
            result.raw = run.raw
            run.raw = []
          }
          run.results.push(result)
          run.rows = []
          bytesLeft -= statement?.resultCost ?? 0
          if (bytesLeft < 0 && !discarding) overflow('bytes')
          break
        }
        case 0x31: // ParseComplete
          ;(run.fresh[run.parsed++] as PreparedStatement).state = 'parsed'
          break
        case 0x74: // ParameterDescription (of a Describe of a statement; its RowDescription follows)
          ;(run.fresh[run.described] as PreparedStatement).described = readParameterDescription(
            buffer,
            start,
            end,
          )
          break
        case 0x54: // RowDescription (of a Describe of a statement)
          describe(run.fresh[run.described++] as PreparedStatement, readRowDescription(buffer, start, end))
          break
        case 0x6e: // NoData
          describe(run.fresh[run.described++] as PreparedStatement, [])
          break
        case 0x33: // CloseComplete
          run.closesDone++
          break
        case 0x49: // EmptyQueryResponse
          run.results.push({
            command: '',
            rowCount: null,
            fields: [],
            rows: [],
            ...(run.steps[run.results.length]?.raw ? { raw: [] } : {}),
          })
          break
        case 0x47: // CopyInResponse: the router feeds no COPY FROM STDIN; fail it rather than hang.
          writeCopyFail(writer, 'COPY FROM STDIN is not supported here')
          // The server ignores a Sync met in copy-in mode, so the pipeline's own Sync was lost when
          // COPY is its last step; otherwise the next message ends the copy (the server then ends the
          // session: it lost track of message boundaries) and the CopyFail is ignored.
          if (run.results.length === run.steps.length - 1) writeSync(writer)
          socket.write(writer.take())
          break
        case 0x57: // CopyBothResponse: replication only
          throw new ConnectionError('PROTOCOL_ERROR', `${name} started COPY BOTH in a pipeline`)
        case 0x5a: // ReadyForQuery
          if (run.syncing || run.cancel !== 'sending') finish(run)
          else run.ready = true
          break
        // BindComplete, ParameterDescription, CopyOutResponse, CopyDone: nothing to keep.
      }
      return undefined
    },
  }

  function finish(run: Run, lost?: Error) {
    clearTimeout(run.grace)
    if (run.onAbort) run.options.signal?.removeEventListener('abort', run.onAbort)
    if (run.deadline) clearTimeout(run.deadline)
    if (current === run) current = null
    if (exchange === pipelineExchange) exchange = null
    if (!broken) keepBooks(run)
    const error = run.stopped ?? run.failure ?? lost
    if (!error && run.describeOnly)
      run.resolve(
        run.used.map((statement) => ({
          command: '',
          rowCount: null,
          fields: statement.fields ?? [],
          rows: [],
          paramTypes: statement.described ?? [],
        })),
      )
    else if (!error) run.resolve(run.results)
    else {
      if (error instanceof WireError) {
        error.completedSteps = run.results.length
        error.results = run.results
        error.sent = true
      }
      if (error === run.failure && !broken && rerunnable(run)) return rerun(run, run.failure)
      run.reject(error)
    }
    settleIdle()
  }

  /** After a pipeline: which statements the server now holds, and which Closes it did not reach. */
  function keepBooks(run: Run) {
    for (const statement of run.fresh) {
      if (statement.state === 'ready') continue
      if (statement.state === 'parsed' && statement.fields) statement.state = 'ready'
      else forget(statement, statement.state === 'parsed')
    }
    if (run.closesDone < run.closing.length) closeQueue.unshift(...run.closing.slice(run.closesDone))
    const routine = run.failure?.cause.routine
    // A statement of ours that no longer exists was dropped by DEALLOCATE ALL or DISCARD ALL: all of
    // them are gone then. Every one is forgotten (and closed, which costs nothing if it is gone), so the
    // rerun prepares afresh instead of meeting the next missing one.
    if (routine === 'FetchPreparedStatement')
      for (const statement of [...statements.values()]) forget(statement)
    else if (routine === 'RevalidateCachedQuery')
      forget(run.used[(run.failure as PipelineError).step] as PreparedStatement)
  }

  /**
   * The server replaced or lost a prepared statement (a table change, DEALLOCATE): prepared again, the
   * pipeline runs once more, unless it was stopped, is already the rerun, or any step of it committed.
   */
  function rerunnable(run: Run): boolean {
    const failure = run.failure as PipelineError
    if (run.rerun || run.stopped || !STALE_STATEMENT_ROUTINES.has(failure.cause.routine ?? '')) return false
    return !run.results.some((result) => result.command === 'COMMIT')
  }

  function rerun(run: Run, failure: PipelineError) {
    const again = () => start(run.steps, run.options, run.resolve, run.reject, true, run.describeOnly)
    if (status === 'I') return again()
    execute('rollback').then(again, () => run.reject(failure))
  }

  /** Cancels the running pipeline (a signal, a budget, cancel()); resolves when the server took it. */
  function stop(run: Run, error: WireError): Promise<void> {
    if (run.stopped || current !== run) return run.cancelSent ?? Promise.resolve()
    run.stopped = error
    discarding = true
    run.cancel = 'sending'
    // Past the grace the connection is dropped, never reused. A message already on its way when the
    // cancel went out (a 600 MB DataRow is sent whole before the backend sees the cancel) is read to
    // its end while it keeps arriving: PostgreSQL messages end, so this is bounded too.
    let progress = received
    const onGrace = () => {
      if (skipLeft > 0 && received !== progress) {
        progress = received
        run.grace = setTimeout(onGrace, cancelGraceMs)
      } else socket.destroy()
    }
    run.grace = setTimeout(onGrace, cancelGraceMs)
    const key = secretKey
    run.cancelSent = (
      key
        ? sendCancelRequest(endpoint, transport.tls !== null, pid, key, connectTimeoutMs)
        : Promise.resolve('failed')
    ).then(() => {
      run.cancel = 'closed'
      // The backend has been signalled. A ReadyForQuery that came before may predate the signal: one
      // more round trip, after which the cancel can no longer hit anything.
      if (run.ready && current === run) {
        run.syncing = true
        writeSync(writer)
        socket.write(writer.take())
      }
    })
    return run.cancelSent
  }

  function execute(sql: string): Promise<void> {
    if (broken)
      return Promise.reject(new ConnectionError('CONNECTION_CLOSED', `connection to ${name} is closed`))
    if (exchange)
      return Promise.reject(
        new WireError('connection_busy', 'the connection is busy: one exchange at a time'),
      )
    return new Promise<void>((resolve, reject) => {
      let failure: PostgresError | undefined
      const end = (error?: Error) => {
        exchange = null
        if (error) reject(error)
        else resolve()
        settleIdle()
      }
      writeQuery(writer, sql)
      // No budget: every row is skipped unread.
      begin({
        fail: end,
        error(error) {
          failure ??= error
        },
        message(type) {
          if (type === 0x5a) end(failure)
          return undefined
        },
      })
    })
  }

  return {
    run,
    describe: describeStatements,
    execute,
    cancel: (reason) => (current ? stop(current, new QueryCancelledError(reason)) : Promise.resolve()),
    get transactionStatus() {
      return status
    },
    get broken() {
      return broken
    },
    get busy() {
      return exchange !== null
    },
    idle() {
      if (!exchange || broken) return Promise.resolve()
      return new Promise<void>((resolve) => idleWaiters.push(resolve))
    },
    info: {
      pid,
      tls: transport.tls !== null,
      authentication,
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
