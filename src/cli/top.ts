import { type Command, Option } from 'commander'
import type { Topology } from '../config/topology.ts'
import { withRedis } from '../directory/redis.ts'
import {
  MAX_HOURS,
  parseStatementQuery,
  readStatementStats,
  type StatementRow,
  statementOrders,
} from '../directory/statement-stats.ts'
import { SwitchyardError } from '../errors.ts'
import { json, printTable, say, shows } from './output.ts'

/** Characters of normalized SQL in the table (`--json` has what Redis holds). */
const QUERY_COLUMN = 60

export function register(program: Command): void {
  program
    .command('top')
    .description(
      "each tenant's statements by fingerprint, merged over every router from Redis: calls, errors, time, p99, rows; slowest first",
    )
    .option('--tenant <uuid>', "only this tenant's statements")
    .addOption(
      new Option('--by <order>', 'p99, total time or calls, most first')
        .choices(statementOrders)
        .default('p99'),
    )
    .option('--limit <n>', 'statements listed', '20')
    .option('--hours <n>', `this clock hour and the ones before it, up to ${MAX_HOURS}`, '1')
    .addOption(json)
    .action(shows(top, printTop))
}

interface TopResult {
  hours: number
  slowMs: number
  statements: StatementRow[]
}

async function top(topology: Topology, flags: Record<string, string | undefined>): Promise<TopResult> {
  const query = parseStatementQuery({
    tenant: flags.tenant,
    by: flags.by,
    limit: flags.limit,
    hours: flags.hours,
  })
  const slowMs = topology.router.slowStatementMs
  const statements = await withRedis(topology.redis, (redis) => {
    if (!redis)
      throw new SwitchyardError(
        'stats_unavailable',
        'statement statistics live in Redis: the topology names none',
      )
    return readStatementStats(redis, query)
  })
  return { hours: query.hours, slowMs, statements }
}

function printTop(result: TopResult) {
  if (result.statements.length === 0) {
    say(`no statements counted in the last ${result.hours} clock hour(s)`)
    return
  }
  const rows = result.statements.map((row) => ({
    ...row,
    slow: row.slowCalls > 0 ? `${row.slowCalls} > ${result.slowMs} ms` : '',
    query: row.query.length > QUERY_COLUMN ? `${row.query.slice(0, QUERY_COLUMN - 1)}…` : row.query,
  }))
  printTable(rows, [
    'tenant',
    'fingerprint',
    'calls',
    'errors',
    'totalMs',
    'meanMs',
    'p99Ms',
    'rows',
    'slow',
    'query',
  ])
  const slow = result.statements.filter((row) => row.slow).length
  if (slow > 0)
    say(
      `${slow} statement(s) with calls over ${result.slowMs} ms (router.slowStatementMs, the seed's budget)`,
    )
  // What the application waited: a statement's time includes the router's queue for the tenant's
  // connections and any cutover hold, which pg_stat_statements (`shards top`) does not see.
  say("times are the router's, from a request's arrival to its answer (queueing and cutover holds included)")
}
