import type { Command } from 'commander'
import { migrateAll } from '../directory/migrate.ts'
import { json, say, shows } from './output.ts'

export function register(program: Command): void {
  program
    .command('migrate')
    .description('apply directory and shard migrations; record each shard’s schema version (idempotent)')
    .addOption(json)
    .action(
      shows(
        (topology) => migrateAll(topology),
        (result) => {
          say(`directory: ${result.directory} migrations applied`)
          for (const shard of result.shards)
            say(`${shard.shard}: ${shard.applied} migrations applied, version ${shard.version}`)
        },
      ),
    )
}
