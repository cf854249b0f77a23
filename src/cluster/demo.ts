import { seedDemoTenant } from '../../examples/appointments/demo.ts'
import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { createKey } from '../directory/keys.ts'
import { migrateAll } from '../directory/migrate.ts'
import { addTenant, shardPrimary } from '../directory/tenants.ts'
import { isSwitchyardError } from '../errors.ts'
import { startRouter } from '../router/server.ts'
import { withAdmin } from '../shard/connection.ts'
import { clusterStatus, clusterUp, type LaunchOptions, maskPassword } from './launcher.ts'

/** Fixed ids, so `npm start` twice finds its demo tenants instead of adding more. */
export const DEMO_TENANTS = [
  { id: '019a0000-0000-7000-8000-000000000001', name: 'Clínica Sol' },
  { id: '019a0000-0000-7000-8000-000000000002', name: 'Barbería Norte' },
  { id: '019a0000-0000-7000-8000-000000000003', name: 'Yoga Luna' },
]

/** `npm start`: the local topology up, migrated, one demo tenant (with data) per shard, and a router. */
export async function startDemo(
  topology: Topology,
  options: LaunchOptions & { report: (line: string) => void },
) {
  const { report } = options
  await clusterUp(topology, options)
  const migrated = await migrateAll(topology)
  report(
    `migrated: directory +${migrated.directory}, ${migrated.shards.map((s) => `${s.shard} +${s.applied}`).join(', ')}`,
  )
  await withDirectory(topology, async (directory) => {
    for (const [index, demo] of DEMO_TENANTS.entries()) {
      const shard = topology.shards[index % topology.shards.length]?.id as string
      const placed = await addTenant(directory, topology, { id: demo.id, shard, name: demo.name })
        .then((row) => row.shardId)
        .catch(async (error) => {
          if (!isSwitchyardError(error) || error.code !== 'tenant_exists') throw error
          const [row] = await directory.sql<
            { shard_id: string }[]
          >`select shard_id from tenants where id = ${demo.id}`
          return row?.shard_id as string
        })
      const rows = await withAdmin(shardPrimary(topology, placed), (sql) =>
        seedDemoTenant(sql, demo.id, demo.name),
      )
      report(`demo tenant ${demo.name} (${demo.id}) on ${placed}${rows ? `: ${rows} rows written` : ''}`)
    }
  })
  const key = await withDirectory(topology, async (directory) => {
    // The previous run's demo key was shown once and is gone: retire it and show a new one.
    await directory.sql`update api_keys set revoked_at = now() where name = 'demo' and revoked_at is null`
    return createKey(directory, { scope: 'app', tenants: DEMO_TENANTS.map((t) => t.id), name: 'demo' })
  })
  const router = await startRouter(topology)
  const { nodes } = await clusterStatus(topology)
  const tenant = DEMO_TENANTS[0]?.id
  const lines = [
    '',
    'Switchyard is up:',
    ...nodes.map(
      (node) => `  ${node.up ? 'up  ' : 'DOWN'} ${node.name.padEnd(20)} ${maskPassword(node.url)}`,
    ),
    `  up   router               ${router.url}${router.pgPort === null ? '' : ` and postgres://127.0.0.1:${router.pgPort}`}`,
    '',
    `Demo API key (app scope, the demo tenants; shown once): ${key.key}`,
    'Try it:',
    `  curl -s ${router.url}/v1/query -H 'authorization: Bearer ${key.key}' -H 'x-tenant-id: ${tenant}' \\`,
    `    -d '{"sql":"select status, count(*) from appointments group by 1","params":[],"method":"execute"}'`,
    ...(router.pgPort === null
      ? []
      : [
          `  PGPASSWORD=${key.key} psql -h 127.0.0.1 -p ${router.pgPort} -U ${tenant} switchyard \\`,
          `    -c 'select status, count(*) from appointments group by 1'`,
        ]),
    'More: npx switchyard tenants list | doctor | cluster status | cluster down.  Ctrl-C stops the router.',
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
  return router
}
