import type { Command } from 'commander'
import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { withRedis } from '../directory/redis.ts'
import { type CapacityReport, searchCapacity } from '../loadtest/capacity.ts'
import { formatCapacity } from '../loadtest/capacity-text.ts'
import { loadtestLocal } from '../loadtest/local.ts'
import {
  capacityFlags,
  capacityOptions,
  localCapacityFlags,
  localFlags,
  parseFlags,
  runFlags,
  seedFlags,
} from '../loadtest/options.ts'
import { stepPrinter } from '../loadtest/progress.ts'
import { formatReport, type LoadtestReport } from '../loadtest/report.ts'
import { runLoadtest } from '../loadtest/run.ts'
import { screenshotReport } from '../loadtest/screenshot.ts'
import { type SeedResult, seedLoadtest } from '../loadtest/seed.ts'
import { launch } from './cluster.ts'
import { action, json, say, shows, table } from './output.ts'

export function register(program: Command): void {
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
    .action(shows(seed, (seeded) => printSeeded(seeded)))
  runOptions(
    loadtest
      .command('run')
      .description(
        'drive a router with the seed workload over the loadtest tenants; print and write the report',
      )
      .option('--url <url>', 'a running router (default: start one in this process, rate limits lifted)'),
  ).action(action(run))
  capacityOptionsOf(
    loadtest
      .command('capacity')
      .description(
        "capacity search: raise the open-loop rate step by step (2 moves a step) to the highest that holds the seed's targets",
      )
      .option('--url <url>', 'a running router (default: start one in a process of its own)')
      .option('--zipf <s>', 'tenant skew: Zipf exponent (default 0: every tenant alike)')
      .option('--json <file>', 'where to write the JSON report (default tmp/loadtest-capacity.json)')
      .option('--html <file>', 'where to write the HTML report (default tmp/loadtest-capacity.html)'),
  ).action(action(capacity))
  capacityOptionsOf(
    runOptions(
      loadtest
        .command('local')
        .description(
          'npm run loadtest: boot (or reuse) the local topology, migrate, seed, run with 2 moves (--capacity: the capacity search instead)',
        )
        .option('--scale <s>', 'data per tenant, as in `loadtest seed`')
        .option('--capacity', 'run the capacity search (as `loadtest capacity`) instead of one run'),
    ),
  ).action(action(local))
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
}

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

/** The flags only the capacity search takes (`loadtest capacity`, `loadtest local --capacity`). */
const capacityOptionsOf = (command: Command) =>
  command
    .option('--from <n>', 'requests per second of the first step (default nominal)')
    .option('--max-rate <n>', 'never step above this many requests per second (default 2000)')
    .option(
      '--precision <share>',
      'stop when the first failing rate is within this share of the knee (default 0.1)',
    )
    .option('--max-steps <n>', 'at most this many steps (default 10)')
    .option('--step-duration <s>', 'seconds measured per step, after the warm-up (default 20)')
    .option('--skip-generator-check', 'do not drive the knee again with the standard and the light client')
    .option(
      '--skip-retry',
      'take a rate’s first failure as final (by default a failing rate is run once more)',
    )

async function seed(topology: Topology, flags: Record<string, unknown>) {
  const { json: _, ...given } = flags
  const options = parseFlags(seedFlags, given)
  const progress = stepPrinter()
  return withDirectory(topology, (directory) =>
    seedLoadtest(directory, topology, options, (p) => progress.update(p)),
  ).finally(() => progress.done())
}

function printSeeded(seeded: SeedResult) {
  say(
    `${seeded.tenants} loadtest tenants (${seeded.added} added, ${seeded.filled} filled, ${seeded.rows.toLocaleString('en-US')} rows) in ${seeded.seconds.toFixed(1)} s: ${Object.entries(
      seeded.perShard,
    )
      .map(([shard, n]) => `${shard} ${n}`)
      .join(', ')}`,
  )
}

async function run(topology: Topology, flags: Record<string, unknown>) {
  const options = parseFlags(runFlags, flags)
  const progress = stepPrinter()
  const report = await withDirectory(topology, (directory) =>
    withRedis(topology.redis, (redis) =>
      runLoadtest({ topology, directory, redis, onProgress: (p) => progress.update(p) }, options),
    ),
  ).finally(() => progress.done())
  printLoadtest(report, options)
}

async function local(topology: Topology, flags: Record<string, unknown>) {
  const { capacity: search, ...given } = flags
  const progress = stepPrinter()
  const io = { ...launch(), onProgress: (p: Parameters<typeof progress.update>[0]) => progress.update(p) }
  if (search) {
    const options = capacityOptions(given, localCapacityFlags)
    const report = await loadtestLocal(topology, options, io, (deps) =>
      searchCapacity({ ...deps, report: (line) => progress.say(line) }, options),
    ).finally(() => progress.done())
    return printCapacity(report, options)
  }
  const options = parseFlags(localFlags, given)
  const report = await loadtestLocal(topology, options, io, (deps) => runLoadtest(deps, options)).finally(
    () => progress.done(),
  )
  printLoadtest(report, options)
}

async function capacity(topology: Topology, flags: Record<string, unknown>) {
  const options = capacityOptions(flags, capacityFlags)
  const progress = stepPrinter()
  const report = await withDirectory(topology, (directory) =>
    withRedis(topology.redis, (redis) =>
      searchCapacity(
        {
          topology,
          directory,
          redis,
          onProgress: (p) => progress.update(p),
          report: (line) => progress.say(line),
        },
        options,
      ),
    ),
  ).finally(() => progress.done())
  printCapacity(report, options)
}

function printCapacity(report: CapacityReport, files: { json: string; html: string }) {
  process.stdout.write(formatCapacity(report))
  say(`report written: ${files.json}, ${files.html}`)
  if (!report.knee) process.exitCode = 1
}

function printLoadtest(report: LoadtestReport, files: { json: string; html: string }) {
  process.stdout.write(formatReport(report, table))
  say(`report written: ${files.json}, ${files.html}`)
  if (report.targets.some((target) => !target.pass)) process.exitCode = 1
}
