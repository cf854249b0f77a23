import { parseLsn } from '../shard/lsn.ts'
import {
  PipelineError,
  type PipelineStep,
  type StepResult,
  type WireConnection,
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
  /** Parameters as text (or null): the server infers their types, as it does for psql. */
  params: (string | null)[][]
  isolation?: IsolationLevel | undefined
  /** A client may ask for read-only even on the primary (Neon's batch read-only header). */
  readOnly?: boolean | undefined
  deferrable?: boolean | undefined
  /** The tenant's limits, for the shard's quota triggers (writes only). */
  limits?: Record<string, number> | undefined
}

export interface TransactionOutcome {
  results: StatementResult[]
  /** After a write: the primary's WAL position once it committed. */
  lsn: bigint | null
}

/** Which part of the transaction failed first: entering the tenant, or the client's statement i. */
export class TransactionError extends Error {
  constructor(
    readonly stage: 'enter' | 'statement' | 'commit',
    override readonly cause: unknown,
    readonly statementIndex?: number,
  ) {
    super((cause as Error)?.message ?? String(cause))
    this.name = 'TransactionError'
  }
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
 */
export async function runTransaction(
  connection: WireConnection,
  plan: TransactionPlan,
): Promise<TransactionOutcome> {
  const steps: PipelineStep[] = [{ sql: beginSql(plan), params: [] }, enterStep(plan)]
  const firstStatement = steps.length
  plan.statements.forEach((statement, i) => {
    steps.push({ sql: statement.sql, params: plan.params[i] ?? [] })
  })
  steps.push({ sql: 'commit', params: [] })
  if (plan.write) steps.push({ sql: 'select pg_current_wal_lsn()::text', params: [] })
  let results: StepResult[]
  try {
    results = await connection.run(steps)
  } catch (error) {
    throw transactionError(error, firstStatement, plan.statements.length)
  }
  const lsn = plan.write ? results.at(-1)?.rows[0]?.[0] : undefined
  return {
    results: results.slice(firstStatement, firstStatement + plan.statements.length),
    lsn: lsn ? parseLsn(lsn) : null,
  }
}

/** Which part failed: a failed step before the client's statements is a failure to enter. */
function transactionError(error: unknown, firstStatement: number, statements: number): TransactionError {
  // A connection that failed or closed is a failure to enter: dispatch marks the node down (retry or 503).
  if (!(error instanceof PipelineError)) return new TransactionError('enter', error)
  if (error.step < firstStatement) return new TransactionError('enter', error.cause)
  if (error.step < firstStatement + statements)
    return new TransactionError('statement', error.cause, error.step - firstStatement)
  return new TransactionError('commit', error.cause)
}

const ENTER = 'select switchyard.enter($1::uuid, $2::integer, $3::boolean, $4::jsonb, $5::text)'

function enterStep(plan: TransactionPlan): PipelineStep {
  const limits = plan.write && plan.limits ? JSON.stringify(plan.limits) : null
  return {
    sql: ENTER,
    params: [plan.tenant, String(plan.epoch), plan.write ? 'true' : 'false', limits, plan.capability],
  }
}

function beginSql(plan: TransactionPlan): string {
  const access = plan.write && !plan.readOnly ? 'read write' : 'read only'
  return `begin isolation level ${plan.isolation ?? 'read committed'} ${access}${plan.deferrable ? ' deferrable' : ' not deferrable'}`
}
