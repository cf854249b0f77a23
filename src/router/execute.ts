import { parseLsn } from '../shard/lsn.ts'
import {
  PipelineError,
  type PipelineStep,
  ResultTooLargeError,
  type RunOptions,
  type StepResult,
  type WireConnection,
  WireError,
} from '../shard/wire/connection.ts'
import type { Statement, StatementResult } from './result.ts'

export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable'

export interface TransactionPlan {
  tenant: string
  epoch: number
  /** The router capability `switchyard.enter()` checks (from the directory). */
  capability: string
  write: boolean
  statements: Statement[]
  /**
   * Parameters as text (or null): the server infers their types, as it does for psql; a PostgreSQL
   * client's binary values as bytes, with its types and formats on the statement (`wire`).
   */
  params: (string | Buffer | null)[][]
  isolation?: IsolationLevel | undefined
  /** A client may ask for read-only even on the primary (Neon's batch read-only header). */
  readOnly?: boolean | undefined
  deferrable?: boolean | undefined
  /** The tenant's limits, for the shard's quota triggers (writes only). */
  limits?: Record<string, number> | undefined
  /** A write's Idempotency-Key: claimed and answered in the write's own transaction (writes only). */
  idempotency?: Idempotency | undefined
}

export interface Idempotency {
  key: string
  /** SHA-256 (hex) of the request: the same key for another request is refused. */
  requestHash: string
  ttlSeconds: number
  /** First answers larger than this (as JSON) are not kept: a retry is told so (409). */
  maxBytes: number
}

export interface TransactionOutcome {
  results: StatementResult[]
  /** After a write: the primary's WAL position once it committed. */
  lsn: bigint | null
  /**
   * A client statement ran something other than DML (SET, PREPARE, LISTEN, …: only SQL that bypassed the
   * statement policy can): the connection must not serve another request.
   */
  tainted: boolean
  /** An Idempotency-Key's first answer, returned instead of running the statements again. */
  replayed: boolean
}

/**
 * What became of the COMMIT when a transaction failed: `none` (it did not run: nothing was written),
 * `done` (it completed; the failure came after it), `unknown` (it was sent and the connection was lost
 * before its answer: the write may or may not have happened).
 */
export type CommitOutcome = 'none' | 'done' | 'unknown'

/** Which part of the transaction failed first: entering the tenant, or the client's statement i. */
export class TransactionError extends Error {
  constructor(
    readonly stage: 'enter' | 'statement' | 'commit',
    override readonly cause: unknown,
    readonly statementIndex?: number,
    readonly commit: CommitOutcome = 'none',
    /** The transaction's outcome when its COMMIT is `done` (the statements' results, no LSN). */
    readonly committed?: TransactionOutcome,
  ) {
    super((cause as Error)?.message ?? String(cause))
    this.name = 'TransactionError'
  }

  /** A client statement that completed before the failure was not DML: the connection must go. */
  tainted = false
}

/** Where a pipeline's steps are: its first client statement, how many, and its COMMIT (-1: none). */
interface Layout {
  firstStatement: number
  statements: number
  commitStep: number
}

/**
 * One transaction as ONE pipeline with ONE Sync, so the shard answers it with one flush and it costs one
 * round trip: BEGIN, enter the tenant, the client's statements (prepared, parameters bound as text),
 * COMMIT, and for writes the WAL position (read after the commit: read-your-writes waits for it).
 * Enter's tenant, epoch, limits and the capability are bound parameters like the client's.
 *
 * BEGIN always names the isolation level, the access mode and deferrability: the session's defaults
 * for them are settings an earlier request could have changed, and they take effect when the
 * transaction starts, before enter() resets the session. On an error the server skips the rest up to
 * the Sync; the pool rolls back a transaction left open before the connection is reused.
 *
 * A write with an Idempotency-Key takes two round trips: the first claims the key and runs the
 * statements, the second keeps their results with the key and commits.
 */
export async function runTransaction(
  connection: WireConnection,
  plan: TransactionPlan,
  options: RunOptions = {},
): Promise<TransactionOutcome> {
  if (plan.write && plan.idempotency) return runIdempotent(connection, plan, plan.idempotency, options)
  const steps: PipelineStep[] = [{ sql: beginSql(plan), params: [] }, enterStep(plan)]
  const layout = { firstStatement: steps.length, statements: plan.statements.length, commitStep: -1 }
  pushStatements(steps, plan)
  layout.commitStep = steps.push({ sql: 'commit', params: [] }) - 1
  // The insert position, not pg_current_wal_lsn() (the write position): with synchronous_commit off
  // the commit record may not be written yet, and a replica at the write position may lack it.
  if (plan.write) steps.push({ sql: 'select pg_current_wal_insert_lsn()::text', params: [] })
  let results: StepResult[]
  try {
    results = await connection.run(steps, options)
  } catch (error) {
    throw transactionError(error, layout, plan.write, connection)
  }
  const lsn = plan.write ? results.at(-1)?.rows[0]?.[0] : undefined
  return outcome(results, layout, lsn ? parseLsn(lsn) : null)
}

async function runIdempotent(
  connection: WireConnection,
  plan: TransactionPlan,
  idempotency: Idempotency,
  options: RunOptions,
): Promise<TransactionOutcome> {
  const claimed: PipelineStep[] = [
    { sql: beginSql(plan), params: [] },
    enterStep(plan),
    { sql: CLAIM, params: [idempotency.key, idempotency.requestHash, String(idempotency.ttlSeconds)] },
  ]
  const layout = { firstStatement: claimed.length, statements: plan.statements.length, commitStep: -1 }
  pushStatements(claimed, plan)
  let ran: TransactionOutcome
  try {
    ran = outcome(await connection.run(claimed, options), layout, null)
  } catch (error) {
    if (error instanceof PipelineError && error.step === 2) {
      if (error.cause.code === REPLAY_SQLSTATE) {
        await rollback(connection)
        return replay(connection, plan, idempotency, options)
      }
      // The key names another request (SY005): the client's mistake, told as its statement's error.
      if (error.cause.code === REUSED_SQLSTATE) throw new TransactionError('statement', error.cause, 0)
    }
    throw transactionError(error, layout, false, connection)
  }
  const answer = JSON.stringify(ran.results)
  const kept = Buffer.byteLength(answer) <= idempotency.maxBytes ? answer : null
  const committing: PipelineStep[] = [
    { sql: KEEP, params: [idempotency.key, kept] },
    { sql: 'commit', params: [] },
    { sql: 'select pg_current_wal_insert_lsn()::text', params: [] },
  ]
  const second = { firstStatement: 1, statements: 0, commitStep: 1 }
  try {
    const results = await connection.run(committing, options)
    const lsn = results.at(-1)?.rows[0]?.[0]
    return { ...ran, lsn: lsn ? parseLsn(lsn) : null }
  } catch (error) {
    const failed = transactionError(error, second, true, connection)
    // Past the claim, the client's statements are done: only the COMMIT's fate is left to tell.
    const lost = new TransactionError(
      'commit',
      failed.cause,
      undefined,
      failed.commit,
      failed.committed && ran,
    )
    lost.tainted = ran.tainted
    throw lost
  }
}

/** The first answer of the key, read in a transaction of its own (a read). */
async function replay(
  connection: WireConnection,
  plan: TransactionPlan,
  idempotency: Idempotency,
  options: RunOptions,
): Promise<TransactionOutcome> {
  const reading = { ...plan, write: false, isolation: undefined, readOnly: true, deferrable: false }
  const steps: PipelineStep[] = [
    { sql: beginSql(reading), params: [] },
    enterStep(reading),
    { sql: REPLAY, params: [idempotency.key] },
    { sql: 'commit', params: [] },
  ]
  let results: StepResult[]
  try {
    results = await connection.run(steps, options)
  } catch (error) {
    throw transactionError(error, { firstStatement: 2, statements: 1, commitStep: 3 }, false, connection)
  }
  const stored = results[2]?.rows[0]?.[0]
  if (stored === null || stored === undefined) throw new TransactionError('statement', replayTooLarge(), 0)
  return { results: JSON.parse(stored) as StatementResult[], lsn: null, tainted: false, replayed: true }
}

const REPLAY_SQLSTATE = 'SY004'
const REUSED_SQLSTATE = 'SY005'
const CLAIM = 'select switchyard.claim_idempotency_key($1::text, $2::text, $3::integer)'
const KEEP = 'select switchyard.keep_idempotent_results($1::text, $2::jsonb)'
const REPLAY = 'select switchyard.idempotent_results($1::text)::text'

/** A replay whose first answer was too large to keep: told as a statement error with its own code. */
function replayTooLarge() {
  return Object.assign(new Error('the first answer of this Idempotency-Key was too large to keep'), {
    code: 'SY006',
    severity: 'ERROR',
    hint: 'the write was done once; read its rows with a query',
  })
}

function pushStatements(steps: PipelineStep[], plan: TransactionPlan) {
  plan.statements.forEach((statement, i) => {
    steps.push({ sql: statement.sql, params: plan.params[i] ?? [], ...statement.wire })
  })
}

/** Commands a client statement may complete with; anything else means it got past the policy. */
const DML = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE'])

function outcome(results: StepResult[], layout: Layout, lsn: bigint | null): TransactionOutcome {
  const mine = results.slice(layout.firstStatement, layout.firstStatement + layout.statements)
  return { results: mine, lsn, tainted: mine.some((result) => !DML.has(result.command)), replayed: false }
}

async function rollback(connection: WireConnection) {
  if (!connection.broken && connection.transactionStatus !== 'I') await connection.execute('rollback')
}

/**
 * Which part failed, and what became of the COMMIT (`layout.commitStep`, -1 when the pipeline has none).
 * A step that failed on the server, or a cancel that settled (the server then skipped the rest up to the
 * Sync), leaves the COMMIT undone unless it had completed; a pipeline that was sent and lost with its
 * connection before the COMMIT's answer leaves it unknown.
 */
function transactionError(
  error: unknown,
  layout: Layout,
  write: boolean,
  connection: WireConnection,
): TransactionError {
  const failed = describeFailure(error, layout, write, connection)
  const ran = error instanceof WireError ? error.results : undefined
  if (ran) failed.tainted = outcome([...ran], layout, null).tainted
  return failed
}

function describeFailure(
  error: unknown,
  layout: Layout,
  write: boolean,
  connection: WireConnection,
): TransactionError {
  const completed = error instanceof WireError ? error.completedSteps : 0
  // A budget's overflow skipped rows: what came back is not the whole answer.
  const partial =
    error instanceof WireError && !(error instanceof ResultTooLargeError) ? error.results : undefined
  const commit: CommitOutcome =
    layout.commitStep >= 0 && completed > layout.commitStep
      ? 'done'
      : !write || layout.commitStep < 0 || (error instanceof WireError && !error.sent)
        ? 'none'
        : error instanceof PipelineError || !connection.broken
          ? 'none'
          : 'unknown'
  const committed = commit === 'done' && partial ? outcome([...partial], layout, null) : undefined
  if (!(error instanceof PipelineError)) {
    // Not the server's answer to a step: the connection, a cancel, a budget. Before anything of the
    // client's ran it is a failure to enter: dispatch marks the node down (retry or 503).
    const stage = completed <= layout.firstStatement && commit === 'none' ? 'enter' : 'statement'
    return new TransactionError(stage, error, undefined, commit, committed)
  }
  if (error.step < layout.firstStatement) return new TransactionError('enter', error.cause)
  if (error.step < layout.firstStatement + layout.statements)
    return new TransactionError('statement', error.cause, error.step - layout.firstStatement)
  return new TransactionError('commit', error.cause, undefined, commit, committed)
}

const ENTER = 'select switchyard.enter($1::uuid, $2::integer, $3::boolean, $4::jsonb, $5::text)'

export function enterStep(plan: TransactionPlan): PipelineStep {
  const limits = plan.write && plan.limits ? JSON.stringify(plan.limits) : null
  return {
    sql: ENTER,
    params: [plan.tenant, String(plan.epoch), plan.write ? 'true' : 'false', limits, plan.capability],
  }
}

export function beginSql(plan: TransactionPlan): string {
  const access = plan.write && !plan.readOnly ? 'read write' : 'read only'
  return `begin isolation level ${plan.isolation ?? 'read committed'} ${access}${plan.deferrable ? ' deferrable' : ' not deferrable'}`
}
