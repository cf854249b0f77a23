import { seedDemoTenant } from '../../examples/appointments/demo.ts'
import type { Topology } from '../config/topology.ts'
import { withDirectory } from '../directory/connection.ts'
import { migrateAll } from '../directory/migrate.ts'
import { addTenant, shardPrimary } from '../directory/tenants.ts'
import { isSwitchyardError } from '../errors.ts'
import { withAdmin } from '../shard/connection.ts'
import { clusterStatus, clusterUp, type LaunchOptions } from './launcher.ts'

/** Fixed ids, so `npm start` twice finds its demo tenants instead of adding more. */
export const DEMO_TENANTS = [
  { id: '019a0000-0000-7000-8000-000000000001', name: 'Clínica Sol' },
  { id: '019a0000-0000-7000-8000-000000000002', name: 'Barbería Norte' },
  { id: '019a0000-0000-7000-8000-000000000003', name: 'Yoga Luna' },
]

/** `npm start`: the local topology up, migrated, with one demo tenant (and its data) per shard. */
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
  const { nodes } = await clusterStatus(topology)
  const shard = topology.shards[0]
  const routerUrl = new URL(shard?.primary ?? topology.directory)
  routerUrl.username = topology.router.role.name
  routerUrl.password = topology.router.role.password
  const lines = [
    '',
    'Switchyard local topology is up:',
    ...nodes.map(
      (node) =>
        `  ${node.up ? 'up  ' : 'DOWN'} ${node.name.padEnd(20)} ${node.url.replace(/:[^:@/]*@/, ':***@')}`,
    ),
    '',
    'Try it: as the router role, a transaction sees only the tenant it entered (RLS):',
    `  psql '${routerUrl}' -c "begin; select switchyard.enter('${DEMO_TENANTS[0]?.id}', 1, false); select count(*) from appointments; commit;"`,
    'More: npx switchyard tenants list | npx switchyard doctor | npx switchyard cluster status | npx switchyard cluster down',
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
}
