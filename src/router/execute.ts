import type { Sql } from '../shard/connection.ts'
import { parseLsn } from '../shard/lsn.ts'
import type { Statement, StatementResult } from './result.ts'

export type IsolationLevel = 'read committed' | 'repeatable read' | 'serializable'

export interface TransactionPlan {
  tenant: string
  epoch: number
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
 * One transaction on one connection, sent at once so it costs one round trip: BEGIN and entering the
 * tenant share one simple-protocol message, each client statement is an extended-protocol (prepared)
 * statement, and COMMIT (with the commit LSN after a write) is the last message. If any part fails the
 * rest fail with 25P02 and COMMIT rolls back: the first error is the one that counts.
 */
export async function runTransaction(pool: Sql, plan: TransactionPlan): Promise<TransactionOutcome> {
  // A node that is gone fails here when the pool has no live connection left: that is a failure to
  // enter, so dispatch sees the connection error and marks the node down (retry or 503), not a 500.
  const connection = await pool.reserve().catch((error: unknown) => {
    throw new TransactionError('enter', error)
  })
  try {
    const enter = connection.unsafe(`${beginSql(plan)}; ${enterSql(plan)}`).simple()
    const statements = plan.statements.map((statement, i) =>
      connection.unsafe(statement.sql, plan.params[i] ?? []).raw(),
    )
    const commit = connection
      .unsafe(plan.write ? 'commit; select pg_current_wal_lsn()::text as lsn' : 'commit')
      .simple()
    const settled = await Promise.allSettled([enter, ...statements, commit])
    const failed = settled.findIndex((outcome) => outcome.status === 'rejected')
    if (failed !== -1) {
      const reason = (settled[failed] as PromiseRejectedResult).reason
      if (failed === 0) throw new TransactionError('enter', reason)
      if (failed <= statements.length) throw new TransactionError('statement', reason, failed - 1)
      throw new TransactionError('commit', reason)
    }
    const results = settled
      .slice(1, 1 + statements.length)
      .map((outcome) => toResult((outcome as PromiseFulfilledResult<RawResult>).value))
    return {
      results,
      lsn: plan.write ? commitLsn((settled.at(-1) as PromiseFulfilledResult<unknown>).value) : null,
    }
  } finally {
    connection.release()
  }
}

/**
 * enter() with literals, so it can share BEGIN's simple-protocol message. Safe: the tenant id is a
 * validated UUID (only hex digits and dashes), the epoch an integer, the flag a boolean, and the limits
 * JSON of integers (quoted as a literal all the same).
 */
function enterSql(plan: TransactionPlan): string {
  if (!UUID.test(plan.tenant) || !Number.isInteger(plan.epoch))
    throw new Error('enter() needs a UUID and an integer epoch')
  const limits =
    plan.write && plan.limits ? `, '${JSON.stringify(plan.limits).replaceAll("'", "''")}'::jsonb` : ''
  return `select switchyard.enter('${plan.tenant}'::uuid, ${plan.epoch}, ${plan.write ? 'true' : 'false'}${limits})`
}

function beginSql(plan: TransactionPlan): string {
  const parts = ['begin']
  if (plan.isolation) parts.push(`isolation level ${plan.isolation}`)
  parts.push(plan.write && !plan.readOnly ? 'read write' : 'read only')
  if (plan.deferrable) parts.push('deferrable')
  return parts.join(' ')
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** `commit; select pg_current_wal_lsn()` answers with one result per statement: the LSN is in the last. */
function commitLsn(value: unknown): bigint | null {
  const results =
    Array.isArray(value) && Array.isArray(value[0]) ? (value as unknown[][]) : [value as unknown[]]
  const row = results.at(-1)?.[0] as { lsn?: string } | undefined
  return row?.lsn ? parseLsn(row.lsn) : null
}

interface RawResult extends Array<(Buffer | null)[]> {
  command: string
  count: number | null
  columns?: { name: string; type: number; table: number; number: number }[]
}

function toResult(raw: RawResult): StatementResult {
  return {
    command: raw.command,
    rowCount: raw.count ?? null,
    fields: (raw.columns ?? []).map((column) => ({
      name: column.name,
      dataTypeID: column.type,
      tableID: column.table,
      columnID: column.number,
    })),
    rows: raw.map((row) => row.map((value) => (value === null ? null : value.toString('utf8')))),
  }
}
