import type { TenantRoute } from '../directory/routes.ts'
import { effectiveLimits } from '../directory/tenants.ts'
import { SwitchyardError } from '../errors.ts'
import { parseLsn } from '../shard/lsn.ts'
import { STALE_ROUTE_SQLSTATE } from '../shard/ownership.ts'
import type { CancelSignal } from '../shard/wire/cancel.ts'
import {
  PipelineError,
  type PipelineStep,
  QueryCancelledError,
  ResultTooLargeError,
  type StatementDescription,
  type StepResult,
  type WireConnection,
} from '../shard/wire/connection.ts'
import { PoolTimeoutError } from '../shard/wire/errors.ts'
import { cancelled, resultTooLarge, statementError } from './dispatch.ts'
import { beginSql, enterStep, type IsolationLevel } from './execute.ts'
import type { PostgresErrorFields } from './protocols/neon.ts'
import type { Statement, StatementResult } from './result.ts'
import { quotaOf, type TenantRequestDeps } from './tenant-request.ts'

export interface PinnedOptions {
  isolation?: IsolationLevel | undefined
  readOnly?: boolean | undefined
  deferrable?: boolean | undefined
}

/**
 * An interactive transaction (BEGIN … COMMIT over the PostgreSQL protocol): one connection of the
 * tenant's primary, reserved within the tenant's fair share for the whole block, the tenant entered once
 * at its start (enter() takes the tenant's fence lock for a writing block, so a move's cutover waits for
 * it, and the session's idle-in-transaction limit bounds that wait). Statements, savepoints and the
 * end run on it in order; whatever happens, `release()` gives the connection back rolled back or closed.
 */
export interface PinnedTransaction {
  readonly route: TenantRoute
  /** As the shard's last ReadyForQuery said: in the block, or in a failed block (only ROLLBACK helps). */
  readonly status: 'T' | 'E'
  /** The client's statements (already through the policy); a failure leaves the block failed. */
  run(
    statements: Statement[],
    params: (string | Buffer | null)[][],
    signal: CancelSignal,
  ): Promise<StatementResult[]>
  /** A client's Describe in the block (already through the policy), on the block's own connection. */
  describe(
    statements: { sql: string; paramTypes: number[] }[],
    signal: CancelSignal,
  ): Promise<StatementDescription[]>
  /** SQL the router built itself (SAVEPOINT, RELEASE, ROLLBACK TO with a quoted name). */
  control(sql: string, signal: CancelSignal): Promise<void>
  /** COMMIT (ROLLBACK on the shard if the block failed): the command tag PostgreSQL gives. */
  commit(signal: CancelSignal): Promise<'COMMIT' | 'ROLLBACK'>
  rollback(): Promise<void>
  /** Rolls back what is open and gives the connection back (closed if it cannot be trusted). */
  release(): void
}

const ROLLBACK: PipelineStep = { sql: 'rollback', params: [] }

export async function beginPinned(
  deps: TenantRequestDeps,
  tenant: string,
  options: PinnedOptions,
  signal: CancelSignal,
  apiRequest?: string,
): Promise<PinnedTransaction> {
  const write = !options.readOnly
  const deadline = Date.now() + deps.bufferWindowMs
  let admitted = false
  for (let attempt = 0; ; attempt++) {
    if (signal.aborted) throw cancelled(signal.reason, false)
    const route = await deps.routes.resolve(tenant, { fresh: attempt > 0 })
    if (!admitted) {
      // A block counts once against the tenant's limit, when it starts.
      await deps.admission.admit(tenant, route.shard, quotaOf(deps.topology, route, apiRequest))
      admitted = true
    }
    if (route.state === 'frozen' || attempt > 0) {
      if (Date.now() >= deadline || attempt > 256) throw moving(tenant)
      if (route.state === 'frozen') {
        await new Promise((resolve) => setTimeout(resolve, 25))
        continue
      }
    }
    const node = deps.routing.primary(route.shard)
    const pool = deps.pools.pool(node.name)
    const done = await deps.shares.acquire(tenant, node.name, signal)
    let connection: WireConnection
    try {
      connection = await pool.reserve({ signal, timeoutMs: deps.limits.poolWaitMs })
    } catch (error) {
      done()
      throw waitError(error, node.name)
    }
    const plan = {
      tenant,
      epoch: route.epoch,
      capability: deps.capability,
      write,
      statements: [],
      params: [],
      isolation: options.isolation,
      readOnly: options.readOnly,
      deferrable: options.deferrable,
      limits: effectiveLimits(deps.topology, route.limits),
    }
    try {
      await connection.run([{ sql: beginSql(plan), params: [] }, enterStep(plan)], {
        signal,
        timeoutMs: deps.topology.router.requestTimeoutMs,
      })
      return pinned(deps, route, connection, done, write)
    } catch (error) {
      giveBack(pool, connection, done)
      const code = error instanceof PipelineError ? error.cause.code : undefined
      if (code === STALE_ROUTE_SQLSTATE || code === '40001') {
        await deps.routes.invalidate(tenant)
        continue
      }
      if (error instanceof QueryCancelledError) throw cancelled(error.reason, false)
      deps.logger.error(
        { node: node.name, message: (error as Error).message },
        'a pinned transaction could not start',
      )
      throw new SwitchyardError(
        'shard_unavailable',
        `the primary of ${route.shard} could not start the transaction; retry shortly`,
        {
          retryAfterSeconds: 1,
          shard: route.shard,
        },
      )
    }
  }
}

function pinned(
  deps: TenantRequestDeps,
  route: TenantRoute,
  connection: WireConnection,
  done: () => void,
  write: boolean,
): PinnedTransaction {
  const pool = deps.pools.pool(deps.routing.primary(route.shard).name)
  const limits = deps.limits
  const timeoutMs = deps.topology.router.requestTimeoutMs
  let released = false
  /** A statement other than DML completed, or the connection's state is unknown: close it at the end. */
  let tainted = false

  async function steps(list: PipelineStep[], signal: CancelSignal): Promise<StepResult[]> {
    if (released) throw new SwitchyardError('internal', 'the transaction is over')
    try {
      return await connection.run(list, {
        signal,
        timeoutMs,
        maxRows: limits.maxResultRows,
        maxBytes: limits.maxResultBytes,
      })
    } catch (error) {
      throw lost(error)
    }
  }

  /** The client's failure as it hears it; anything else leaves the connection untrusted and the block gone. */
  function lost(error: unknown): SwitchyardError {
    const known = statementFailure(error)
    if (known) return known
    tainted = true
    return new SwitchyardError(
      'shard_unavailable',
      `the connection to ${route.shard} was lost: the transaction is gone`,
      { shard: route.shard },
    )
  }

  function release() {
    if (released) return
    released = true
    if (tainted || connection.broken) {
      void connection.close()
      return giveBack(pool, connection, done)
    }
    if (connection.transactionStatus !== 'I' || connection.busy) {
      // Still in the block (the session ended midway): rolled back before anyone else gets it.
      void connection
        .idle()
        .then(() => (connection.broken ? undefined : connection.run([ROLLBACK], { timeoutMs })))
        .catch(() => connection.close())
        .finally(() => giveBack(pool, connection, done))
      return
    }
    giveBack(pool, connection, done)
  }

  return {
    route,
    release,
    get status() {
      return connection.transactionStatus === 'E' ? 'E' : 'T'
    },
    async run(statements, params, signal) {
      const results = await steps(
        statements.map((statement, i) => ({
          sql: statement.sql,
          params: params[i] ?? [],
          ...statement.wire,
        })),
        signal,
      )
      if (results.some((result) => !DML.has(result.command))) tainted = true
      return results
    },
    async control(sql, signal) {
      await steps([{ sql, params: [] }], signal)
    },
    async describe(statements, signal) {
      if (released) throw new SwitchyardError('internal', 'the transaction is over')
      try {
        return await connection.describe(statements, { signal, timeoutMs })
      } catch (error) {
        throw lost(error)
      }
    },
    async commit(signal) {
      const failed = connection.transactionStatus === 'E'
      let results: StepResult[]
      try {
        results = await connection.run(
          [
            { sql: 'commit', params: [] },
            { sql: 'select pg_current_wal_insert_lsn()::text', params: [] },
          ],
          { signal, timeoutMs },
        )
      } catch (error) {
        tainted = true
        if (error instanceof PipelineError)
          throw statementError(error.cause as unknown as PostgresErrorFields, 0)
        throw new SwitchyardError(
          'commit_unknown',
          `the connection to ${route.shard} was lost after COMMIT was sent: the transaction may or may not have committed`,
          { shard: route.shard },
        )
      } finally {
        release()
      }
      const lsn = results[1]?.rows[0]?.[0]
      if (write && !failed && lsn) await deps.admission.recordWrite(route.tenant, route.shard, parseLsn(lsn))
      return failed || results[0]?.command === 'ROLLBACK' ? 'ROLLBACK' : 'COMMIT'
    },
    async rollback() {
      try {
        await connection.run([ROLLBACK], { timeoutMs })
      } catch {
        tainted = true
      } finally {
        release()
      }
    },
  }
}

const DML = new Set(['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'MERGE'])

function giveBack(
  pool: { release(connection: WireConnection): void },
  connection: WireConnection,
  done: () => void,
) {
  pool.release(connection)
  done()
}

/**
 * A shard's failure of a client's statement as the client hears it (its SQL error, a cancel, a result too
 * large); undefined for anything else (a lost connection), which the caller reports its own way.
 */
export function statementFailure(error: unknown): SwitchyardError | undefined {
  if (error instanceof PipelineError)
    return statementError(error.cause as unknown as PostgresErrorFields, error.step)
  if (error instanceof QueryCancelledError) return cancelled(error.reason, false)
  if (error instanceof ResultTooLargeError) return resultTooLarge(error)
  return undefined
}

export function waitError(error: unknown, node: string): unknown {
  if (error instanceof PoolTimeoutError)
    return new SwitchyardError(
      'pool_timeout',
      `no connection to ${node} was free within ${error.waitedMs} ms; retry shortly`,
      {
        retryAfterSeconds: 1,
        node,
      },
    )
  if (error instanceof QueryCancelledError) return cancelled(error.reason, false)
  return error
}

const moving = (tenant: string) =>
  new SwitchyardError('tenant_moving', `tenant ${tenant} is being moved; retry shortly`, {
    retryAfterSeconds: 1,
  })
