import type { Topology } from '../config/topology.ts'
import { answers, type Sql, withAdmin } from './connection.ts'
import { expectedShardVersion } from './migrate.ts'
import { primaryName, replicaName } from './nodes.ts'
import { type TenantTable, tenantTables } from './tables.ts'

export interface Finding {
  check: string
  target: string
  ok: boolean
  detail: string
}

/** Minimums a shard needs for replicas plus concurrent moves (a slot and a WAL sender each). */
const MIN_SLOTS = 10

/** Checks that a topology is fit to route and move tenants. Every problem is a finding, never a throw. */
export async function diagnose(topology: Topology): Promise<Finding[]> {
  const findings: Finding[] = []
  const directoryUp = await answers(topology.directory)
  findings.push({
    check: 'reachable',
    target: 'directory',
    ok: directoryUp,
    detail: directoryUp ? 'answers' : 'does not answer',
  })
  const expected = expectedShardVersion(topology)
  for (const shard of topology.shards) {
    const target = primaryName(shard.id)
    if (!(await answers(shard.primary))) {
      findings.push({ check: 'reachable', target, ok: false, detail: 'does not answer' })
      continue
    }
    findings.push(
      ...(await withAdmin(shard.primary, (sql) => diagnosePrimary(sql, topology, target, expected))),
    )
    for (const [index, replica] of shard.replicas.entries()) {
      findings.push(await diagnoseReplica(replicaName(shard.id, index), replica))
    }
  }
  return findings
}

async function diagnosePrimary(
  sql: Sql,
  topology: Topology,
  target: string,
  expected: string,
): Promise<Finding[]> {
  const findings: Finding[] = []
  const add = (check: string, ok: boolean, detail: string, on = target) =>
    findings.push({ check, target: on, ok, detail })
  const [settings] = await sql<{ wal_level: string; slots: number; senders: number; used: number }[]>`
    select current_setting('wal_level') as wal_level,
           current_setting('max_replication_slots')::int as slots,
           current_setting('max_wal_senders')::int as senders,
           (select count(*)::int from pg_replication_slots) as used`
  if (!settings) return findings
  add('wal_level', settings.wal_level === 'logical', `wal_level=${settings.wal_level} (moves need logical)`)
  const slotsOk =
    settings.slots >= MIN_SLOTS && settings.senders >= MIN_SLOTS && settings.slots - settings.used >= 2
  add(
    'replication slots',
    slotsOk,
    `${settings.used}/${settings.slots} slots used, ${settings.senders} WAL senders (need ≥ ${MIN_SLOTS})`,
  )

  const [version] = await sql<{ version: string }[]>`
    select version from switchyard.schema_version where to_regclass('switchyard.schema_version') is not null`.catch(
    () => [],
  )
  add('schema version', version?.version === expected, `${version?.version ?? 'none'} (expected ${expected})`)

  for (const table of await tenantTables(sql, topology.tenantSchema.schemas)) {
    const on = `${target} ${table.name}`
    add('RLS enabled and forced', table.rls && table.forced && table.policies > 0, describeRls(table), on)
    add(
      'tenant_id in primary key',
      table.pk.includes('tenant_id'),
      table.pk.length ? `primary key (${table.pk.join(', ')})` : 'no primary key',
      on,
    )
  }
  const role = topology.router.role.name
  const [router] = await sql<{ exists: boolean; bypass: boolean; owns: number }[]>`
    select exists(select 1 from pg_roles where rolname = ${role}) as exists,
           exists(select 1 from pg_roles r where (r.rolsuper or r.rolbypassrls)
                  and pg_has_role(${role}, r.oid, 'MEMBER')) as bypass,
           (select count(*)::int from pg_class c where c.relowner = (select oid from pg_roles where rolname = ${role})) as owns`.catch(
    () => [{ exists: false, bypass: false, owns: 0 }],
  )
  const routerOk = Boolean(router?.exists && !router.bypass && router.owns === 0)
  add(
    'router role cannot bypass RLS',
    routerOk,
    !router?.exists
      ? `role ${role} does not exist`
      : routerOk
        ? `${role}: no superuser, no BYPASSRLS, owns nothing`
        : `${role} is or acts as superuser/BYPASSRLS, or owns ${router.owns} relations`,
  )
  return findings
}

function describeRls(table: TenantTable): string {
  if (!table.rls) return 'RLS is not enabled'
  if (!table.forced) return 'RLS is enabled but not forced'
  if (table.policies === 0) return 'RLS is on but there is no policy'
  return `RLS enabled and forced, ${table.policies} ${table.policies === 1 ? 'policy' : 'policies'}`
}

async function diagnoseReplica(target: string, url: string): Promise<Finding> {
  if (!(await answers(url)))
    return { check: 'replica streaming', target, ok: false, detail: 'does not answer' }
  const [row] = await withAdmin(
    url,
    (sql) => sql<{ recovery: boolean; status: string | null }[]>`
    select pg_is_in_recovery() as recovery, (select status from pg_stat_wal_receiver) as status`,
  )
  const ok = Boolean(row?.recovery && row.status === 'streaming')
  return {
    check: 'replica streaming',
    target,
    ok,
    detail: row?.recovery
      ? `in recovery, WAL receiver ${row.status ?? 'not running'}`
      : 'not in recovery: it is a primary',
  }
}
