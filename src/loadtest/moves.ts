import type { Directory } from '../directory/connection.ts'
import { openMove } from '../directory/move-states.ts'
import { isSwitchyardError, SwitchyardError } from '../errors.ts'
import { type MoverDeps, startMove } from '../migrate-tenant/mover.ts'
import type { Move } from '../migrate-tenant/record.ts'
import type { TenantContext } from './workload.ts'

/** A move made during the load, its times in ms of the measured window (0 = end of the warm-up). */
export interface MoveDuringLoad {
  tenant: string
  name: string
  from: string
  to: string | null
  id: string | null
  state: string
  stallMs: number | null
  startedAt: number
  /** When the fence began (the tenant's writes start waiting) and when the directory flipped. */
  fencedAt: number | null
  flippedAt: number | null
  finishedAt: number | null
  error: string | null
}

/**
 * The tenants to move: the busiest ones (lowest rank, so their clients send enough requests to see
 * the cutover), taken from each shard in turn so no source shard runs more moves at once than the
 * mover allows.
 */
export function moveCandidates(contexts: readonly TenantContext[], count: number): TenantContext[] {
  const byShard = new Map<string, TenantContext[]>()
  for (const context of contexts) byShard.set(context.shard, [...(byShard.get(context.shard) ?? []), context])
  const queues = [...byShard.values()]
  const chosen: TenantContext[] = []
  for (let round = 0; chosen.length < count && queues.some((queue) => queue.length > round); round++)
    for (const queue of queues) {
      const next = queue[round]
      if (next && chosen.length < count) chosen.push(next)
    }
  return chosen
}

/** Tenants the mover can take: not in a move already (an operator's, or one left unfinished). */
export async function movable(
  directory: Directory,
  contexts: readonly TenantContext[],
): Promise<TenantContext[]> {
  const open = await directory.sql<{ tenant_id: string }[]>`
    select tenant_id from moves where ${directory.sql.unsafe(openMove())}`
  const busy = new Set(open.map((row) => row.tenant_id))
  return contexts.filter((context) => !busy.has(context.id))
}

/** Shards with room for one more tenant (counting moves already heading there), roomiest first. */
async function roomyShards(directory: Directory, configured: readonly string[]): Promise<string[]> {
  const rows = await directory.sql<{ id: string; room: number }[]>`
    select s.id, s.capacity - (select count(*)::int from tenants t where t.shard_id = s.id)
             - (select count(*)::int from moves m where m.target_shard = s.id
                  and ${directory.sql.unsafe(openMove('m.state'))}) as room
    from shards s where s.state = 'active' order by room desc, s.id`
  return rows.filter((row) => row.room > 0 && configured.includes(row.id)).map((row) => row.id)
}

/** Refuses a run with moves before it starts when no shard could take a moved tenant. */
export async function assertRoomForMoves(directory: Directory, configured: readonly string[]) {
  if ((await roomyShards(directory, configured)).length === 0)
    throw new SwitchyardError(
      'no_capacity',
      'every shard is full, so no tenant can move: seed fewer tenants (--tenants) or run without --moves',
    )
}

/**
 * Starts one move of `tenant` at `delayMs` to the roomiest other shard, through the mover in this
 * process, and follows it to its end. A move that cannot start or fails is reported, not thrown: the
 * load goes on and the report says what happened.
 */
export async function moveDuringLoad(
  deps: MoverDeps,
  tenant: TenantContext,
  delayMs: number,
  now: () => number,
): Promise<MoveDuringLoad> {
  await new Promise((resolve) => setTimeout(resolve, delayMs))
  const outcome: MoveDuringLoad = {
    tenant: tenant.id,
    name: tenant.name,
    from: tenant.shard,
    to: null,
    id: null,
    state: 'not_started',
    stallMs: null,
    startedAt: now(),
    fencedAt: null,
    flippedAt: null,
    finishedAt: null,
    error: null,
  }
  try {
    await follow(deps, outcome, now)
  } catch (error) {
    outcome.error = isSwitchyardError(error) ? `${error.code}: ${error.message}` : String(error)
    if (outcome.state === 'not_started') outcome.state = 'refused'
  }
  outcome.finishedAt = now()
  return outcome
}

/** Picks the target, runs the move and notes its fence, flip and stall on `outcome` as they happen. */
async function follow(deps: MoverDeps, outcome: MoveDuringLoad, now: () => number): Promise<void> {
  const [current] = await deps.directory.sql<{ shard_id: string }[]>`
    select shard_id from tenants where id = ${outcome.tenant}`
  outcome.from = current?.shard_id ?? outcome.from
  const configured = deps.topology.shards.map((shard) => shard.id)
  outcome.to = (await roomyShards(deps.directory, configured)).find((shard) => shard !== outcome.from) ?? null
  if (outcome.to === null) throw new SwitchyardError('no_capacity', 'no other shard has room for the tenant')
  // The mover stamps the fence and the flip with Date.now(); the report counts from the window's start.
  const sinceStart = (epochMs: number) => epochMs - Date.now() + now()
  let finished = false
  const note = (move: Move) => {
    // A progress report can arrive after the move returned (the mover does not await its last one).
    if (finished) return
    outcome.id = move.id
    outcome.state = move.state
    const { frozenAt, flippedAt, stallMs } = move.progress
    if (typeof frozenAt === 'number') outcome.fencedAt = sinceStart(frozenAt)
    if (flippedAt !== undefined && outcome.flippedAt === null) outcome.flippedAt = sinceStart(flippedAt)
    if (stallMs !== undefined) outcome.stallMs = stallMs
  }
  note(await startMove({ ...deps, onProgress: note }, { tenant: outcome.tenant, target: outcome.to }))
  finished = true
}
