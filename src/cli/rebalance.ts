import { type Command, Option } from 'commander'
import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { withRedis } from '../directory/redis.ts'
import { SwitchyardError } from '../errors.ts'
import { progressPrinter } from '../migrate-tenant/progress.ts'
import { FINISHED } from '../migrate-tenant/record.ts'
import { applyPlan, moveCount } from '../placement/executor.ts'
import {
  cancelPlan,
  createRebalancePlan,
  findPlan,
  rebalanceStrategy,
  type StoredPlan,
} from '../placement/plans.ts'
import { cliMoverDeps } from './moves.ts'
import { formatBytes, json, printTable, say, shows } from './output.ts'

export function register(program: Command): void {
  const rebalance = program.command('rebalance').description('plan moves that even out the shards')
  rebalance
    .command('plan')
    .description(
      'compute a plan from the directory and the shards (tenant bytes) and store it; moves nothing',
    )
    .addOption(
      new Option(
        '--strategy <strategy>',
        'count: tenants within one per shard; size: bytes within 10% of the mean',
      )
        .choices(rebalanceStrategy.options)
        .default('count'),
    )
    .addOption(json)
    .action(
      shows(
        (topology, options: { strategy: string }) =>
          withDirectory(topology, (directory) => createRebalancePlan(directory, topology, options.strategy)),
        (plan) => printPlan(plan),
      ),
    )
  rebalance
    .command('show [plan]')
    .description('a stored plan (default: the latest): its moves, the fill before and after, its state')
    .addOption(json)
    .action(
      shows(
        (topology, id: string | undefined) => withDirectory(topology, (directory) => findPlan(directory, id)),
        (plan) => printPlan(plan),
      ),
    )
  rebalance
    .command('apply [plan]')
    .description('run a stored plan (default: the latest) move by move through the mover; resumable')
    .option('--concurrency <n>', 'moves at once', '1')
    .option('--max-per-source <n>', 'moves out of one shard at once', '1')
    .addOption(json)
    .action(shows(applyWithProgress, (plan) => printPlan(plan)))
  rebalance
    .command('cancel [plan]')
    .description('cancel a plan (default: the latest); an applying one stops after its current move')
    .addOption(json)
    .action(
      shows(
        (topology, id: string | undefined) =>
          withDirectory(topology, async (directory) =>
            cancelPlan(directory, (await findPlan(directory, id)).id),
          ),
        (plan) => say(`plan ${plan.id} is ${plan.state}`),
      ),
    )
}

/**
 * `rebalance apply`: the plan runs in this process, each move's progress bar and end on stderr; exit
 * code 1 unless it ends done.
 */
async function applyWithProgress(
  topology: Topology,
  id: string | undefined,
  options: { concurrency: string; maxPerSource: string },
): Promise<StoredPlan> {
  const concurrency = parseCount('--concurrency', options.concurrency)
  const maxPerSource = parseCount('--max-per-source', options.maxPerSource)
  const progress = progressPrinter()
  const plan = await withDirectory(topology, (directory) =>
    withRedis(topology.redis, async (redis) => {
      const { finished } = await applyPlan(cliMoverDeps(topology, directory, redis), id, {
        concurrency,
        maxPerSource,
        onMove: (planMove, move, tally) => {
          if (move && !FINISHED.includes(move.state)) return progress.update(move)
          progress.done()
          say(
            `[${tally.done}/${tally.total}] ${planMove.tenant} ${planMove.from} → ${planMove.to}: ${planMove.state}${planMove.error ? ` (${planMove.error})` : ''}`,
          )
        },
      })
      return finished
    }),
  )
  if (plan.state !== 'done') process.exitCode = 1
  return plan
}

function parseCount(flag: string, value: string): number {
  const parsed = moveCount.safeParse(Number(value))
  if (!parsed.success)
    throw new SwitchyardError(
      'invalid_input',
      `${flag}: ${JSON.stringify(value)} is not a whole number from 1 to 16`,
    )
  return parsed.data
}

/** Moves shown in a terminal; `--json` has them all. */
const MOVES_SHOWN = 100

/** A plan as `rebalance plan|show|apply` and `shards drain` print it: its moves, then the fill. */
export function printPlan(plan: StoredPlan) {
  const moved = plan.moves.reduce((sum, m) => sum + m.bytes, 0)
  const kind = plan.shard ? `drain ${plan.shard}` : plan.strategy
  const count = `${plan.moves.length} move${plan.moves.length === 1 ? '' : 's'}`
  say(`plan ${plan.id} (${kind}, ${plan.state}): ${count}, ${formatBytes(moved)} to move`)
  if (plan.moves.length) {
    const shown = plan.moves.slice(0, MOVES_SHOWN).map((m) => ({ ...m, bytes: formatBytes(m.bytes) }))
    printTable(shown, ['tenant', 'from', 'to', 'bytes', 'state'])
    if (plan.moves.length > MOVES_SHOWN)
      say(`… and ${plan.moves.length - MOVES_SHOWN} more (--json lists them all)`)
  }
  const after = new Map(plan.after.map((s) => [s.id, s]))
  const fill = plan.before.map((s) => ({
    shard: s.id,
    state: after.get(s.id)?.state ?? s.state,
    before: `${s.tenants}/${s.capacity}`,
    after: `${after.get(s.id)?.tenants}/${s.capacity}`,
    bytesBefore: formatBytes(s.bytes),
    bytesAfter: formatBytes(after.get(s.id)?.bytes ?? 0),
  }))
  printTable(fill, ['shard', 'state', 'before', 'after', 'bytesBefore', 'bytesAfter'])
  if (!plan.balanced) say(`not balanced: ${plan.reason}`)
}
