import type { Command } from 'commander'
import { withDirectory } from '../directory/connection.ts'
import { createKey, type KeyRow, type KeyScope, listKeys, revokeKey } from '../directory/keys.ts'
import { json, printTable, say, shows } from './output.ts'

export function register(program: Command): void {
  const keys = program.command('keys').description('API keys for the router: shown once, stored hashed')
  keys
    .command('create')
    .description('create a key and print it once; an app key may be limited to tenants')
    .requiredOption('--scope <scope>', 'app (tenant requests) or admin (admin endpoints)')
    .option('--tenant <uuid...>', 'limit an app key to these tenants (default: any tenant)')
    .option('--name <name>', 'what the key is for')
    .addOption(json)
    .action(
      shows(
        (topology, options: { scope: string; tenant?: string[]; name?: string }) =>
          withDirectory(topology, (directory) =>
            createKey(directory, {
              // Any string may arrive here: createKey's zod schema is what refuses it.
              scope: options.scope as KeyScope,
              ...(options.tenant ? { tenants: options.tenant } : {}),
              ...(options.name !== undefined ? { name: options.name } : {}),
            }),
          ),
        (created) => {
          const reach = created.tenants ? `tenants ${created.tenants.join(', ')}` : 'any tenant'
          say(
            `${created.scope} key ${created.prefix} created (${created.scope === 'app' ? reach : 'admin endpoints'})`,
          )
          say('store it now: it will not be shown again')
          process.stdout.write(`${created.key}\n`)
        },
      ),
    )
  keys
    .command('list')
    .description('every key, revoked ones included; never any secret')
    .addOption(json)
    .action(
      shows(
        (topology) => withDirectory(topology, listKeys),
        (rows) =>
          printTable(rows.map(keyCells), [
            'id',
            'prefix',
            'scope',
            'tenants',
            'name',
            'createdAt',
            'revokedAt',
          ]),
      ),
    )
  keys
    .command('revoke <key>')
    .description('revoke a key by id or prefix (idempotent)')
    .addOption(json)
    .action(
      shows(
        (topology, idOrPrefix: string) =>
          withDirectory(topology, (directory) => revokeKey(directory, idOrPrefix)),
        (row) => say(`key ${row.prefix} revoked at ${row.revokedAt?.toISOString()}`),
      ),
    )
}

const keyCells = (row: KeyRow) => ({
  ...row,
  tenants: row.tenants?.join(',') ?? 'any',
  createdAt: row.createdAt.toISOString(),
  revokedAt: row.revokedAt?.toISOString() ?? '',
})
