import type { Command } from 'commander'
import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { withRedis } from '../directory/redis.ts'
import { publishInvalidation } from '../directory/routes.ts'
import type { TenantLimits } from '../directory/schema.ts'
import {
  addTenant,
  limitOverride,
  limitsPatchSchema,
  listTenants,
  setTenantLimits,
} from '../directory/tenants.ts'
import { SwitchyardError } from '../errors.ts'
import { placeTenant } from '../placement/placement.ts'
import { describeTenant, type TenantDescription } from '../placement/stats.ts'
import { json, printTable, say, shows, table } from './output.ts'

export function register(program: Command): void {
  const tenants = program.command('tenants').description('tenants in the directory')
  tenants
    .command('add <tenant>')
    .description('register a tenant (UUID) on a shard, in the directory and on the shard, or not at all')
    .option('--shard <id>', 'shard to put the tenant on (default: placement picks an active shard with room)')
    .option('--name <name>', 'display name')
    .addOption(json)
    .action(
      shows(
        (topology, id: string, options: { shard?: string; name?: string }) => {
          const input = {
            id,
            ...(options.shard !== undefined ? { shard: options.shard } : {}),
            ...(options.name ? { name: options.name } : {}),
          }
          return withDirectory(topology, (directory) => addTenant(directory, topology, input, placeTenant))
        },
        (row, _id, options) =>
          say(`tenant ${row.id} (${row.name}) ${options.shard ? 'added' : 'placed'} on ${row.shardId}`),
      ),
    )
  tenants
    .command('list')
    .addOption(json)
    .action(
      shows(
        (topology) => withDirectory(topology, listTenants),
        (rows) =>
          printTable(rows as unknown as Record<string, unknown>[], [
            'id',
            'name',
            'shardId',
            'epoch',
            'state',
          ]),
      ),
    )
  tenants
    .command('show <tenant>')
    .description(
      "a tenant's directory row, the ownership its shard records, its rows and bytes per table (exact), its limits and its request rate this hour",
    )
    .addOption(json)
    .action(
      shows(
        (topology, id: string) =>
          withDirectory(topology, (directory) =>
            withRedis(topology.redis, (redis) => describeTenant(directory, topology, redis, id)),
          ),
        (shown) => printTenant(shown),
      ),
    )
  registerSetLimits(tenants)
}

function printTenant(shown: TenantDescription) {
  const { ownership, usage } = shown
  process.stdout.write(
    `${table([{ ...shown, ownership: ownership ? `${ownership.state}@${ownership.epoch}` : 'none' }], ['id', 'name', 'shardId', 'epoch', 'state', 'ownership'])}\n\n`,
  )
  if (usage.tables) {
    const rows = [...usage.tables, { table: 'total', rows: usage.rows, bytes: usage.bytes }]
    process.stdout.write(`${table(rows, ['table', 'rows', 'bytes'])}\n\n`)
  } else say(`rows and bytes unavailable: ${usage.error}`)
  process.stdout.write(`${limitsTable(shown.effectiveLimits, shown.limits)}\n\n`)
  const requests = usage.requests
  say(
    requests.available
      ? `this hour (since ${requests.windowStart}): ${requests.apiRequests} API requests; ${requests.count} requests naming none (${requests.perMinute}/min)`
      : `request rate unavailable: ${requests.reason}`,
  )
}

/** Each limit the tenant runs under, and whether it is the tenant's own or the config's default. */
function limitsTable(effective: Required<TenantLimits>, own: TenantLimits): string {
  const rows = Object.entries(effective).map(([name, value]) => ({
    limit: name,
    value,
    from: name in own ? 'tenant' : 'default',
  }))
  return table(rows, ['limit', 'value', 'from'])
}

/** The limits `set-limits` takes, in the order of `--help`: the admin API's patch fields. */
const LIMIT_NAMES = Object.keys(limitsPatchSchema.shape)
/** `max_services` is `--max-services`, which commander hands over as `maxServices`. */
const limitFlag = (name: string) => `--${name.replaceAll('_', '-')}`
const limitOption = (name: string) => name.replace(/_(.)/g, (_, letter: string) => letter.toUpperCase())

/** A command line has no route cache of its own: it tells the routers (over Redis) to forget a tenant. */
const tellRouters = (topology: Topology) => ({
  invalidate: (tenant: string) =>
    withRedis(topology.redis, async (redis) => {
      if (redis && !(await publishInvalidation(redis, tenant)))
        say(
          `warning [cache_not_invalidated]: Redis did not take the read cache bump: routers may serve ${tenant}'s reads cached before this change until their TTL`,
        )
    }),
})

function registerSetLimits(tenants: Command) {
  const setLimits = tenants
    .command('set-limits <tenant>')
    .description(
      "override a tenant's limits in the directory (N, or `default` to drop the override); routers pick them up at once (over Redis) or within their route cache TTL",
    )
  for (const name of LIMIT_NAMES)
    setLimits.option(`${limitFlag(name)} <n>`, `${name}: N, or "default" to drop the override`)
  setLimits.addOption(json).action(
    shows(
      (topology, id: string, options: Record<string, string | boolean | undefined>) => {
        const patch = limitsPatch(options)
        return withDirectory(topology, (directory) =>
          setTenantLimits(directory, topology, tellRouters(topology), id, patch),
        )
      },
      (row) => process.stdout.write(`${limitsTable(row.effectiveLimits, row.limits)}\n`),
    ),
  )
}

/** `--max-services 20` sets an override; `--max-services default` removes it (null). */
function limitsPatch(options: Record<string, string | boolean | undefined>): Record<string, number | null> {
  const patch: Record<string, number | null> = {}
  for (const name of LIMIT_NAMES) {
    const given = options[limitOption(name)]
    if (given === undefined) continue
    const parsed = limitOverride.safeParse(given === 'default' ? null : Number(given))
    if (!parsed.success)
      throw new SwitchyardError(
        'invalid_input',
        `${limitFlag(name)}: ${JSON.stringify(given)} must be a non-negative integer or "default"`,
      )
    patch[name] = parsed.data ?? null
  }
  return patch
}
