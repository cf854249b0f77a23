import { Command, Option } from 'commander'
import { z } from 'zod'
import { startDemo } from './cluster/demo.ts'
import {
  clusterDown,
  clusterReset,
  clusterStatus,
  clusterUp,
  defaultHome,
  type NodeStatus,
} from './cluster/launcher.ts'
import { loadTopology } from './config/load.ts'
import type { Topology } from './config/topology.ts'
import { withDirectory } from './directory/connection.ts'
import { createKey, type KeyRow, type KeyScope, listKeys, revokeKey } from './directory/keys.ts'
import { migrateAll } from './directory/migrate.ts'
import { addTenant, findTenant, listTenants, type TenantRow } from './directory/tenants.ts'
import { isSwitchyardError, SwitchyardError } from './errors.ts'
import { startRouter } from './router/server.ts'
import { withAdmin } from './shard/connection.ts'
import { diagnose } from './shard/doctor.ts'
import { readOwnership } from './shard/ownership.ts'

const program = new Command('switchyard')
  .description('Shard router and tenant placement for multi-tenant PostgreSQL')
  .showHelpAfterError()
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
    url: node.url.replace(/:[^:@/]*@/, ':***@'),
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
    'check the topology is fit: wal_level, slots, replicas, RLS, primary keys, router role, versions',
  )
  .addOption(json)
  .action(
    action(async (topology, options: { json?: boolean }) => {
      const findings = await diagnose(topology)
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
  .requiredOption('--shard <id>', 'shard to place the tenant on')
  .option('--name <name>', 'display name')
  .addOption(json)
  .action(
    action(async (topology, id: string, options: { shard: string; name?: string; json?: boolean }) => {
      const row = await withDirectory(topology, (directory) =>
        addTenant(directory, topology, {
          id,
          shard: options.shard,
          ...(options.name ? { name: options.name } : {}),
        }),
      )
      if (options.json) print(row)
      else say(`tenant ${row.id} (${row.name}) added on ${row.shardId}`)
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
  .description("a tenant's directory row and the ownership its shard records")
  .addOption(json)
  .action(
    action(async (topology, id: string, options: { json?: boolean }) => {
      const row = await withDirectory(topology, (directory) => findTenant(directory, id))
      const shard = topology.shards.find((s) => s.id === row.shardId)
      const ownership = shard
        ? await withAdmin(shard.primary, (sql) => readOwnership(sql, row.id))
        : undefined
      const shown: TenantRow & { ownership: typeof ownership | null } = {
        ...row,
        ownership: ownership ?? null,
      }
      if (options.json) print(shown)
      else
        process.stdout.write(
          `${table([{ ...shown, ownership: ownership ? `${ownership.state}@${ownership.epoch}` : 'none' }], ['id', 'name', 'shardId', 'epoch', 'state', 'ownership'])}\n`,
        )
    }),
  )

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
