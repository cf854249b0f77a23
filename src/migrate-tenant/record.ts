import { randomUUID } from 'node:crypto'
import { z } from 'zod'
import type { Topology } from '../config/topology.ts'
import type { Directory } from '../directory/connection.ts'
import { FINISHED_MOVE_STATES, type FinishedMoveState, openMove } from '../directory/move-states.ts'
import { stillHeld } from '../directory/session-lock.ts'
import { markMoving } from '../directory/tenant-state.ts'
import { SwitchyardError } from '../errors.ts'
import type { Fragment, Queries } from '../shard/connection.ts'
import type { GRAPH } from './mover.ts'

/**
 * A state the mover runs a step in: the rows of the move's graph (`GRAPH` in src/migrate-tenant/mover.ts,
 * where the phases' order and edges are). Finished states are the directory's list.
 */
// A type-only import of the runner's graph (erased at run time: no module cycle). It holds because each
// step declares its return type; a step without one could make this type circular (TS7022).
export type Running = keyof typeof GRAPH
export type MoveState = Running | FinishedMoveState
/** The phases a move goes through when nothing stops it, `done` last (issue 5 / invariant 5). */
export type Phase = Exclude<Running, 'aborting'> | 'done'

/** The states that end a move (the directory's list: its SQL is built from it). */
export const FINISHED: readonly MoveState[] = FINISHED_MOVE_STATES

/** What the mover keeps about a move besides its state: enough to resume it in another process. */
export interface MoveProgress {
  /** The tenant's epoch when the move started; the cutover makes it fromEpoch + 1. */
  fromEpoch?: number
  subscriptionOid?: number | null
  /** The target server's system identifier: part of the names of the subscription's table-sync slots. */
  targetSystemId?: string
  totalRows?: number
  copiedRows?: number
  lagBytes?: number
  /** When the current fence began (ms since epoch): the cutover stall is measured from it. */
  frozenAt?: number | null
  flippedAt?: number
  stallMs?: number
  fenceAttempts?: number
  /**
   * The tenant's transactions the fence cut short because they kept it out past
   * `mover.cancelBlockersAfterMs` (over all of the move's fence attempts): how many, how many of them
   * by ending their session (idle in transaction), how long the fence had been kept out when it last
   * cut, and the longest-running one's age then.
   */
  cutShort?: { transactions: number; terminated: number; fenceBlockedMs: number; longestMs: number }
  deletedRows?: number
  /** Milliseconds spent per phase, summed over resumes. */
  phases?: Partial<Record<MoveState, number>>
}

export interface Move {
  id: string
  tenantId: string
  sourceShard: string
  targetShard: string
  state: MoveState
  fenceLsn: string | null
  cutoverLsn: string | null
  progress: MoveProgress
  error: string | null
  createdAt: Date
  updatedAt: Date
  finishedAt: Date | null
}

export const moveIdSchema = z.uuid({ message: 'must be a UUID' })

export function parseMoveId(value: unknown): string {
  const parsed = moveIdSchema.safeParse(value)
  if (!parsed.success)
    throw new SwitchyardError('invalid_input', `move id ${JSON.stringify(value)} must be a UUID`)
  return parsed.data
}

const SELECT = `select id, tenant_id as "tenantId", source_shard as "sourceShard", target_shard as "targetShard",
  state, fence_lsn as "fenceLsn", cutover_lsn as "cutoverLsn", progress, error,
  created_at as "createdAt", updated_at as "updatedAt", finished_at as "finishedAt" from moves`

export async function findMove(directory: Directory, id: unknown): Promise<Move> {
  const move = parseMoveId(id)
  const [row] = (await directory.sql.unsafe<Move[]>(`${SELECT} where id = $1`, [move])).map(asMove)
  if (!row) throw new SwitchyardError('move_unknown', `move ${move} does not exist`)
  return row
}

/** The latest moves first; `open` keeps the unfinished ones only. */
export async function listMoves(directory: Directory, options: { open?: boolean; limit?: number } = {}) {
  const where = options.open ? `where ${openMove()}` : ''
  const rows = await directory.sql.unsafe<Move[]>(
    `${SELECT} ${where} order by created_at desc, id limit $1`,
    [options.limit ?? 100],
  )
  return rows.map(asMove)
}

/**
 * Open moves whose tenant is fenced (directory state `frozen`): its writes are held until the move goes
 * on. A live mover passes through this in milliseconds; a move that stays here has lost its mover.
 */
export async function fencedMoves(directory: Directory): Promise<string[]> {
  const rows = await directory.sql<{ id: string }[]>`
    select m.id from moves m join tenants t on t.id = m.tenant_id and t.shard_id = m.source_shard
    where ${directory.sql.unsafe(openMove('m.state'))} and t.state = 'frozen'
    order by m.updated_at`
  return rows.map((row) => row.id)
}

/** Unprepared queries answer timestamps as text: the record has Dates. */
const asMove = (row: Move): Move => ({
  ...row,
  createdAt: new Date(row.createdAt),
  updatedAt: new Date(row.updatedAt),
  finishedAt: row.finishedAt === null ? null : new Date(row.finishedAt),
})

/** Persists the move's next state (and what it learned) before the mover acts on it. */
export async function saveMove(
  sql: Queries,
  move: Move,
  change: Partial<Pick<Move, 'state' | 'fenceLsn' | 'cutoverLsn' | 'error'>> & { progress?: MoveProgress },
  runner?: number,
): Promise<Move> {
  const next: Move = {
    ...move,
    ...change,
    progress: { ...move.progress, ...change.progress },
    updatedAt: new Date(),
  }
  const finished = FINISHED.includes(next.state)
  const saved = await sql`
    update moves set state = ${next.state}, fence_lsn = ${next.fenceLsn}, cutover_lsn = ${next.cutoverLsn},
      progress = ${JSON.stringify(next.progress)}::jsonb, error = ${next.error}, updated_at = now(),
      finished_at = ${finished ? sql`now()` : null}
    where id = ${move.id} ${runner === undefined ? sql`` : sql`and ${stillHeld(sql, runLock(move.id), runner)}`}`
  if (saved.count !== 1 && runner !== undefined) throw runLockLost(move.id)
  if (finished) next.finishedAt = new Date()
  return next
}

/**
 * The move's run lock (a session advisory lock in the directory): one process at a time runs a move.
 * `saveMove` with a `runner` (the holding session's pid) writes only while that session still holds it.
 * The id may be a fragment (`m.id::text`), for `stillHeld` to ask about every move a query reads.
 */
export const runLock = <Id extends string | Fragment>(id: Id) => ({ scope: 'switchyard.move', id })

export const runLockLost = (id: string) =>
  new SwitchyardError(
    'move_busy',
    `move ${id} is no longer run by this process: the directory session holding its run lock ended, and another process may run it now`,
  )

/** A new move, as the directory must see it before anything happens on a shard. */
export interface MoveRequest {
  tenant: string
  target: string
}

/**
 * Records a new move in state `preflight` after the directory-side checks, in one transaction under a
 * lock, so two requests cannot both take the last slot of a target or of a source's move cap: the
 * tenant exists, is active and has no open move; the target is another active shard with room
 * (counting moves already heading there). Marks the tenant `moving`.
 */
export async function recordMove(
  directory: Directory,
  topology: Topology,
  request: MoveRequest,
): Promise<Move> {
  const id = randomUUID()
  await directory.sql.begin(async (sql) => {
    await sql`select pg_advisory_xact_lock(hashtext('switchyard.moves'))`
    const [tenant] = await sql<{ shard_id: string; epoch: number; state: string }[]>`
      select shard_id, epoch, state from tenants where id = ${request.tenant} for update`
    if (!tenant) throw new SwitchyardError('tenant_unknown', `tenant ${request.tenant} does not exist`)
    const [open] = await sql<{ id: string; state: string }[]>`
      select id, state from moves where tenant_id = ${request.tenant} and ${sql.unsafe(openMove())}`
    if (open)
      throw new SwitchyardError(
        'move_in_progress',
        `tenant ${request.tenant} already has an open move ${open.id} (${open.state}): resume or abort it`,
        { move: open.id },
      )
    if (tenant.state !== 'active')
      throw new SwitchyardError(
        'tenant_not_active',
        `tenant ${request.tenant} is ${tenant.state} without an open move: run \`switchyard doctor\``,
      )
    if (tenant.shard_id === request.target)
      throw new SwitchyardError('same_shard', `tenant ${request.tenant} is already on ${request.target}`)
    const [target] = await sql<{ state: string; capacity: number; tenants: number; incoming: number }[]>`
      select s.state, s.capacity,
             (select count(*)::int from tenants t where t.shard_id = s.id) as tenants,
             (select count(*)::int from moves m where m.target_shard = s.id
                and ${sql.unsafe(openMove('m.state'))}) as incoming
      from shards s where s.id = ${request.target}`
    if (!target || !topology.shards.some((s) => s.id === request.target))
      throw new SwitchyardError('shard_unknown', `shard "${request.target}" is not in the topology`)
    if (target.state !== 'active')
      throw new SwitchyardError(
        'shard_draining',
        `shard ${request.target} is ${target.state}: it takes no tenants`,
      )
    if (target.tenants + target.incoming >= target.capacity)
      throw new SwitchyardError(
        'shard_full',
        `shard ${request.target} is full: ${target.tenants}/${target.capacity} tenants, ${target.incoming} moving in`,
      )
    const [leaving] = await sql<{ n: number }[]>`
      select count(*)::int as n from moves where source_shard = ${tenant.shard_id}
        and ${sql.unsafe(openMove())}`
    if ((leaving?.n ?? 0) >= topology.mover.maxPerSource)
      throw new SwitchyardError(
        'too_many_moves',
        `shard ${tenant.shard_id} already has ${leaving?.n} open moves (mover.maxPerSource = ${topology.mover.maxPerSource})`,
      )
    const progress: MoveProgress = { fromEpoch: tenant.epoch, phases: {} }
    await sql`
      insert into moves (id, tenant_id, source_shard, target_shard, state, progress)
      values (${id}, ${request.tenant}, ${tenant.shard_id}, ${request.target}, 'preflight', ${JSON.stringify(progress)}::jsonb)`
    await markMoving(sql, request.tenant)
  })
  return findMove(directory, id)
}
