import type { Command } from 'commander'
import type { Topology } from '../config/topology.ts'
import { forgetCachedReads } from '../directory/migrate.ts'
import { SwitchyardError } from '../errors.ts'
import { withAdmin } from '../shard/connection.ts'
import { type EnsureOutcome, ensurePartitions, sameTable } from '../shard/partitions.ts'
import { json, printTable, say, shows } from './output.ts'

export function register(program: Command): void {
  const partitions = program
    .command('partitions')
    .description("the seed's monthly partitions of tenant tables, kept ahead on every shard")
  partitions
    .command('ensure')
    .description(
      'create the partitions of this month and the next N on every shard (idempotent; safe from cron and concurrently)',
    )
    .option('--months-ahead <n>', 'months after this one that must have a partition (default 12)', '12')
    .option('--retain-months <n>', 'detach and drop month partitions older than N months (default: keep all)')
    .option(
      '--table <name...>',
      'only these tables (as `appointments` or `public.appointments`): retention differs from table to table',
    )
    .addOption(json)
    .action(
      shows(ensureEverywhere, (results) => {
        const rows = results.flatMap(({ shard, outcomes }) =>
          outcomes.map((outcome) => ({
            shard,
            table: outcome.table,
            created: outcome.created.length,
            dropped: outcome.dropped.length,
            skipped: outcome.skipped.map((skip) => `${skip.month}: ${skip.reason}`).join('; '),
          })),
        )
        printTable(rows, ['shard', 'table', 'created', 'dropped', 'skipped'])
        if (rows.length === 0) say('no table in the tenant schemas is partitioned by month')
      }),
    )
}

interface EnsureFlags {
  monthsAhead: string
  retainMonths?: string
  table?: string[]
}

/**
 * A partition made (rows moved out of DEFAULT with it) or dropped changed rows and tables outside the
 * routers: their read caches start again and read the catalogs again, as after a migration.
 */
async function forgetIfChanged(
  topology: Topology,
  results: { outcomes: EnsureOutcome[] }[],
  failed: boolean,
) {
  const changed =
    failed ||
    results.some(({ outcomes }) =>
      outcomes.some((outcome) => outcome.created.length > 0 || outcome.dropped.length > 0),
    )
  // After a failure, its own error is the one to show.
  if (changed && !(await forgetCachedReads(topology)) && !failed)
    throw new SwitchyardError(
      'cache_not_invalidated',
      'partitions changed, but Redis did not take the read cache epoch bump: run `switchyard migrate` once Redis answers, or routers may serve reads cached before the change',
    )
}

/** Every shard's primary in turn; a month that could not be made makes the exit code 1. */
async function ensureEverywhere(topology: Topology, flags: EnsureFlags) {
  const monthsAhead = months('--months-ahead', flags.monthsAhead, 0)
  const retainMonths =
    flags.retainMonths === undefined ? null : months('--retain-months', flags.retainMonths, 1)
  const results: { shard: string; outcomes: EnsureOutcome[] }[] = []
  // Months commit one by one: a shard that failed may have made or dropped some before.
  let failed = true
  try {
    for (const shard of topology.shards) {
      const outcomes = await withAdmin(shard.primary, (sql) =>
        ensurePartitions(sql, topology.tenantSchema.schemas, {
          monthsAhead,
          retainMonths,
          tables: flags.table,
        }),
      )
      results.push({ shard: shard.id, outcomes })
    }
    failed = false
  } finally {
    await forgetIfChanged(topology, results, failed)
  }
  // A name that matched no table anywhere is a typo, not a table with nothing to do.
  const named = new Set(results.flatMap(({ outcomes }) => outcomes.map((outcome) => outcome.table)))
  const unknown = (flags.table ?? []).filter((table) => ![...named].some((name) => sameTable(name, table)))
  if (unknown.length > 0)
    throw new SwitchyardError(
      'invalid_input',
      `--table: no table partitioned by month named ${unknown.map((table) => JSON.stringify(table)).join(', ')} in the tenant schemas`,
    )
  if (results.some(({ outcomes }) => outcomes.some((outcome) => outcome.skipped.length > 0)))
    process.exitCode = 1
  return results
}

function months(flag: string, value: string, min: number): number {
  const parsed = Number(value)
  if (!/^\d+$/.test(value) || parsed < min || parsed > 120)
    throw new SwitchyardError(
      'invalid_input',
      `${flag}: ${JSON.stringify(value)} is not a whole number from ${min} to 120`,
    )
  return parsed
}
