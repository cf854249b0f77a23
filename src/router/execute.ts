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
  write: boolean
  /** The node is a hot standby: it refuses writes by itself. */
  standby: boolean
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
 * round trip: enter the tenant, the client's statements (prepared, parameters bound as text), and for
 * writes COMMIT and then the WAL position (read after the commit: read-your-writes waits for it).
 * Enter's tenant, epoch and limits are bound parameters like the client's.
 *
 * A plain read on a hot standby needs no BEGIN: without one the pipeline is a single implicit
 * transaction up to the Sync, so enter()'s transaction-local settings hold for the statements after it,
 * and the standby refuses writes itself (25006). Everything else (writes, reads on a primary, an isolation
 * level or DEFERRABLE) opens an explicit transaction in the same pipeline. On an error the server skips
 * the rest up to the Sync; the pool rolls back a transaction left open before the connection is reused.
 */
export async function runTransaction(
  connection: WireConnection,
  plan: TransactionPlan,
): Promise<TransactionOutcome> {
  const explicit = needsExplicitTransaction(plan)
  const steps: PipelineStep[] = []
  if (explicit) steps.push({ sql: beginSql(plan), params: [] })
  steps.push(enterStep(plan))
  const firstStatement = steps.length
  plan.statements.forEach((statement, i) => {
    steps.push({ sql: statement.sql, params: plan.params[i] ?? [] })
  })
  if (explicit) steps.push({ sql: 'commit', params: [] })
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

const needsExplicitTransaction = (plan: TransactionPlan) =>
  plan.write || !plan.standby || plan.isolation !== undefined || Boolean(plan.deferrable)

const ENTER = 'select switchyard.enter($1::uuid, $2::integer, $3::boolean)'
const ENTER_WITH_LIMITS = 'select switchyard.enter($1::uuid, $2::integer, $3::boolean, $4::jsonb)'

function enterStep(plan: TransactionPlan): PipelineStep {
  const params = [plan.tenant, String(plan.epoch), plan.write ? 'true' : 'false']
  if (plan.write && plan.limits)
    return { sql: ENTER_WITH_LIMITS, params: [...params, JSON.stringify(plan.limits)] }
  return { sql: ENTER, params }
}

function beginSql(plan: TransactionPlan): string {
  const parts = ['begin']
  if (plan.isolation) parts.push(`isolation level ${plan.isolation}`)
  parts.push(plan.write && !plan.readOnly ? 'read write' : 'read only')
  if (plan.deferrable) parts.push('deferrable')
  return parts.join(' ')
}
