import { Command } from 'commander'
import * as cluster from './cluster.ts'
import * as doctor from './doctor.ts'
import * as keys from './keys.ts'
import * as loadtest from './loadtest.ts'
import * as logs from './logs.ts'
import * as migrate from './migrate.ts'
import * as moves from './moves.ts'
import * as partitions from './partitions.ts'
import * as rebalance from './rebalance.ts'
import * as router from './router.ts'
import * as shards from './shards.ts'
import * as start from './start.ts'
import * as tenants from './tenants.ts'
import * as top from './top.ts'

/**
 * Every noun of `switchyard`, one entry each, in the order `--help` lists them. A new noun is a file
 * with `register(program)` and a line here; a new verb is a `.command()` in its noun's file.
 */
const NOUNS = [
  cluster,
  migrate,
  doctor,
  tenants,
  shards,
  top,
  partitions,
  rebalance,
  keys,
  moves,
  loadtest,
  logs,
  router,
  start,
]

const program = new Command('switchyard')
  .description('Shard router and tenant placement for multi-tenant PostgreSQL')
  .showHelpAfterError()
  // Lets `move status <id> --json` give --json to the subcommand although `move` has one too.
  .enablePositionalOptions()
  .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : 2))
for (const noun of NOUNS) noun.register(program)

await program.parseAsync()
