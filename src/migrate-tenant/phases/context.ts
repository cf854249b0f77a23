import { SwitchyardError } from '../../errors.ts'
import type { Queries, Sql } from '../../shard/connection.ts'
import { readOwnership } from '../../shard/ownership.ts'
import type { Baseline } from '../baseline.ts'
import type { MoverDeps } from '../mover.ts'
import type { Move, MoveProgress, MoveState } from '../record.ts'
import type { HashedTable } from '../rows.ts'

/** What a step learned, persisted with the state it leads to. */
export type Learned = Partial<Pick<Move, 'fenceLsn' | 'cutoverLsn' | 'error'>> & { progress?: MoveProgress }

/**
 * A step's outcome: the state the move goes to, forward (`next`) or back (`back`, with why). Steps never
 * write the move's state themselves: the runner checks the edge against the graph, unfences when the
 * move leaves the fenced phases, and saves.
 */
export type StepResult =
  | (Learned & {
      next: MoveState
      back?: never
      /** A directory write that must commit in the same transaction as the new state (the flip). */
      commit?: ((sql: Queries) => Promise<void>) | undefined
      /** Runs once the new state is saved (the flip tells routers). */
      afterSave?: (() => Promise<void>) | undefined
    })
  | (Learned & {
      back: MoveState
      next?: never
      /** Why, for the log. */
      reason: string
      /** The move waits there to be resumed: the runner stops with this error once it has gone back. */
      waits?: SwitchyardError | undefined
    })

export type Step<Ctx = MoveContext> = (ctx: Ctx) => Promise<StepResult>

/** The change a save makes to the move's record. */
export type Change = Learned & { state?: MoveState }

/** What the runner needs of a move in progress: tests drive the graph with a fake one. */
export interface MoveRun {
  /** The move as last persisted. */
  move: Move
  deps: Pick<MoverDeps, 'logger' | 'metrics' | 'failpoint'>
  /** Persists a change of the record; with `commit`, in one directory transaction with it. */
  save(change: Change, commit?: (sql: Queries) => Promise<void>): Promise<Move>
  /** Lets the tenant's writes go to the source again (the fence's undo); the move stays where it is. */
  unfence(): Promise<void>
}

export interface MoveContext extends MoveRun {
  deps: MoverDeps
  /** Backend pid of the directory session holding the move's run lock: every record write checks it. */
  runner: number
  /**
   * Verify's reference points, in this process's memory only (a move resumed at or past the fence goes
   * back to catch-up to take them). Undefined: not taken yet (catch-up takes them); null: verify hashes
   * every row (not worth it for a small tenant, not taken, or already used).
   */
  baselines?: { source: Baseline; target: Baseline } | null | undefined
  name: string
  source: Sql
  target: Sql
  sourceUrl: string
  targetUrl: string
  tables(): Promise<HashedTable[]>
  /** Persists progress without changing state (for the progress bar in other processes). */
  report(progress: Move['progress']): Promise<void>
  invalidate(): Promise<void>
}

/** How often progress is written to the move's record while polling (the progress bar reads it). */
export const REPORT_EVERY_MS = 200
/** How often the mover looks at copy and replication progress. */
export const POLL_MS = 2
export const SLOW_POLL_MS = 200

/**
 * After a crash between fence and flip the source may have been unfenced (a fence retry, a final
 * catch-up that timed out). `moved` is a flip that stopped before the directory changed: still fenced.
 */
export async function stillFenced(ctx: MoveContext): Promise<boolean> {
  const owned = await readOwnership(ctx.source, ctx.move.tenantId)
  return owned?.state === 'frozen' || owned?.state === 'moved'
}

export const fromEpoch = (move: Move) => {
  if (move.progress.fromEpoch === undefined) throw new Error(`move ${move.id} has no starting epoch`)
  return move.progress.fromEpoch
}

export const subscriptionId = (move: Move) =>
  move.progress.subscriptionOid && move.progress.targetSystemId
    ? { oid: move.progress.subscriptionOid, systemId: move.progress.targetSystemId }
    : null

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

export const applyStopped = (ctx: MoveContext) =>
  new SwitchyardError(
    'apply_failed',
    `subscription ${ctx.name} on ${ctx.move.targetShard} disabled itself after an apply error (see that server's log); abort the move`,
  )

export const timeout = (ctx: MoveContext, what: string) =>
  new SwitchyardError('move_timeout', `the ${what} of move ${ctx.move.id} did not finish in time; resume it`)
