import { SwitchyardError } from '../../errors.ts'
import type { CancelSignal } from '../../shard/wire/cancel.ts'
import type { StatementDescription } from '../../shard/wire/connection.ts'
import type { ShardRelations } from '../cache/relations.ts'
import type { IsolationLevel } from '../execute.ts'
import { beginPinned, type PinnedOptions, type PinnedTransaction } from '../pinned.ts'
import type { Classified } from '../policy.ts'
import type { Statement, StatementResult } from '../result.ts'
import { recordStatements } from '../stats/recorder.ts'
import { checkStatements, quotaOf, type TenantRequestDeps } from '../tenant-request.ts'

/** What a transaction-control statement answers: its command tag, and a warning PostgreSQL would give. */
export interface ControlAnswer {
  tag: string
  warning?: { code: string; message: string }
}

/**
 * A session's transaction block (BEGIN … COMMIT/ROLLBACK), as PostgreSQL keeps it: none, or open (its
 * shard connection pinned from the first statement on, pinned.ts), or failed (only ROLLBACK or ROLLBACK TO
 * a savepoint helps). A block that ran nothing costs the shards nothing.
 */
/** `apiRequest`: the session's `switchyard.request` now, which each use of the block is counted under. */
export function createBlock(deps: TenantRequestDeps, tenant: string, apiRequest: () => string | undefined) {
  let active = false
  let options: PinnedOptions = {}
  let pinned: PinnedTransaction | undefined
  /** A statement of the block failed in the router (refused, cancelled before the shard): as 'E'. */
  let failed = false
  /** A statement of the block may have written: its COMMIT bumps the tenant's read cache. */
  let wrote = false

  /** Generation of the block: a block that ended while its connection was being pinned gives it back. */
  let generation = 0

  async function open(signal: CancelSignal): Promise<PinnedTransaction> {
    if (pinned) return pinned
    const mine = generation
    const opened = await beginPinned(deps, tenant, options, signal, apiRequest())
    if (mine !== generation || !active) {
      opened.release()
      throw new SwitchyardError('client_gone', 'the transaction block ended while it was starting')
    }
    pinned = opened
    return opened
  }

  /**
   * The block's connection, and this use of it counted against the tenant's rate limit as a request is
   * (a statement, a Describe, a savepoint: each a round trip to the shard); the first, when the block began.
   */
  async function openCounted(signal: CancelSignal): Promise<PinnedTransaction> {
    const begun = pinned
    const transaction = await open(signal)
    if (begun) {
      const { route } = transaction
      await deps.admission.admit(tenant, route.shard, quotaOf(deps.topology, route, apiRequest()))
    }
    return transaction
  }

  function end() {
    wrote = false
    generation++
    pinned?.release()
    pinned = undefined
    active = false
    failed = false
    options = {}
  }

  return {
    get active() {
      return active
    },
    /** Changes whenever a block ends: a timer set for one block does not end the next. */
    get generation() {
      return generation
    },
    /** ReadyForQuery's transaction status. */
    get status(): 'I' | 'T' | 'E' {
      if (!active) return 'I'
      return failed || pinned?.status === 'E' ? 'E' : 'T'
    },

    /** The client's statements in the block, after the policy; a failure fails the block. */
    async run(
      statements: Statement[],
      params: (string | Buffer | null)[][],
      signal: CancelSignal,
    ): Promise<StatementResult[]> {
      if (failed || pinned?.status === 'E') throw aborted()
      try {
        const started = performance.now()
        const classified = await checkStatements(deps, tenant, statements, params, signal)
        const transaction = await openCounted(signal)
        // A read of a tenant schema's own function (named like a catalog one) may write: in a block it
        // runs read-write on the primary, where nothing refuses it.
        const relations = deps.readCache?.relations(transaction.route.shard)
        if (classified.some((statement) => mayWrite(statement, relations))) wrote = true
        return await recordStatements(
          deps.statementStats,
          tenant,
          classified,
          started,
          () => transaction.run(statements, params, signal),
          (results) => results,
        )
      } catch (error) {
        failed = true
        throw error
      }
    },

    /**
     * A Describe in the block, on the block's connection (pinned now if it was not): outside it the
     * Describe would wait for another connection of the tenant's share, which the tenant's own open
     * blocks may be holding. A failure fails the block, as a failed Parse does in PostgreSQL.
     */
    async describe(
      statements: { sql: string; paramTypes: number[] }[],
      signal: CancelSignal,
    ): Promise<StatementDescription[]> {
      if (failed || pinned?.status === 'E') throw aborted()
      try {
        const checked = statements.map((statement) => ({ sql: statement.sql, params: [] }))
        await checkStatements(deps, tenant, checked, [], signal)
        return await (await openCounted(signal)).describe(statements, signal)
      } catch (error) {
        failed = true
        throw error
      }
    },

    /** An error outside `run` (a refused SET, say) fails an open block too, as in PostgreSQL. */
    fail() {
      if (active) failed = true
    },

    async control(node: Record<string, unknown>, signal: CancelSignal): Promise<ControlAnswer> {
      const kind = String(node.kind ?? '')
      switch (kind) {
        case 'TRANS_STMT_BEGIN':
        case 'TRANS_STMT_START':
          if (active)
            return {
              tag: 'BEGIN',
              warning: { code: '25001', message: 'there is already a transaction in progress' },
            }
          options = blockOptions(node.options)
          active = true
          return { tag: 'BEGIN' }
        case 'TRANS_STMT_COMMIT': {
          if (node.chain) throw unsupported('COMMIT AND CHAIN')
          if (!active) return { tag: 'COMMIT', warning: noBlock() }
          if (failed || pinned?.status === 'E' || !pinned) {
            const tag = failed || pinned?.status === 'E' ? 'ROLLBACK' : 'COMMIT'
            if (pinned) await pinned.rollback()
            end()
            return { tag }
          }
          const committing = pinned
          pinned = undefined
          const forget = wrote
          try {
            return { tag: await committing.commit(signal) }
          } finally {
            end()
            // Before the client hears COMMIT (and also when its answer was lost): no read after it may
            // be answered from before it. The whole namespace: the block's tables are not kept.
            // Its commit LSN is not known here: answers come from the primary for a while.
            if (forget)
              await deps.readCache?.bump(tenant, {
                shard: committing.route.shard,
                statements: null,
                lsn: 'unknown',
              })
          }
        }
        case 'TRANS_STMT_ROLLBACK': {
          if (node.chain) throw unsupported('ROLLBACK AND CHAIN')
          if (!active) return { tag: 'ROLLBACK', warning: noBlock() }
          const rolling = pinned
          pinned = undefined
          try {
            await rolling?.rollback()
          } finally {
            end()
          }
          return { tag: 'ROLLBACK' }
        }
        case 'TRANS_STMT_SAVEPOINT':
        case 'TRANS_STMT_RELEASE':
        case 'TRANS_STMT_ROLLBACK_TO': {
          const name = String(node.savepoint_name ?? '')
          const verb =
            kind === 'TRANS_STMT_SAVEPOINT'
              ? 'SAVEPOINT'
              : kind === 'TRANS_STMT_RELEASE'
                ? 'RELEASE'
                : 'ROLLBACK TO'
          if (!active) throw sqlState('25P01', `${verb} can only be used in transaction blocks`)
          if (kind === 'TRANS_STMT_ROLLBACK_TO') {
            if (!pinned) throw sqlState('3B001', `savepoint "${name}" does not exist`)
          } else if (failed || pinned?.status === 'E') throw aborted()
          const transaction = await openCounted(signal)
          const sql =
            kind === 'TRANS_STMT_SAVEPOINT'
              ? `savepoint ${quoteIdentifier(name)}`
              : kind === 'TRANS_STMT_RELEASE'
                ? `release savepoint ${quoteIdentifier(name)}`
                : `rollback to savepoint ${quoteIdentifier(name)}`
          try {
            await transaction.control(sql, signal)
          } catch (error) {
            failed = true
            throw error
          }
          if (kind === 'TRANS_STMT_ROLLBACK_TO') failed = false
          return { tag: kind === 'TRANS_STMT_ROLLBACK_TO' ? 'ROLLBACK' : verb }
        }
        default:
          throw unsupported('two-phase commit (PREPARE TRANSACTION, COMMIT PREPARED)')
      }
    },

    /** The session ends: whatever is open is rolled back and its connection given back. */
    end,
  }
}

export type Block = ReturnType<typeof createBlock>

/** BEGIN's options: the isolation level, READ ONLY, DEFERRABLE (anything else is not PostgreSQL's). */
function blockOptions(list: unknown): PinnedOptions {
  const options: PinnedOptions = {}
  for (const item of Array.isArray(list) ? list : []) {
    const element = (
      item as { DefElem?: { defname?: string; arg?: { A_Const?: Record<string, Record<string, unknown>> } } }
    ).DefElem
    const constant = element?.arg?.A_Const ?? {}
    const value = Object.values(constant)[0] ?? {}
    switch (element?.defname) {
      case 'transaction_isolation':
        options.isolation = String(value.sval ?? 'read committed') as IsolationLevel
        break
      case 'transaction_read_only':
        options.readOnly = Number(value.ival ?? 0) === 1
        break
      case 'transaction_deferrable':
        options.deferrable = Number(value.ival ?? 0) === 1
        break
    }
  }
  if (
    options.isolation &&
    !['read committed', 'repeatable read', 'serializable', 'read uncommitted'].includes(options.isolation)
  )
    throw unsupported(`isolation level ${options.isolation}`)
  // PostgreSQL runs READ UNCOMMITTED as READ COMMITTED.
  if (options.isolation === ('read uncommitted' as IsolationLevel)) options.isolation = 'read committed'
  return options
}

export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`
}

function sqlState(code: string, message: string): SwitchyardError {
  const error = new SwitchyardError('sql_error', message, { sqlstate: code })
  error.cause = { code, message, severity: 'ERROR' }
  return error
}

const aborted = () =>
  sqlState('25P02', 'current transaction is aborted, commands ignored until end of transaction block')
const noBlock = () => ({ code: '25P01', message: 'there is no transaction in progress' })
const unsupported = (what: string) =>
  new SwitchyardError('feature_not_supported', `${what} is not supported through the router`)

/** A write, or a read that may call a function of the tenant schemas (any, while they are not known). */
function mayWrite(statement: Classified, relations: ShardRelations | undefined): boolean {
  if (statement.kind === 'write') return true
  return statement.calls.some((name) => !relations || relations.functions.has(name))
}
