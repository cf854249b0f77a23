import type { Duplex } from 'node:stream'
import { keyStillValid } from '../../directory/keys.ts'
import { SwitchyardError } from '../../errors.ts'
import { Cancellation } from '../../shard/wire/cancel.ts'
import type { StatementDescription } from '../../shard/wire/connection.ts'
import type { ColumnDescription } from '../../shard/wire/messages.ts'
import { CLIENT_GONE, DEADLINE } from '../dispatch.ts'
import { type SplitStatement, splitStatements } from '../policy.ts'
import type { Statement, StatementResult } from '../result.ts'
import { checkStatements, parseInTurn, quotaOf, runTenantRequest } from '../tenant-request.ts'
import { type Block, createBlock } from './block.ts'
import { toErrorFields } from './errors.ts'
import { type Frame, FrameReader, MAX_STARTUP_BYTES } from './frames.ts'
import { createLogin, type Login } from './login.ts'
import {
  type BindMessage,
  BodyReader,
  bare,
  commandComplete,
  dataRow,
  errorResponse,
  MessageWriter,
  ProtocolViolation,
  parameterDescription,
  readBind,
  readExecute,
  readParse,
  readTarget,
  readyForQuery,
  rowDescription,
} from './protocol.ts'
import type { WireDeps } from './server.ts'
import { apiRequestOf, localStatement, type SessionSettings, showColumn } from './settings.ts'

/**
 * What a session keeps of a statement's parse: its type, and its tree only for what the router runs
 * itself (SET, SHOW, transaction control), weighed in bytes: a tree is many times its text.
 */
interface Parsed extends SplitStatement {
  weight: number
}

/** A client's prepared statement: its SQL, the parameter types its Parse gave, and what it is. */
interface Prepared {
  sql: string
  paramTypes: number[]
  parsed: Parsed
}

/** A bound portal: the statement, its values and the formats the client asked for. */
interface Portal {
  statement: Prepared
  bind: BindMessage
  /** An Execute of this portal was planned: a later one continues it (PortalSuspended), it never runs twice. */
  executed?: boolean
}

/** The rows a portal run with a row limit has not sent yet, kept until the next Execute or its end. */
interface Suspended {
  rows: Buffer[]
  at: number
  command: string
  /** Gives back what the rows count against the tenant's unread bound. */
  release: () => void
}

/** One message of the extended protocol, queued until the client's Sync (or Flush). */
type Action =
  | {
      kind: 'parse'
      name: string
      sql: string
      paramTypes: number[]
      /** Parsed in the tenant's turn before the batch is planned (parseBatch): the tree, or why not. */
      parsed?: Parsed
      parseError?: unknown
    }
  | { kind: 'bind'; bind: BindMessage }
  | { kind: 'describe'; target: 'S' | 'P'; name: string }
  | { kind: 'execute'; portal: string; maxRows: number }
  | { kind: 'close'; target: 'S' | 'P'; name: string }

/** Statements the router answers itself, or that change the session's transaction: run one at a time. */
const LOCAL_TYPES = new Set(['TransactionStmt', 'VariableSetStmt', 'VariableShowStmt', 'DiscardStmt'])

/** One message of a batch as planned: which statement it runs or describes, and how. */
type PlannedStep = {
  execute?: number
  /** The portal an Execute runs, and its row limit (0: all rows). */
  portal?: string
  maxRows?: number
  /** The portal was suspended by an earlier Execute: its next rows are sent, nothing runs. */
  resume?: boolean
  empty?: boolean
  resultFormats?: number[]
  describe?: number
  fromExecute?: number
  noRows?: boolean
  paramTypes?: number[]
  /** Puts the session's books back as they were before this message (it is skipped after an error). */
  undo?: () => void
}

interface Plan {
  steps: PlannedStep[]
  statements: Statement[]
  /** The prepared statement each of `statements` comes from. */
  sources: Prepared[]
  params: (Buffer | null)[][]
  describes: Prepared[]
}

/**
 * Bytes one session may hold in its statements and portals, and in one batch before its Sync: with
 * `wireMaxClients` sessions, at most that many times this.
 */
const SESSION_BYTES = 4 * 1024 * 1024

function heldBytes(value: Prepared | Portal): number {
  if ('sql' in value) return 2 * value.sql.length + 8 * value.paramTypes.length + value.parsed.weight + 64
  // A portal keeps its statement alive after the statement is closed or replaced: it counts it too.
  let bytes =
    heldBytes(value.statement) + 8 * (value.bind.paramFormats.length + value.bind.resultFormats.length)
  for (const param of value.bind.params) bytes += (param?.length ?? 0) + 16
  return bytes
}

/** Parses of SQL texts a session keeps (parseOfText), by count and by bytes: its few statements, over and over. */
const PARSED_TEXTS = 100
const PARSED_BYTES = 1024 * 1024

/** Parameter types whose input is libxml2's parser, which no deadline can stop (the policy refuses XML). */
const XML_TYPES = new Set([142, 143])

/** Most prepared statements and portals a session may hold: each costs the router its SQL text. */
const MAX_PREPARED = 1000
/** Extended-protocol messages a client may send before its Sync. */
const MAX_BATCH = 1000

/**
 * One client connection of the PostgreSQL front end: startup and login (login.ts), then its queries,
 * each run as a tenant request exactly as an HTTP one is (tenant-request.ts): a simple Query's statements
 * or an extended-protocol batch up to Sync are one transaction on the node the request needs, entered
 * for the client's tenant. The client's statements and portals live here, never on a shard connection:
 * whichever connection serves the next Execute is sent the statement's Parse first (the wire client
 * prepares what it has not seen), so transaction pooling cannot lose them.
 */
export function serveSession(socket: ClientStream, deps: WireDeps, registry: SessionRegistry): void {
  const config = deps.topology.router
  // Before the login no message needs more than PostgreSQL's startup bound; after it, maxBodyBytes.
  const frames = new FrameReader(Math.min(config.maxBodyBytes, MAX_STARTUP_BYTES))
  const writer = new MessageWriter()
  const queue: Frame[] = []
  let queuedBytes = 0
  let working = false
  let closed = false
  let session: Login | undefined
  let settings: SessionSettings | undefined
  const prepared = new Map<string, Prepared>()
  const portals = new Map<string, Portal>()
  const suspended = new Map<string, Suspended>()
  let batch: Action[] = []
  let batchBytes = 0
  /** Bytes the session's statements and portals hold (heldBytes). */
  let held = 0
  /** An extended-protocol error: everything up to the Sync is skipped. */
  let skipping = false
  let running: Cancellation | undefined
  let cancelledByClient = false
  let unregister: (() => void) | undefined
  let block: Block | undefined
  let keyCheckedAt = Date.now()
  /** The parse of SQL texts this session prepares (parseOfText), and the bytes they weigh. */
  const parsedTexts = new Map<string, Parsed>()
  let parsedBytes = 0
  let idleTimer: NodeJS.Timeout | undefined
  let lifeTimer: NodeJS.Timeout | undefined
  /** When the session last did work for its client (a shard round trip, kept rows fetched). */
  let lastWorkAt = Date.now()
  const login = createLogin({ socket, writer, deps, registry, cancel: () => cancel() })

  socket.setNoDelay?.(true)
  socket.on('error', () => {})
  socket.on('close', () => {
    closed = true
    running?.abort(CLIENT_GONE)
    unregister?.()
    clearTimeout(idleTimer)
    clearTimeout(lifeTimer)
    letGo()
  })
  const startupTimer = setTimeout(() => {
    if (!session) fatal(new SwitchyardError('unauthorized', 'the login did not complete in time'))
  }, config.wireLoginTimeoutMs)
  socket.once('close', () => clearTimeout(startupTimer))

  socket.on('data', (chunk: Buffer) => {
    let arrived: Frame[]
    try {
      arrived = frames.push(chunk)
    } catch (error) {
      return fatal(violation(error))
    }
    if (arrived.length === 0) return
    for (const frame of arrived) {
      queue.push(frame)
      queuedBytes += queuedSize(frame)
    }
    // A client that sends faster than its queries run waits: what it sent is read once the queue drains.
    if (queuedBytes > config.maxBodyBytes) socket.pause()
    void work()
  })

  async function work() {
    if (working) return
    working = true
    try {
      while (queue.length && !closed) {
        const frame = queue.shift() as Frame
        queuedBytes -= queuedSize(frame)
        await handle(frame)
        flush()
        // A client that does not read its answers gets no more of them: what the router holds for it
        // is one answer (at most the result budget) until it reads.
        if (socket.writableNeedDrain) await drained()
        if (socket.isPaused() && queuedBytes <= config.maxBodyBytes / 2) socket.resume()
      }
      armIdleLimit()
    } catch (error) {
      fatal(error instanceof ProtocolViolation ? violation(error) : error)
    } finally {
      working = false
    }
  }

  /**
   * Idle in a transaction: a block holds its connection and the tenant's fence lock, a suspended portal
   * its rows (against the tenant's unread bound), so either gets `wireIdleInTransactionMs` between two
   * pieces of work before the session is ended (25P03), as PostgreSQL ends an idle open transaction.
   * Work is what reaches the shard or fetches kept rows (`lastWorkAt`): pings, Close, stray COPY
   * messages and bytes that complete nothing do not keep a transaction open. And a block lives at most
   * `wireMaxTransactionMs`, busy or not (25P04, as PostgreSQL 17's transaction_timeout): it holds back
   * vacuum on its shard for every tenant there.
   */
  function armIdleLimit() {
    if (closed || !inTransaction() || idleTimer) return
    const left = lastWorkAt + config.wireIdleInTransactionMs - Date.now()
    idleTimer = setTimeout(
      () => {
        idleTimer = undefined
        if (closed || !inTransaction()) return
        // Work still running is bounded by its own deadline; the limit counts again once it is done.
        if (working || Date.now() - lastWorkAt < config.wireIdleInTransactionMs) return armIdleLimit()
        fatal(sqlState('25P03', 'terminating connection due to idle-in-transaction timeout'))
        block?.end()
      },
      Math.max(0, left),
    )
  }

  /** Called when a block begins: it is ended at wireMaxTransactionMs whatever it does. */
  function limitBlockLife() {
    clearTimeout(lifeTimer)
    const current = block as Block
    const began = current.generation
    lifeTimer = setTimeout(() => {
      if (closed || !current.active || current.generation !== began) return
      fatal(sqlState('25P04', 'terminating connection due to transaction timeout'))
      current.end()
    }, config.wireMaxTransactionMs)
  }

  function inTransaction(): boolean {
    return Boolean(block?.active) || suspended.size > 0
  }

  /**
   * Its answers read within requestTimeoutMs, or the client is cut off (it holds a block, a share).
   * Meanwhile what it has not read counts against the router's unread bound (invariant 8) as an HTTP
   * answer does: a tenant's sessions that all stop reading are refused further work, not each served.
   */
  function drained(): Promise<void> {
    const release = deps.answers.take(session?.tenant ?? '', socket.writableLength)
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        // Nothing more is run for it: what it queued is dropped with the socket.
        closed = true
        socket.destroy()
        done()
      }, config.requestTimeoutMs)
      const done = () => {
        release()
        clearTimeout(timer)
        socket.off('drain', done)
        socket.off('close', done)
        resolve()
      }
      socket.on('drain', done)
      socket.on('close', done)
    })
  }

  /** Sends what is written so far and waits until the client has taken it: one answer held at a time. */
  async function answered() {
    flush()
    if (socket.writableNeedDrain) await drained()
  }

  /** Ends the session: a client that never closes its side is cut off shortly after. */
  function hangUp(last?: Buffer) {
    closed = true
    socket.end(last)
    setTimeout(() => socket.destroy(), 1000).unref()
    running?.abort(CLIENT_GONE)
    letGo()
  }

  /** What the session holds beyond its socket: kept rows, and its block (rolled back once its statement stops). */
  function letGo() {
    for (const rows of suspended.values()) rows.release()
    suspended.clear()
    block?.end()
  }

  function flush() {
    if (!closed) socket.write(writer.take())
  }

  /** A failure that is not the router's own refusal is a bug: the client hears `internal`, the log the rest. */
  function report(error: unknown) {
    if (!(error instanceof SwitchyardError))
      deps.logger.error({ err: error, tenant: session?.tenant }, 'PostgreSQL session: internal error')
  }

  function fatal(error: unknown) {
    if (closed) return
    report(error)
    errorResponse(writer, toErrorFields(error, 'FATAL'))
    hangUp(writer.take())
  }

  async function handle(frame: Frame) {
    if (!session) {
      const outcome = await login(frame)
      if (outcome === 'closed') {
        closed = true
        return
      }
      if (outcome === 'more') return
      session = outcome
      settings = session.settings
      block = createBlock(deps, session.tenant, () => apiRequestOf(settings))
      unregister = session.unregister
      frames.allow(config.maxBodyBytes)
      // The client left while its login finished: nothing of it stays registered.
      if (closed) unregister()
      clearTimeout(startupTimer)
      return
    }
    const reader = new BodyReader(frame.body)
    switch (frame.type) {
      case 0x51: // Query
        return simpleQuery(reader.cstring())
      case 0x50: // Parse
        return queueAction(() => {
          const parse = readParse(reader)
          return { kind: 'parse', name: parse.name, sql: parse.sql, paramTypes: parse.paramTypes }
        }, frame.body.length)
      case 0x42: // Bind
        return queueAction(() => ({ kind: 'bind', bind: readBind(reader) }), frame.body.length)
      case 0x44: // Describe
        return queueAction(() => ({ kind: 'describe', ...targetOf(reader) }), frame.body.length)
      case 0x45: // Execute
        return queueAction(() => ({ kind: 'execute', ...readExecute(reader) }), frame.body.length)
      case 0x43: // Close
        return queueAction(() => ({ kind: 'close', ...targetOf(reader) }), frame.body.length)
      case 0x48: // Flush
        return runBatch()
      case 0x53: // Sync
        await runBatch()
        skipping = false
        endOfTransaction()
        readyForQuery(writer, (block as Block).status)
        return
      case 0x58: // Terminate
        hangUp()
        return
      case 0x46: // FunctionCall: answered as PostgreSQL answers a failed one, ReadyForQuery included.
        block?.fail()
        errorResponse(
          writer,
          toErrorFields(
            new SwitchyardError('feature_not_supported', 'the fast-path function call is not supported'),
          ),
        )
        readyForQuery(writer, (block as Block).status)
        return
      case 0x64: // CopyData, CopyDone, CopyFail outside COPY: PostgreSQL ignores them (no COPY runs here).
      case 0x63:
      case 0x66:
        return
      default:
        throw new ProtocolViolation(`unexpected message type 0x${frame.type.toString(16)}`)
    }
  }

  function queueAction(read: () => Action, bytes: number) {
    const action = read()
    if (skipping) return
    if (batch.length >= MAX_BATCH)
      return refuse(new SwitchyardError('too_many_statements', `at most ${MAX_BATCH} messages before a Sync`))
    // What a batch holds until its Sync (a Bind's values): bounded like what a session keeps.
    if (batchBytes + bytes > SESSION_BYTES)
      return refuse(
        new SwitchyardError('body_too_large', `at most ${SESSION_BYTES} bytes of messages before a Sync`),
      )
    batchBytes += bytes
    batch.push(action)
  }

  /**
   * The session's statements and portals, and the bytes they hold (SQL text, bound values). Both return
   * how to put the name back as it was: a batch's messages after its error are skipped, as PostgreSQL
   * skips them, so what they kept or closed is undone.
   */
  function keep(kind: 'statement' | 'portal', name: string, value: Prepared | Portal): () => void {
    const map: Map<string, Prepared | Portal> = kind === 'statement' ? prepared : portals
    if (map.size >= MAX_PREPARED && !map.has(name))
      throw new SwitchyardError('too_many_statements', `at most ${MAX_PREPARED} ${kind}s per session`)
    const bytes = heldBytes(value)
    const replaced = map.get(name)
    const after = held + bytes - (replaced ? heldBytes(replaced) : 0)
    if (after > SESSION_BYTES)
      throw new SwitchyardError(
        'body_too_large',
        `this session's statements and portals would hold more than ${SESSION_BYTES} bytes: close some`,
      )
    held = after
    map.set(name, value)
    if (kind === 'portal') unsuspend(name)
    return () => {
      drop(kind, name)
      if (replaced) restore(map, name, replaced)
    }
  }

  function drop(kind: 'statement' | 'portal', name: string): () => void {
    const map: Map<string, Prepared | Portal> = kind === 'statement' ? prepared : portals
    const value = map.get(name)
    if (value) held -= heldBytes(value)
    map.delete(name)
    if (kind === 'portal') unsuspend(name)
    return () => {
      if (value) restore(map, name, value)
    }
  }

  function restore(map: Map<string, Prepared | Portal>, name: string, value: Prepared | Portal) {
    map.set(name, value)
    held += heldBytes(value)
  }

  function unsuspend(name: string) {
    suspended.get(name)?.release()
    suspended.delete(name)
  }

  /** Outside a transaction block, a Sync or a Query ends the transaction and its portals with it. */
  function endOfTransaction() {
    if (!(block as Block | undefined)?.active) for (const name of [...portals.keys()]) drop('portal', name)
    // Rows kept for a portal closed (or never kept) after they were: nobody can fetch them any more.
    for (const name of [...suspended.keys()]) if (!portals.has(name)) unsuspend(name)
  }

  /** Undoes the books of a batch's messages from `from` on, last first: they were skipped. */
  function skipFrom(steps: PlannedStep[], from: number) {
    for (let i = steps.length - 1; i >= from; i--) steps[i]?.undo?.()
  }

  /** An error in the extended protocol: answered, and the rest up to the Sync skipped. */
  function refuse(error: unknown) {
    report(error)
    block?.fail()
    errorResponse(writer, toErrorFields(error))
    batch = []
    batchBytes = 0
    skipping = true
  }

  function cancel() {
    if (!running) return
    cancelledByClient = true
    running.abort(DEADLINE)
  }

  // ---- Simple query ----

  async function simpleQuery(sql: string) {
    try {
      // All of a Query's text is parsed at once: it is bounded as one statement is, before the parse.
      if (tooLong(sql))
        throw new SwitchyardError(
          'statement_too_large',
          `a Query's text is longer than ${config.maxStatementBytes} bytes: send values as parameters, or fewer statements at once`,
        )
      const tenant = (session as Login).tenant
      const statements = await withDeadline((signal) =>
        parseInTurn(tenant, signal, () => splitStatements(sql)),
      )
      if (statements.length === 0) bare(writer, 'I')
      // As PostgreSQL does: the statements run one by one, and an error skips the rest.
      for (const statement of statements) {
        if (closed) return
        const result = await runOne(statement, [], { raw: true })
        if (result) answerResult(result, [], true)
        await answered()
      }
    } catch (error) {
      block?.fail()
      errorResponse(writer, toErrorFields(clientCancel(error)))
    }
    endOfTransaction()
    readyForQuery(writer, (block as Block).status)
  }

  /**
   * One statement by what it is: transaction control (the session's block), a setting the router keeps,
   * or SQL for the shard, in the open block or as a tenant request of its own. Local answers are written
   * here; the shard's result is returned for the caller to answer in its protocol's way.
   */
  async function runOne(
    statement: SplitStatement,
    params: (Buffer | null)[],
    wire: NonNullable<Statement['wire']>,
    described = false,
  ): Promise<StatementResult | undefined> {
    const current = block as Block
    if (statement.type === 'TransactionStmt') {
      const before = current.active
      const answer = await bounded((signal) => current.control(statement.node, signal))
      if (current.active && !before) limitBlockLife()
      if (answer.warning) errorResponse(writer, { severity: 'WARNING', ...answer.warning }, 'N')
      commandComplete(writer, answer.tag)
      return undefined
    }
    if (LOCAL_TYPES.has(statement.type) && current.status === 'E')
      throw sqlState(
        '25P02',
        'current transaction is aborted, commands ignored until end of transaction block',
      )
    const local = localStatement(statement, settings as SessionSettings)
    if (local) {
      local(writer, described)
      return undefined
    }
    const one: Statement = { sql: statement.sql, params: [], wire }
    if (current.active) {
      const [result] = await bounded((signal) => current.run([one], [params], signal))
      return result
    }
    const [result] = await runStatements([one], [params])
    return result
  }

  // ---- Extended query ----

  async function runBatch() {
    const actions = batch
    batch = []
    batchBytes = 0
    if (skipping || actions.length === 0) return
    try {
      await parseBatch(actions)
    } catch (error) {
      return refuse(clientCancel(error))
    }
    const { plan, error: planError, failedAt } = planBatch(actions)
    const runnable = failedAt === undefined ? actions : actions.slice(0, failedAt)
    // A SET or SHOW run or described is answered by the router, message by message.
    const sequential =
      (block as Block).active ||
      [...plan.sources, ...plan.describes].some((source) => LOCAL_TYPES.has(source.parsed.type))
    if (sequential) return runSequential(runnable, plan, planError)
    let results: StatementResult[] = []
    let descriptions: StatementDescription[] = []
    let runError: unknown
    let describeFailed = false
    try {
      // A batch that runs nothing (a driver preparing) counts against the rate limit for its Describes.
      descriptions = await describeAll(plan.describes, plan.statements.length === 0)
    } catch (error) {
      runError = error
      describeFailed = true
    }
    if (runError === undefined) {
      try {
        results = await runStatements(plan.statements, plan.params)
      } catch (error) {
        runError = clientCancel(error)
      }
    }
    // After a failure, what can still be answered is what came before the first message that needed
    // the shard's answer: a failed transaction returns no rows, so no Execute of it is answered.
    const stopAt =
      runError === undefined
        ? runnable.length
        : runnable.findIndex((action, i) => needsShard(action, plan.steps[i] as PlannedStep, describeFailed))
    for (const [i, action] of runnable.entries()) {
      if (stopAt !== -1 && i >= stopAt) break
      const step = plan.steps[i] as PlannedStep
      if (answerBookkeeping(action)) continue
      switch (action.kind) {
        case 'describe':
          describeAnswer(step, step.describe === undefined ? undefined : descriptions[step.describe], results)
          break
        case 'execute': {
          if (step.empty) bare(writer, 'I')
          else
            try {
              answerExecute(step, step.resume ? undefined : results[step.execute as number])
            } catch (error) {
              // Rows it may not keep (the tenant's unread bound): an error where its rows would be.
              skipFrom(plan.steps, i + 1)
              return refuse(error)
            }
          break
        }
      }
    }
    if (runError !== undefined) {
      skipFrom(plan.steps, stopAt === -1 ? plan.steps.length : stopAt)
      return refuse(runError)
    }
    if (planError !== undefined) refuse(planError)
  }

  /**
   * A batch with transaction control or settings in it, or inside a transaction block: each message in
   * turn, each statement on its own (in the block, on its pinned connection), as PostgreSQL would.
   */
  async function runSequential(actions: Action[], plan: Plan, planError: unknown) {
    for (const [i, action] of actions.entries()) {
      if (closed) return
      const step = plan.steps[i] as PlannedStep
      if (answerBookkeeping(action)) continue
      try {
        switch (action.kind) {
          case 'describe': {
            const source =
              step.describe !== undefined
                ? plan.describes[step.describe]
                : step.fromExecute !== undefined
                  ? plan.sources[step.fromExecute]
                  : undefined
            if (source === undefined) describeAnswer(step, undefined, [])
            else await describeOne(source, step, plan.statements.length === 0)
            break
          }
          case 'execute': {
            if (step.empty) {
              bare(writer, 'I')
              break
            }
            if (step.resume) {
              answerExecute(step, undefined)
              break
            }
            const statement = plan.statements[step.execute as number] as Statement
            const source = plan.sources[step.execute as number] as Prepared
            const parsed = { ...source.parsed, sql: statement.sql }
            const result = await runOne(
              parsed,
              plan.params[step.execute as number] ?? [],
              statement.wire ?? {},
              true,
            )
            if (result) answerExecute(step, result)
            await answered()
            break
          }
        }
      } catch (error) {
        skipFrom(plan.steps, i + 1)
        return refuse(clientCancel(error))
      }
    }
    if (planError !== undefined) refuse(planError)
  }

  /** ParseComplete, BindComplete, CloseComplete: the session's books changed when the batch was planned. */
  function answerBookkeeping(action: Action): boolean {
    const answers = { parse: '1', bind: '2', close: '3' } as const
    if (action.kind !== 'parse' && action.kind !== 'bind' && action.kind !== 'close') return false
    bare(writer, answers[action.kind])
    return true
  }

  /** Describe of one statement: the router's own answer for what it runs itself, else the shard's. */
  async function describeOne(source: Prepared, step: PlannedStep, admit: boolean) {
    const { parsed } = source
    const ofStatement = step.resultFormats === undefined
    if (LOCAL_TYPES.has(parsed.type)) {
      if (ofStatement) parameterDescription(writer, source.paramTypes)
      if (parsed.type === 'VariableShowStmt')
        rowDescription(writer, [showColumn(String(parsed.node.name ?? ''))], [])
      else bare(writer, 'n')
      return
    }
    const [description] = await describeAll([source], admit)
    if (ofStatement) parameterDescription(writer, description?.paramTypes ?? [])
    if (description?.fields.length) rowDescription(writer, description.fields, step.resultFormats ?? [])
    else bare(writer, 'n')
  }

  /**
   * Parses the texts of the batch's Parse messages, each in the tenant's turn (tenant-request.ts), so a
   * client's SQL cannot stall the loop for others: a parse error is kept to fail its own Parse, as in
   * PostgreSQL; a refusal of the turn (the tenant's parse queue full, the deadline) is the batch's.
   */
  async function parseBatch(actions: Action[]) {
    for (const action of actions) {
      if (action.kind !== 'parse' || tooLong(action.sql)) continue
      const known = parsedTexts.get(action.sql)
      if (known) {
        action.parsed = known
        continue
      }
      const tenant = (session as Login).tenant
      const outcome = await withDeadline((signal) =>
        parseInTurn(tenant, signal, () => {
          try {
            return { parsed: parseOne(action.sql) }
          } catch (error) {
            return { error }
          }
        }),
      )
      if (outcome.parsed) remember(action.sql, outcome.parsed)
      action.parsed = outcome.parsed
      action.parseError = outcome.error
    }
  }

  function remember(sql: string, parsed: Parsed) {
    const bytes = 2 * sql.length + parsed.weight + 64
    if (parsedTexts.size >= PARSED_TEXTS || parsedBytes + bytes > PARSED_BYTES) {
      parsedTexts.clear()
      parsedBytes = 0
    }
    if (bytes > PARSED_BYTES) return
    parsedTexts.set(sql, parsed)
    parsedBytes += bytes
  }

  /** A statement longer than maxStatementBytes (in UTF-8), counted without encoding it where it can be. */
  function tooLong(sql: string): boolean {
    const max = config.maxStatementBytes
    return sql.length * 3 > max && (sql.length > max || Buffer.byteLength(sql) > max)
  }

  /**
   * Walks the batch on the session's own books (statements and portals change as it goes), and says
   * what the shard must do: which statements to describe and which to run, in one transaction.
   */
  function planBatch(actions: Action[]) {
    const plan: Plan = { steps: [], statements: [], sources: [], params: [], describes: [] }
    for (const [i, action] of actions.entries()) {
      try {
        plan.steps.push(planStep(action, plan, actions, i))
      } catch (error) {
        return { plan, error, failedAt: i }
      }
    }
    return { plan, error: undefined, failedAt: undefined }
  }

  function planStep(
    action: Action,
    plan: Omit<Plan, 'steps'>,
    actions: Action[],
    index: number,
  ): PlannedStep {
    switch (action.kind) {
      case 'parse': {
        if (action.name !== '' && prepared.has(action.name))
          throw sqlState('42P05', `prepared statement "${action.name}" already exists`)
        if (tooLong(action.sql))
          throw new SwitchyardError(
            'statement_too_large',
            `a statement is longer than ${config.maxStatementBytes} bytes: send values as parameters, or split it`,
          )
        // A statement the parser refuses (two commands, bad syntax) fails its own Parse, as in PostgreSQL.
        if (action.parseError !== undefined) throw action.parseError
        if (action.paramTypes.some((type) => XML_TYPES.has(type)))
          throw new SwitchyardError(
            'statement_not_allowed',
            'XML is not allowed: libxml2 parses it without checking for a cancel, so no deadline could stop it',
          )
        const statement = { sql: action.sql, paramTypes: action.paramTypes, parsed: action.parsed as Parsed }
        return { undo: keep('statement', action.name, statement) }
      }
      case 'bind': {
        const statement = prepared.get(action.bind.statement)
        if (!statement)
          throw sqlState('26000', `prepared statement "${action.bind.statement}" does not exist`)
        return { undo: keep('portal', action.bind.portal, { statement, bind: action.bind }) }
      }
      case 'close': {
        return { undo: drop(action.target === 'S' ? 'statement' : 'portal', action.name) }
      }
      case 'describe': {
        if (action.target === 'S') {
          const statement = prepared.get(action.name)
          if (!statement) throw sqlState('26000', `prepared statement "${action.name}" does not exist`)
          if (statement.sql.trim() === '') return { noRows: true, paramTypes: statement.paramTypes }
          plan.describes.push(statement)
          return { describe: plan.describes.length - 1 }
        }
        const portal = portals.get(action.name)
        if (!portal) throw sqlState('34000', `portal "${action.name}" does not exist`)
        if (portal.statement.sql.trim() === '') return { noRows: true }
        // The portal runs later in this batch: its run gives the columns, no describe needed.
        const runs = actions
          .slice(index + 1)
          .some((next) => next.kind === 'execute' && next.portal === action.name)
        if (runs) return { fromExecute: plan.statements.length, resultFormats: portal.bind.resultFormats }
        plan.describes.push(portal.statement)
        return { describe: plan.describes.length - 1, resultFormats: portal.bind.resultFormats }
      }
      case 'execute': {
        const portal = portals.get(action.portal)
        if (!portal) throw sqlState('34000', `portal "${action.portal}" does not exist`)
        if (portal.statement.sql.trim() === '') return { empty: true }
        const limits = {
          portal: action.portal,
          maxRows: action.maxRows,
          resultFormats: portal.bind.resultFormats,
        }
        if (portal.executed) return { resume: true, ...limits }
        portal.executed = true
        plan.statements.push({
          sql: portal.statement.sql,
          params: [],
          wire: {
            raw: true,
            paramTypes: portal.statement.paramTypes,
            paramFormats: portal.bind.paramFormats,
            resultFormats: portal.bind.resultFormats,
          },
        })
        plan.params.push(portal.bind.params)
        plan.sources.push(portal.statement)
        return {
          execute: plan.statements.length - 1,
          ...limits,
          undo: () => {
            portal.executed = false
          },
        }
      }
    }
  }

  function describeAnswer(
    step: PlannedStep,
    description: StatementDescription | undefined,
    results: StatementResult[],
  ) {
    if (step.noRows) {
      if (step.paramTypes) parameterDescription(writer, step.paramTypes)
      bare(writer, 'n')
      return
    }
    if (step.fromExecute !== undefined) {
      const fields = (results[step.fromExecute]?.fields ?? []) as ColumnDescription[]
      if (fields.length) rowDescription(writer, fields, step.resultFormats ?? [])
      else bare(writer, 'n')
      return
    }
    if (!description) return
    // A statement's Describe gives its parameter types too; a portal's only its columns.
    if (step.resultFormats === undefined) parameterDescription(writer, description.paramTypes)
    if (description.fields.length) rowDescription(writer, description.fields, step.resultFormats ?? [])
    else bare(writer, 'n')
  }

  /**
   * Columns and parameter types of statements, from a shard's Parse and Describe after the policy's
   * check, under the request's bounds: in a block on its own connection, else on the primary's pool
   * within the tenant's share. `admit`: it counts against the tenant's rate limit (nothing else in
   * its batch does).
   */
  async function describeAll(statements: Prepared[], admit: boolean): Promise<StatementDescription[]> {
    if (statements.length === 0) return []
    const tenant = (session as Login).tenant
    const list = statements.map((statement) => ({ sql: statement.sql, paramTypes: statement.paramTypes }))
    const current = block as Block
    if (current.active) return bounded((signal) => current.describe(list, signal), false)
    return bounded(async (signal) => {
      const checked = list.map((statement) => ({ sql: statement.sql, params: [] }))
      await checkStatements(deps, tenant, checked, [], signal)
      // Where the tenant is now (it may have moved since the login): its primary's pool, its share of it.
      const route = await deps.routes.resolve(tenant)
      if (admit)
        await deps.admission.admit(tenant, route.shard, quotaOf(deps.topology, route, apiRequestOf(settings)))
      return deps.describe(tenant, route.shard, list, signal)
    }, false)
  }

  // ---- Running and answering ----

  /**
   * A key revoked after the login ends the session at its next statement once `wireKeyRecheckMs` (30 s,
   * the HTTP key cache's TTL) has passed since the last check. With the directory down, the session goes on (as HTTP serves keys it has seen).
   */
  async function checkKey() {
    const login = session as Login
    if (Date.now() - keyCheckedAt < config.wireKeyRecheckMs) return
    const valid = await keyStillValid(deps.directory, login.keyId).catch(() => true)
    keyCheckedAt = Date.now()
    if (!valid) {
      fatal(new SwitchyardError('unauthorized', 'the API key of this session was revoked'))
      throw new SwitchyardError('unauthorized', 'the API key of this session was revoked')
    }
  }

  async function runStatements(statements: Statement[], params: (string | Buffer | null)[][]) {
    if (statements.length === 0) return []
    const { outcome } = await bounded((signal) =>
      runTenantRequest(deps, {
        protocol: 'postgres',
        tenant: (session as Login).tenant,
        statements,
        params,
        consistency: 'session',
        apiRequest: apiRequestOf(settings),
        signal,
      }),
    )
    return outcome.results
  }

  /**
   * Runs `work` under the request's bounds, as HTTP does: its deadline (requestTimeoutMs), the client's
   * CancelRequest and the client leaving all abort its signal, which cancels the shard's query.
   */
  async function bounded<T>(work: (signal: Cancellation) => Promise<T>, observed = true): Promise<T> {
    lastWorkAt = Date.now()
    await checkKey()
    deps.answers.admit((session as Login).tenant)
    const started = performance.now()
    let outcome = 'ok'
    try {
      return await withDeadline(work)
    } catch (error) {
      outcome = 'error'
      throw error
    } finally {
      if (observed) deps.observe((session as Login).tenant, outcome, performance.now() - started)
    }
  }

  /** `work` with a signal that its deadline, the client's CancelRequest and the client leaving abort. */
  async function withDeadline<T>(work: (signal: Cancellation) => Promise<T>): Promise<T> {
    const cancellation = new Cancellation()
    const timer = setTimeout(() => cancellation.abort(DEADLINE), config.requestTimeoutMs)
    running = cancellation
    cancelledByClient = false
    try {
      return await work(cancellation)
    } finally {
      clearTimeout(timer)
      running = undefined
    }
  }

  /** A cancel the client asked for (CancelRequest) is PostgreSQL's 57014, not the deadline's. */
  function clientCancel(error: unknown): unknown {
    if (!cancelledByClient || !(error instanceof SwitchyardError) || error.code !== 'query_timeout')
      return error
    return sqlState('57014', 'canceling statement due to user request')
  }

  /**
   * An Execute's answer. With a row limit (a cursor's fetch size) the first rows go and the rest are kept
   * for the portal's next Execute: the statement ran whole (one transaction per batch, as every request),
   * so what is kept counts against the tenant's unread bound like an answer not yet read.
   */
  function answerExecute(step: PlannedStep, result: StatementResult | undefined) {
    const name = step.portal as string
    if (step.resume || !result) return sendSuspended(name, step.maxRows ?? 0)
    const rows = result.raw ?? []
    const limit = step.maxRows ?? 0
    if (limit <= 0 || rows.length <= limit) return answerResult(result, [], false)
    const rest = rows.slice(limit)
    const bytes = rest.reduce((sum, row) => sum + row.length, 0)
    const tenant = (session as Login).tenant
    // As for HTTP answers, a write's rows are always kept (it committed); a read's may be refused.
    if (result.command === 'SELECT') deps.answers.admit(tenant, bytes)
    // The same portal bound and run again in this batch: what its first run kept is let go first.
    unsuspend(name)
    suspended.set(name, {
      rows: rest,
      at: 0,
      command: result.command,
      release: deps.answers.take(tenant, bytes),
    })
    for (let i = 0; i < limit; i++) dataRow(writer, rows[i] as Buffer)
    bare(writer, 's')
  }

  /** The next rows of a suspended portal; a portal already run to completion sends none. */
  function sendSuspended(name: string, maxRows: number) {
    lastWorkAt = Date.now()
    const left = suspended.get(name)
    if (!left) return commandComplete(writer, 'SELECT 0')
    const end = maxRows > 0 ? Math.min(left.at + maxRows, left.rows.length) : left.rows.length
    for (let i = left.at; i < end; i++) dataRow(writer, left.rows[i] as Buffer)
    const sent = end - left.at
    left.at = end
    if (end < left.rows.length) return bare(writer, 's')
    commandComplete(writer, commandTag({ command: left.command, rowCount: sent }))
    unsuspend(name)
  }

  function answerResult(result: StatementResult, formats: number[], describe: boolean) {
    const fields = result.fields as ColumnDescription[]
    if (describe && (fields.length > 0 || result.command === 'SELECT'))
      rowDescription(writer, fields, formats)
    for (const row of result.raw ?? []) dataRow(writer, row)
    commandComplete(writer, commandTag(result))
  }
}

/** The command tag as PostgreSQL writes it: INSERT carries an OID (always 0) before its count. */
export function commandTag(result: { command: string; rowCount: number | null }): string {
  if (result.rowCount === null) return result.command
  return result.command === 'INSERT' ? `INSERT 0 ${result.rowCount}` : `${result.command} ${result.rowCount}`
}

function targetOf(reader: BodyReader) {
  const { kind, name } = readTarget(reader)
  return { target: kind, name }
}

function needsShard(
  action: Action,
  step: { empty?: boolean; resume?: boolean; fromExecute?: number; describe?: number },
  describeFailed: boolean,
): boolean {
  if (action.kind === 'execute') return !step.empty && !step.resume
  if (action.kind !== 'describe') return false
  return step.fromExecute !== undefined || (describeFailed && step.describe !== undefined)
}

/**
 * What a queued message counts against the session's read-ahead bound: its body and what holding it
 * costs besides (an empty Sync or Flush is not free), so a flood of small messages pauses reading too.
 */
function queuedSize(frame: Frame): number {
  return frame.body.length + 256
}

/** One statement's parse as a session keeps it (Parsed): no tree where the router does not need one. */
function parseOne(sql: string): Parsed {
  const statements = splitStatements(sql)
  if (statements.length > 1)
    throw sqlState('42601', 'cannot insert multiple commands into a prepared statement')
  const statement = statements[0] ?? { sql: '', type: '', node: {} }
  if (!LOCAL_TYPES.has(statement.type))
    return { sql: statement.sql, type: statement.type, node: {}, weight: 0 }
  return { ...statement, weight: 2 * JSON.stringify(statement.node).length }
}

function sqlState(code: string, message: string): SwitchyardError {
  const error = new SwitchyardError('sql_error', message, { sqlstate: code })
  error.cause = { code, message, severity: 'ERROR' }
  return error
}

function violation(error: unknown): SwitchyardError {
  return new SwitchyardError('protocol_violation', (error as Error)?.message ?? 'protocol violation')
}

/** A client's byte stream: a TCP socket, or a WebSocket's binary messages (websocket.ts). */
export type ClientStream = Duplex & { setNoDelay?: (noDelay?: boolean) => unknown }

/** Sessions by their BackendKeyData, for CancelRequests (which come on a connection of their own). */
export interface SessionRegistry {
  /**
   * Registers a logged-in session of `tenant` under a pid no other session here has (tenant_busy past
   * wireMaxClientsPerTenant); `remove` when it ends.
   */
  add(tenant: string, secret: Buffer, cancel: () => void): { pid: number; remove: () => void }
  cancel(pid: number, secret: Buffer): void
  /** Sessions logged in. */
  size(): number
}
