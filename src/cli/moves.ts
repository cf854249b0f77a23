import type { Command } from 'commander'
import type { Topology } from '../config/topology.ts'
import { type Directory, withDirectory } from '../directory/connection.ts'
import { type Redis, withRedis } from '../directory/redis.ts'
import { SwitchyardError } from '../errors.ts'
import { failpointFromEnv } from '../migrate-tenant/failpoint.ts'
import { abortMove, type MoverDeps, runMove, startMove } from '../migrate-tenant/mover.ts'
import { cutShortLine, progressPrinter } from '../migrate-tenant/progress.ts'
import { findMove, listMoves, type Move, parseMoveId } from '../migrate-tenant/record.ts'
import { action, cliLogger, json, print, printTable, say, shows } from './output.ts'

/** The noun is singular: `switchyard move <tenant> --to <shard>` starts one. */
export function register(program: Command): void {
  const move = program
    .command('move')
    .description('move a tenant to another shard online (logical replication, fenced cutover)')
    .argument('[tenant]', 'the tenant to move')
    .option('--to <shard>', 'the target shard')
    .addOption(json)
    .enablePositionalOptions()
    .action(
      action(async (topology, tenant: string | undefined, options: { to?: string; json?: boolean }) => {
        if (!tenant || !options.to)
          throw new SwitchyardError(
            'invalid_input',
            'usage: switchyard move <tenant> --to <shard> (or move status|resume|abort)',
          )
        await runMover(topology, options, (deps) => startMove(deps, { tenant, target: options.to }))
      }),
    )
  move
    .command('status [move]')
    .description('one move (phase, rows, lag, stall, error), or the latest moves')
    .addOption(json)
    .action(
      shows(movesToShow, (found) =>
        printTable((Array.isArray(found) ? found : [found]).map(moveRow), MOVE_COLUMNS),
      ),
    )
  move
    .command('resume <move>')
    .description('run a stopped or crashed move on from its recorded phase')
    .addOption(json)
    .action(
      action(async (topology, id: string, options: { json?: boolean }) => {
        const resumed = await runMover(topology, options, (deps) => runMove(deps, parseMoveId(id)))
        // A move that was being aborted resumes into its abort: finished, but not moved.
        if (resumed.state !== 'done') {
          say(`move ${resumed.id} ended ${resumed.state}, not done: it was being aborted`)
          process.exitCode = 1
        }
      }),
    )
  move
    .command('abort <move>')
    .description(
      'undo a move that has not cut over: source unfenced, target and replication artifacts cleaned',
    )
    .option('--move-back', 'past the cutover: finish the move, then move the tenant back to its source')
    .addOption(json)
    .action(
      action(async (topology, id: string, options: { json?: boolean; moveBack?: boolean }) => {
        const moveBack = options.moveBack === true
        await runMover(topology, options, (deps) => abortMove(deps, parseMoveId(id), { moveBack }))
      }),
    )
}

/** `move status`: one move by id, or the latest ones. */
const movesToShow = (topology: Topology, id: string | undefined) =>
  withDirectory(topology, async (directory) =>
    id === undefined ? listMoves(directory, { limit: 20 }) : findMove(directory, parseMoveId(id)),
  )

/** The mover as a command line runs it: logs on stderr, a failpoint from the environment (tests). */
export function cliMoverDeps(topology: Topology, directory: Directory, redis: Redis | undefined): MoverDeps {
  return { topology, directory, redis, logger: cliLogger(), failpoint: failpointFromEnv() }
}

/** Runs one mover action with a progress bar on stderr; prints the move (JSON or a summary) at the end. */
async function runMover(
  topology: Topology,
  options: { json?: boolean },
  run: (deps: MoverDeps) => Promise<Move>,
): Promise<Move> {
  const progress = progressPrinter()
  const done = await withDirectory(topology, (directory) =>
    withRedis(topology.redis, (redis) =>
      run({ ...cliMoverDeps(topology, directory, redis), onProgress: (m) => progress.update(m) }),
    ),
  ).finally(() => progress.done())
  if (options.json) print(done)
  else {
    const stall = done.progress.stallMs === undefined ? '' : `, cutover stall ${done.progress.stallMs} ms`
    const cut = cutShortLine(done)
    say(
      `move ${done.id}: tenant ${done.tenantId} ${done.sourceShard} → ${done.targetShard} ${done.state}${stall}${cut ? `; ${cut}` : ''}`,
    )
  }
  return done
}

const MOVE_COLUMNS = ['id', 'tenant', 'from', 'to', 'state', 'rows', 'stallMs', 'updated', 'fence', 'error']
const moveRow = (m: Move) => ({
  id: m.id,
  tenant: m.tenantId,
  from: m.sourceShard,
  to: m.targetShard,
  state: m.state,
  rows: m.progress.totalRows === undefined ? '' : `${m.progress.copiedRows ?? 0}/${m.progress.totalRows}`,
  stallMs: m.progress.stallMs ?? '',
  updated: m.updatedAt.toISOString(),
  // Transactions of the tenant the fence had to cut short, and for how long they had kept it out.
  fence: cutShortLine(m) ?? '',
  error: m.error ?? '',
})
