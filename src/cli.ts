import { Command, Option } from 'commander'
import pino from 'pino'
import { z } from 'zod'
import { startDemo } from './cluster/demo.ts'
import {
  clusterDown,
  clusterReset,
  clusterStatus,
  clusterUp,
  defaultHome,
  maskPassword,
  type NodeStatus,
} from './cluster/launcher.ts'
import { loadTopology } from './config/load.ts'
import type { Topology } from './config/topology.ts'
import { readRouterCapability } from './directory/capability.ts'
import { withDirectory } from './directory/connection.ts'
import { createKey, type KeyRow, type KeyScope, listKeys, revokeKey } from './directory/keys.ts'
import { migrateAll } from './directory/migrate.ts'
import { withRedis } from './directory/redis.ts'
import { publishInvalidation } from './directory/routes.ts'
import {
  addTenant,
  limitOverride,
  limitsPatchSchema,
  listTenants,
  setTenantLimits,
} from './directory/tenants.ts'
import { isSwitchyardError, SwitchyardError } from './errors.ts'
import { loadtestLocal } from './loadtest/local.ts'
import { localFlags, parseFlags, runFlags, seedFlags } from './loadtest/options.ts'
import { stepPrinter } from './loadtest/progress.ts'
import { formatReport, type LoadtestReport } from './loadtest/report.ts'
import { runLoadtest } from './loadtest/run.ts'
import { screenshotReport } from './loadtest/screenshot.ts'
import { seedLoadtest } from './loadtest/seed.ts'
import { failpointFromEnv } from './migrate-tenant/failpoint.ts'
import { moveLeftovers } from './migrate-tenant/leftovers.ts'
import { abortMove, type MoverDeps, runMove, startMove } from './migrate-tenant/mover.ts'
import { cutShortLine, progressPrinter } from './migrate-tenant/progress.ts'
import { findMove, listMoves, type Move, parseMoveId } from './migrate-tenant/record.ts'
import { applyPlan, moveCount } from './placement/executor.ts'
import { placeTenant } from './placement/placement.ts'
import {
  cancelPlan,
  createRebalancePlan,
  drainShard,
  findPlan,
  rebalanceStrategy,
  type StoredPlan,
  undrainShard,
} from './placement/plans.ts'
import { describeTenant, type ReplicaLags, shardStats } from './placement/stats.ts'
import { startRouter } from './router/server.ts'
import { diagnose } from './shard/doctor.ts'

const program = new Command('switchyard')
  .description('Shard router and tenant placement for multi-tenant PostgreSQL')
  .showHelpAfterError()
  // Lets `move status <id> --json` give --json to the subcommand although `move` has one too.
  .enablePositionalOptions()
  .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2))

const json = new Option('--json', 'print JSON')

/** Every command runs through here: one place turns errors into `error [code]: message` and exit 1. */
function action<A extends unknown[]>(run: (topology: Topology, ...args: A) => Promise<void>) {
  return async (...args: A) => {
    try {
      await run(await loadTopology(), ...args)
    } catch (error) {
      const known = isSwitchyardError(error)
        ? error
        : new SwitchyardError('internal', (error as Error).stack ?? String(error))
      process.stderr.write(`error [${known.code}]: ${known.message}\n`)
      process.exitCode = 1
    }
  }
}

/** Mover logs go to stderr with the progress bar, so `--json` output on stdout stays clean. */
const cliLogger = () =>
  pino({ level: process.env.LOG_LEVEL ?? 'warn', base: { service: 'switchyard' } }, pino.destination(2))

const say = (line: string) => process.stderr.write(`${line}\n`)
const print = (value: unknown) => process.stdout.write(`${JSON.stringify(value, null, 2)}\n`)

export function table(rows: Record<string, unknown>[], columns: string[]): string {
  const cells = rows.map((row) => columns.map((column) => String(row[column] ?? '')))
  const widths = columns.map((column, i) =>
    Math.max(column.length, ...cells.map((cell) => cell[i]?.length ?? 0)),
  )
  const line = (values: string[]) =>
    values
      .map((value, i) => value.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd()
  return [line(columns), ...cells.map(line)].join('\n')
}

const cluster = program
  .command('cluster')
  .description('the local topology: directory, shards (primary + replica), Redis')
const launch = () => ({ home: defaultHome(), report: say })
cluster
  .command('up')
  .description('start every node that is not running (idempotent)')
  .action(
    action(async (topology) => {
      await clusterUp(topology, launch())
      printStatus((await clusterStatus(topology)).nodes)
    }),
  )
cluster
  .command('down')
  .description('stop every node this cluster started, and nothing else')
  .action(action((topology) => clusterDown(topology, launch())))
cluster
  .command('reset')
  .description('stop, delete all cluster data, start fresh')
  .action(action((topology) => clusterReset(topology, launch())))
cluster
  .command('status')
  .description('what runs where, and replica lag')
  .addOption(json)
  .action(
    action(async (topology, options: { json?: boolean }) => {
      const status = await clusterStatus(topology)
      if (options.json) print(status)
      else printStatus(status.nodes)
    }),
  )

function printStatus(nodes: NodeStatus[]) {
  const rows = nodes.map((node) => ({
    ...node,
    up: node.up ? 'up' : 'DOWN',
    url: maskPassword(node.url),
    lagBytes: node.lagBytes ?? '',
  }))
  process.stdout.write(`${table(rows, ['name', 'role', 'shard', 'up', 'lagBytes', 'url'])}\n`)
}

program
  .command('migrate')
  .description('apply directory and shard migrations; record each shard’s schema version (idempotent)')
  .addOption(json)
  .action(
    action(async (topology, options: { json?: boolean }) => {
      const result = await migrateAll(topology)
      if (options.json) print(result)
      else {
        say(`directory: ${result.directory} migrations applied`)
        for (const shard of result.shards)
          say(`${shard.shard}: ${shard.applied} migrations applied, version ${shard.version}`)
      }
    }),
  )

program
  .command('doctor')
  .description(
    'check the topology is fit: wal_level, slots, replicas, RLS, primary keys, router role, versions, move leftovers',
  )
  .addOption(json)
  .action(
    action(async (topology, options: { json?: boolean }) => {
      // The directory's capability, to compare with each shard's hash; the directory's own reachability is a finding.
      const capability = await withDirectory(topology, readRouterCapability).catch(() => undefined)
      const findings = [...(await diagnose(topology, capability)), ...(await moveLeftovers(topology))]
      const problems = findings.filter((finding) => !finding.ok)
      if (options.json) print({ ok: problems.length === 0, findings })
      else {
        const rows = findings.map((finding) => ({ ...finding, ok: finding.ok ? 'ok' : 'PROBLEM' }))
        process.stdout.write(`${table(rows, ['ok', 'check', 'target', 'detail'])}\n`)
        say(problems.length ? `${problems.length} problem(s) found` : 'no problems found')
      }
      if (problems.length) process.exitCode = 1
    }),
  )

const tenants = program.command('tenants').description('tenants in the directory')
tenants
  .command('add <tenant>')
  .description('register a tenant (UUID) on a shard, in the directory and on the shard, or not at all')
  .option('--shard <id>', 'shard to put the tenant on (default: placement picks an active shard with room)')
  .option('--name <name>', 'display name')
  .addOption(json)
  .action(
    action(async (topology, id: string, options: { shard?: string; name?: string; json?: boolean }) => {
      const row = await withDirectory(topology, (directory) =>
        addTenant(
          directory,
          topology,
          {
            id,
            ...(options.shard !== undefined ? { shard: options.shard } : {}),
            ...(options.name ? { name: options.name } : {}),
          },
          placeTenant,
        ),
      )
      if (options.json) print(row)
      else say(`tenant ${row.id} (${row.name}) ${options.shard ? 'added' : 'placed'} on ${row.shardId}`)
    }),
  )
tenants
  .command('list')
  .addOption(json)
  .action(
    action(async (topology, options: { json?: boolean }) => {
      const rows = await withDirectory(topology, listTenants)
      if (options.json) print(rows)
      else
        process.stdout.write(
          `${table(rows as unknown as Record<string, unknown>[], ['id', 'name', 'shardId', 'epoch', 'state'])}\n`,
        )
    }),
  )
tenants
  .command('show <tenant>')
  .description(
    "a tenant's directory row, the ownership its shard records, its rows and bytes per table (exact), its limits and its request rate this hour",
  )
  .addOption(json)
  .action(
    action(async (topology, id: string, options: { json?: boolean }) => {
      const shown = await withDirectory(topology, (directory) =>
        withRedis(topology.redis, (redis) => describeTenant(directory, topology, redis, id)),
      )
      if (options.json) {
        print(shown)
        return
      }
      const { ownership, usage } = shown
      process.stdout.write(
        `${table([{ ...shown, ownership: ownership ? `${ownership.state}@${ownership.epoch}` : 'none' }], ['id', 'name', 'shardId', 'epoch', 'state', 'ownership'])}\n\n`,
      )
      if (usage.tables) {
        const rows = [...usage.tables, { table: 'total', rows: usage.rows, bytes: usage.bytes }]
        process.stdout.write(`${table(rows, ['table', 'rows', 'bytes'])}\n\n`)
      } else say(`rows and bytes unavailable: ${usage.error}`)
      const limits = Object.entries(shown.effectiveLimits).map(([name, value]) => ({
        limit: name,
        value,
        from: name in shown.limits ? 'tenant' : 'default',
      }))
      process.stdout.write(`${table(limits, ['limit', 'value', 'from'])}\n\n`)
      const requests = usage.requests
      say(
        requests.available
          ? `requests this hour (since ${requests.windowStart}): ${requests.count} (${requests.perMinute}/min)`
          : `request rate unavailable: ${requests.reason}`,
      )
    }),
  )

/** The limits `set-limits` takes, in the order of `--help`: the admin API's patch fields. */
const LIMIT_NAMES = Object.keys(limitsPatchSchema.shape)
/** `max_services` is `--max-services`, which commander hands over as `maxServices`. */
const limitFlag = (name: string) => `--${name.replaceAll('_', '-')}`
const limitOption = (name: string) => name.replace(/_(.)/g, (_, letter: string) => letter.toUpperCase())
/** A command line has no route cache of its own: it tells the routers (over Redis) to forget a tenant. */
const tellRouters = (topology: Topology) => ({
  invalidate: (tenant: string) =>
    withRedis(topology.redis, async (redis) => {
      if (redis) await publishInvalidation(redis, tenant)
    }),
})
const setLimits = tenants
  .command('set-limits <tenant>')
  .description(
    "override a tenant's limits in the directory (N, or `default` to drop the override); routers pick them up at once (over Redis) or within their route cache TTL",
  )
for (const name of LIMIT_NAMES)
  setLimits.option(`${limitFlag(name)} <n>`, `${name}: N, or "default" to drop the override`)
setLimits.addOption(json).action(
  action(async (topology, id: string, options: Record<string, string | boolean | undefined>) => {
    const patch: Record<string, number | null> = {}
    for (const name of LIMIT_NAMES) {
      const given = options[limitOption(name)]
      if (given === undefined) continue
      // `default` drops the override: null in the patch.
      const parsed = limitOverride.safeParse(given === 'default' ? null : Number(given))
      if (!parsed.success)
        throw new SwitchyardError(
          'invalid_input',
          `${limitFlag(name)}: ${JSON.stringify(given)} must be a non-negative integer or "default"`,
        )
      patch[name] = parsed.data ?? null
    }
    const row = await withDirectory(topology, (directory) =>
      setTenantLimits(directory, topology, tellRouters(topology), id, patch),
    )
    if (options.json) print(row)
    else {
      const rows = Object.entries(row.effectiveLimits).map(([name, value]) => ({
        limit: name,
        value,
        from: name in row.limits ? 'tenant' : 'default',
      }))
      process.stdout.write(`${table(rows, ['limit', 'value', 'from'])}\n`)
    }
  }),
)

/** `cluster status`'s replica lag: every replica's replay position against its primary's. */
const statusLags =
  (topology: Topology): ReplicaLags =>
  async () =>
    (await clusterStatus(topology)).nodes.flatMap((node) =>
      node.role === 'replica' && node.shard
        ? [{ name: node.name, shard: node.shard, lagBytes: node.lagBytes ?? null }]
        : [],
    )

const shards = program.command('shards').description('shards: fill, size, replica lag; drain and undrain')
shards
  .command('list')
  .description(
    'per shard: state, tenants/capacity, rows (estimated) and bytes of the tenant tables, replica lag',
  )
  .addOption(json)
  .action(
    action(async (topology, options: { json?: boolean }) => {
      const stats = await withDirectory(topology, (directory) =>
        shardStats(directory, topology, statusLags(topology)),
      )
      if (options.json) {
        print(stats)
        return
      }
      const rows = stats.map((s) => ({
        ...s,
        tenants: `${s.tenants}/${s.capacity}`,
        rows: s.rows ?? '?',
        bytes: s.bytes === null ? '?' : formatBytes(s.bytes),
        replicaLag: s.replicas.map((r) => `${r.name} ${r.lagBytes ?? 'down'}`).join(', '),
        error: s.error ?? '',
      }))
      process.stdout.write(
        `${table(rows, ['id', 'state', 'tenants', 'rows', 'bytes', 'replicaLag', 'error'])}\n`,
      )
    }),
  )
shards
  .command('drain <shard>')
  .description(
    'mark a shard draining and store a plan that moves all its tenants away (or, without room, change nothing)',
  )
  .addOption(json)
  .action(
    action(async (topology, id: string, options: { json?: boolean }) => {
      const plan = await withDirectory(topology, (directory) => drainShard(directory, topology, id))
      if (options.json) print(plan)
      else {
        say(`${id} is draining: no tenant is placed on it any more`)
        printPlan(plan)
      }
    }),
  )
shards
  .command('undrain <shard>')
  .description('make a draining shard active again; its drain plans that have not started are cancelled')
  .addOption(json)
  .action(
    action(async (topology, id: string, options: { json?: boolean }) => {
      const result = await withDirectory(topology, (directory) => undrainShard(directory, id))
      if (options.json) print(result)
      else {
        say(`${result.shard.id} is active (${result.shard.tenants}/${result.shard.capacity} tenants)`)
        for (const plan of result.cancelledPlans) say(`drain plan ${plan} cancelled`)
      }
    }),
  )

const rebalance = program.command('rebalance').description('plan moves that even out the shards')
rebalance
  .command('plan')
  .description('compute a plan from the directory and the shards (tenant bytes) and store it; moves nothing')
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
    action(async (topology, options: { strategy: string; json?: boolean }) => {
      const plan = await withDirectory(topology, (directory) =>
        createRebalancePlan(directory, topology, options.strategy),
      )
      if (options.json) print(plan)
      else printPlan(plan)
    }),
  )
rebalance
  .command('show [plan]')
  .description('a stored plan (default: the latest): its moves, the fill before and after, its state')
  .addOption(json)
  .action(
    action(async (topology, id: string | undefined, options: { json?: boolean }) => {
      const plan = await withDirectory(topology, (directory) => findPlan(directory, id))
      if (options.json) print(plan)
      else printPlan(plan)
    }),
  )

rebalance
  .command('apply [plan]')
  .description('run a stored plan (default: the latest) move by move through the mover; resumable')
  .option('--concurrency <n>', 'moves at once', '1')
  .option('--max-per-source <n>', 'moves out of one shard at once', '1')
  .addOption(json)
  .action(
    action(
      async (
        topology,
        id: string | undefined,
        options: { concurrency: string; maxPerSource: string; json?: boolean },
      ) => {
        const concurrency = parseCount('--concurrency', options.concurrency)
        const maxPerSource = parseCount('--max-per-source', options.maxPerSource)
        const progress = progressPrinter()
        const plan = await withDirectory(topology, (directory) =>
          withRedis(topology.redis, async (redis) => {
            const { finished } = await applyPlan(
              { topology, directory, redis, logger: cliLogger(), failpoint: failpointFromEnv() },
              id,
              {
                concurrency,
                maxPerSource,
                onMove: (planMove, move, tally) => {
                  if (move && !['done', 'failed', 'aborted'].includes(move.state))
                    return progress.update(move)
                  progress.done()
                  say(
                    `[${tally.done}/${tally.total}] ${planMove.tenant} ${planMove.from} → ${planMove.to}: ${planMove.state}${planMove.error ? ` (${planMove.error})` : ''}`,
                  )
                },
              },
            )
            return finished
          }),
        )
        if (options.json) print(plan)
        else printPlan(plan)
        if (plan.state !== 'done') process.exitCode = 1
      },
    ),
  )
rebalance
  .command('cancel [plan]')
  .description('cancel a plan (default: the latest); an applying one stops after its current move')
  .addOption(json)
  .action(
    action(async (topology, id: string | undefined, options: { json?: boolean }) => {
      const plan = await withDirectory(topology, async (directory) =>
        cancelPlan(directory, (await findPlan(directory, id)).id),
      )
      if (options.json) print(plan)
      else say(`plan ${plan.id} is ${plan.state}`)
    }),
  )

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

function printPlan(plan: StoredPlan) {
  const moved = plan.moves.reduce((sum, m) => sum + m.bytes, 0)
  const kind = plan.shard ? `drain ${plan.shard}` : plan.strategy
  const count = `${plan.moves.length} move${plan.moves.length === 1 ? '' : 's'}`
  say(`plan ${plan.id} (${kind}, ${plan.state}): ${count}, ${formatBytes(moved)} to move`)
  if (plan.moves.length) {
    const shown = plan.moves.slice(0, MOVES_SHOWN).map((m) => ({ ...m, bytes: formatBytes(m.bytes) }))
    process.stdout.write(`${table(shown, ['tenant', 'from', 'to', 'bytes', 'state'])}\n`)
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
  process.stdout.write(`${table(fill, ['shard', 'state', 'before', 'after', 'bytesBefore', 'bytesAfter'])}\n`)
  if (!plan.balanced) say(`not balanced: ${plan.reason}`)
}

function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit += 1
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`
}

const keys = program.command('keys').description('API keys for the router: shown once, stored hashed')
keys
  .command('create')
  .description('create a key and print it once; an app key may be limited to tenants')
  .requiredOption('--scope <scope>', 'app (tenant requests) or admin (admin endpoints)')
  .option('--tenant <uuid...>', 'limit an app key to these tenants (default: any tenant)')
  .option('--name <name>', 'what the key is for')
  .addOption(json)
  .action(
    action(async (topology, options: { scope: string; tenant?: string[]; name?: string; json?: boolean }) => {
      const created = await withDirectory(topology, (directory) =>
        createKey(directory, {
          // Any string may arrive here: createKey's zod schema is what refuses it.
          scope: options.scope as KeyScope,
          ...(options.tenant ? { tenants: options.tenant } : {}),
          ...(options.name !== undefined ? { name: options.name } : {}),
        }),
      )
      if (options.json) print(created)
      else {
        const reach = created.tenants ? `tenants ${created.tenants.join(', ')}` : 'any tenant'
        say(
          `${created.scope} key ${created.prefix} created (${created.scope === 'app' ? reach : 'admin endpoints'})`,
        )
        say('store it now: it will not be shown again')
        process.stdout.write(`${created.key}\n`)
      }
    }),
  )
const keyCells = (row: KeyRow) => ({
  ...row,
  tenants: row.tenants?.join(',') ?? 'any',
  createdAt: row.createdAt.toISOString(),
  revokedAt: row.revokedAt?.toISOString() ?? '',
})
keys
  .command('list')
  .description('every key, revoked ones included; never any secret')
  .addOption(json)
  .action(
    action(async (topology, options: { json?: boolean }) => {
      const rows = await withDirectory(topology, listKeys)
      if (options.json) print(rows)
      else
        process.stdout.write(
          `${table(rows.map(keyCells), ['id', 'prefix', 'scope', 'tenants', 'name', 'createdAt', 'revokedAt'])}\n`,
        )
    }),
  )
keys
  .command('revoke <key>')
  .description('revoke a key by id or prefix (idempotent)')
  .addOption(json)
  .action(
    action(async (topology, idOrPrefix: string, options: { json?: boolean }) => {
      const row = await withDirectory(topology, (directory) => revokeKey(directory, idOrPrefix))
      if (options.json) print(row)
      else say(`key ${row.prefix} revoked at ${row.revokedAt?.toISOString()}`)
    }),
  )

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
    action(async (topology, id: string | undefined, options: { json?: boolean }) => {
      const found = await withDirectory(topology, async (directory) =>
        id === undefined ? listMoves(directory, { limit: 20 }) : [await findMove(directory, parseMoveId(id))],
      )
      if (options.json) print(id === undefined ? found : found[0])
      else
        process.stdout.write(
          `${table(found.map(moveRow), ['id', 'tenant', 'from', 'to', 'state', 'rows', 'stallMs', 'updated', 'fence', 'error'])}\n`,
        )
    }),
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
  .description('undo a move that has not cut over: source unfenced, target and replication artifacts cleaned')
  .option('--move-back', 'past the cutover: finish the move, then move the tenant back to its source')
  .addOption(json)
  .action(
    action(async (topology, id: string, options: { json?: boolean; moveBack?: boolean }) => {
      const moveBack = options.moveBack === true
      await runMover(topology, options, (deps) => abortMove(deps, parseMoveId(id), { moveBack }))
    }),
  )

/** Runs one mover action with a progress bar on stderr; prints the move (JSON or a summary) at the end. */
async function runMover(
  topology: Topology,
  options: { json?: boolean },
  run: (deps: MoverDeps) => Promise<Move>,
): Promise<Move> {
  const progress = progressPrinter()
  const done = await withDirectory(topology, (directory) =>
    withRedis(topology.redis, (redis) =>
      run({
        topology,
        directory,
        redis,
        logger: cliLogger(),
        onProgress: (m) => progress.update(m),
        failpoint: failpointFromEnv(),
      }),
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

const loadtest = program
  .command('loadtest')
  .description(
    "load test: the seed's workload through a router against the shards, with moves; targets PASS/FAIL",
  )
loadtest
  .command('seed')
  .description(
    'place the loadtest tenants (automatic placement) and fill them with data; re-running reuses them',
  )
  .option('--tenants <n>', 'how many loadtest tenants (default 300: 100 per shard)')
  .option('--scale <s>', "customers and appointments per tenant × s (1: the seed's proportions)")
  .option('--prefix <name>', 'tenants are named <prefix>-NNN (default loadtest)')
  .addOption(json)
  .action(
    action(async (topology, flags: Record<string, unknown>) => {
      const { json: asJson, ...given } = flags
      const options = parseFlags(seedFlags, given)
      const progress = stepPrinter()
      const seeded = await withDirectory(topology, (directory) =>
        seedLoadtest(directory, topology, options, (p) => progress.update(p)),
      ).finally(() => progress.done())
      if (asJson) print(seeded)
      else
        say(
          `${seeded.tenants} loadtest tenants (${seeded.added} added, ${seeded.filled} filled, ${seeded.rows.toLocaleString('en-US')} rows) in ${seeded.seconds.toFixed(1)} s: ${Object.entries(
            seeded.perShard,
          )
            .map(([shard, n]) => `${shard} ${n}`)
            .join(', ')}`,
        )
    }),
  )
/** The flags `loadtest run` and `loadtest local` share. */
const runOptions = (command: Command) =>
  command
    .option('--duration <s>', 'seconds of measured load (default 60)')
    .option('--warmup <s>', 'seconds of load before measuring (default 5)')
    .option(
      '--rate <n>',
      'requests per second, open loop; default nominal: every tenant at its hourly API limit',
    )
    .option('--connections <n>', 'HTTP connections to the router (default 32)')
    .option('--write-share <share>', 'share of writes, 0 to 1 (default 0.2)')
    .option('--zipf <s>', 'tenant skew: Zipf exponent, 0 = uniform (default 1)')
    .option('--moves <n>', 'tenants to move while the load runs')
    .option('--tenants <n>', 'loadtest tenants to drive')
    .option('--prefix <name>', 'loadtest tenants are named <prefix>-NNN (default loadtest)')
    .option('--json <file>', 'where to write the JSON report (default tmp/loadtest-report.json)')
    .option('--html <file>', 'where to write the HTML report (default tmp/loadtest-report.html)')
runOptions(
  loadtest
    .command('run')
    .description(
      'drive a router with the seed workload over the loadtest tenants; print and write the report',
    )
    .option('--url <url>', 'a running router (default: start one in this process, rate limits lifted)'),
).action(
  action(async (topology, flags: Record<string, unknown>) => {
    const options = parseFlags(runFlags, flags)
    const progress = stepPrinter()
    const report = await withDirectory(topology, (directory) =>
      withRedis(topology.redis, (redis) =>
        runLoadtest({ topology, directory, redis, onProgress: (p) => progress.update(p) }, options),
      ),
    ).finally(() => progress.done())
    printLoadtest(report, options)
  }),
)
runOptions(
  loadtest
    .command('local')
    .description('npm run loadtest: boot (or reuse) the local topology, migrate, seed, run with 2 moves')
    .option('--scale <s>', 'data per tenant, as in `loadtest seed`'),
).action(
  action(async (topology, flags: Record<string, unknown>) => {
    const options = parseFlags(localFlags, flags)
    const progress = stepPrinter()
    const report = await loadtestLocal(topology, options, {
      ...launch(),
      onProgress: (p) => progress.update(p),
    }).finally(() => progress.done())
    printLoadtest(report, options)
  }),
)
loadtest
  .command('screenshot <report>')
  .description('a PNG of an HTML report, taken by headless Chromium (needs the chromium package)')
  .option('--out <file>', 'the PNG to write (default: the report’s name with .png)')
  .action(
    action(async (_topology, report: string, options: { out?: string }) => {
      say(
        `screenshot written: ${screenshotReport(report, options.out ?? `${report.replace(/\.html?$/, '')}.png`)}`,
      )
    }),
  )

function printLoadtest(report: LoadtestReport, files: { json: string; html: string }) {
  process.stdout.write(formatReport(report, table))
  say(`report written: ${files.json}, ${files.html}`)
  if (report.targets.some((target) => !target.pass)) process.exitCode = 1
}

program
  .command('router')
  .description('run a router (Hono over HTTP) until SIGINT/SIGTERM, then shut down gracefully')
  .option('--port <port>', 'port to listen on (default: router.port of the topology)')
  .action(
    action(async (topology, options: { port?: string }) => {
      const port = options.port === undefined ? undefined : parsePort(options.port)
      untilSignal(await startRouter(topology, port === undefined ? {} : { port }))
    }),
  )

function parsePort(value: string): number {
  const parsed = z.coerce.number().int().min(0).max(65535).safeParse(value)
  if (!parsed.success)
    throw new SwitchyardError('invalid_input', `--port: ${JSON.stringify(value)} is not a port number`)
  return parsed.data
}

/** Stops the router gracefully on the first SIGINT/SIGTERM; a second one exits at once. */
function untilSignal(router: { close(): Promise<void> }) {
  const stop = () => {
    process.once('SIGINT', () => process.exit(130))
    process.once('SIGTERM', () => process.exit(143))
    router.close().then(() => process.exit(0))
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

program
  .command('start')
  .description('npm start: boot the local topology, migrate, seed demo tenants, print how to try it')
  .action(
    action(async (topology) => untilSignal(await startDemo(topology, { home: defaultHome(), report: say }))),
  )

await program.parseAsync()
