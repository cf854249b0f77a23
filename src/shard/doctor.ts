import { createHash } from 'node:crypto'
import type { Topology } from '../config/topology.ts'
import { answers, type Sql, withAdmin } from './connection.ts'
import { partitionFindings } from './doctor-partitions.ts'
import { expectedShardVersion } from './migrate.ts'
import { primaryName, replicaName } from './nodes.ts'
import { type PartitionedTable, partitionLayout } from './partitions.ts'
import { ROUTER_OWN_SETTINGS } from './role-settings.ts'
import { type TenantTable, tenantTables } from './tables.ts'

export interface Finding {
  check: string
  target: string
  ok: boolean
  detail: string
}

/** Minimums a shard needs for replicas plus concurrent moves (a slot and a WAL sender each). */
const MIN_SLOTS = 10

/**
 * Checks that a topology is fit to route and move tenants. Every problem is a finding, never a throw.
 * `capability` is the directory's router capability, when the caller could read it: each shard must
 * hold its hash, or no router can enter a tenant there.
 */
export async function diagnose(topology: Topology, capability?: string): Promise<Finding[]> {
  const findings: Finding[] = []
  const directoryUp = await answers(topology.directory)
  findings.push({
    check: 'reachable',
    target: 'directory',
    ok: directoryUp,
    detail: directoryUp ? 'answers' : 'does not answer',
  })
  const expected = expectedShardVersion(topology)
  const layouts = new Map<string, PartitionedTable[]>()
  for (const shard of topology.shards) {
    const target = primaryName(shard.id)
    if (!(await answers(shard.primary))) {
      findings.push({ check: 'reachable', target, ok: false, detail: 'does not answer' })
      continue
    }
    findings.push(
      ...(await withAdmin(shard.primary, async (sql) => {
        layouts.set(shard.id, await partitionLayout(sql, topology.tenantSchema.schemas, true))
        return diagnosePrimary(sql, topology, target, expected, capability)
      })),
    )
    for (const [index, replica] of shard.replicas.entries()) {
      findings.push(await diagnoseReplica(replicaName(shard.id, index), replica))
    }
  }
  findings.push(...partitionFindings(layouts, topology.router.partitionMonthsAhead))
  return findings
}

async function diagnosePrimary(
  sql: Sql,
  topology: Topology,
  target: string,
  expected: string,
  capability: string | undefined,
): Promise<Finding[]> {
  const findings: Finding[] = []
  const add = (check: string, ok: boolean, detail: string, on = target) =>
    findings.push({ check, target: on, ok, detail })
  const [settings] = await sql<
    { wal_level: string; slots: number; senders: number; used: number; prepared: number }[]
  >`
    select current_setting('wal_level') as wal_level,
           current_setting('max_prepared_transactions')::int as prepared,
           current_setting('max_replication_slots')::int as slots,
           current_setting('max_wal_senders')::int as senders,
           (select count(*)::int from pg_replication_slots) as used`
  if (!settings) return findings
  add('wal_level', settings.wal_level === 'logical', `wal_level=${settings.wal_level} (moves need logical)`)
  // A prepared transaction outlives its session and holds its locks (a tenant's fence lock among them)
  // until an operator ends it: no SQL that reaches a shard may make one.
  add(
    'no prepared transactions',
    settings.prepared === 0,
    `max_prepared_transactions=${settings.prepared}${settings.prepared === 0 ? '' : " (PREPARE TRANSACTION could hold a tenant's locks forever: set it to 0)"}`,
  )
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

  const unverified = await policiesWithoutVerifiedTenant(sql, topology.tenantSchema.schemas)
  for (const table of await tenantTables(sql, topology.tenantSchema.schemas)) {
    const on = `${target} ${table.name}`
    add('RLS enabled and forced', table.rls && table.forced && table.policies > 0, describeRls(table), on)
    const loose = unverified.get(table.name)
    add(
      'RLS policies ask switchyard.current_tenant()',
      !loose,
      loose
        ? `policy ${loose.join(', ')} does not compare with (select switchyard.current_tenant()) or reads a setting anyone can set`
        : 'every permissive policy compares with the verified tenant',
      on,
    )
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
  if (router?.exists) {
    const excess = await routerExcessPrivileges(sql, role)
    add(
      'router role cannot change its session or see other sessions',
      excess.length === 0,
      excess.length === 0
        ? `${role}: no set_config, pg_settings updates, advisory locks, signals, XPath, currtid, temporary objects, CREATE, activity or statistics views, session defaults of its own or memberships`
        : `${role} has ${excess.join(', ')} (run \`switchyard migrate\`)`,
    )
  }
  add('router capability', ...(await capabilityFinding(sql, capability)))
  return findings
}

/** Tenant tables whose permissive policies do not all ask the shard's verified tenant, with those policies. */
async function policiesWithoutVerifiedTenant(sql: Sql, schemas: string[]): Promise<Map<string, string[]>> {
  const rows = await sql<{ name: string; policy: string }[]>`
    select format('%I.%I', n.nspname, c.relname) as name, p.polname as policy
    from pg_policy p join pg_class c on c.oid = p.polrelid join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = any(${schemas}) and p.polpermissive
      and not (coalesce(pg_get_expr(p.polqual, p.polrelid), 'switchyard.current_tenant()') like '%switchyard.current_tenant()%'
               and coalesce(pg_get_expr(p.polwithcheck, p.polrelid), 'switchyard.current_tenant()') like '%switchyard.current_tenant()%'
               and coalesce(pg_get_expr(p.polqual, p.polrelid), '') not like '%current_setting(%'
               and coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') not like '%current_setting(%')`
  const found = new Map<string, string[]>()
  for (const row of rows) found.set(row.name, [...(found.get(row.name) ?? []), row.policy])
  return found
}

/**
 * What the router's role must not be able to do (shard migrations 0004 and 0006 and `migrate` take it
 * away): each would let SQL run as that role change its pooled session, reach other sessions, see their
 * SQL, run what ignores a cancel, or read past RLS. The functions are the shard's own list
 * (switchyard.revoked_catalog_functions(), the one 0006 revokes), named once per name, not per overload.
 */
async function routerExcessPrivileges(sql: Sql, role: string): Promise<string[]> {
  const [row] = await sql<
    { database: string[]; views: string[]; schemas: string[]; memberships: string[] }[]
  >`
    with r as (select ${role}::text as name)
    select array_remove(array[
      case when has_database_privilege(r.name, current_database(), 'TEMPORARY') then 'TEMPORARY on the database' end,
      case when has_database_privilege(r.name, current_database(), 'CREATE') then 'CREATE on the database' end
    ], null) as database,
    array_remove(array[
      case when has_table_privilege(r.name, 'pg_catalog.pg_settings', 'UPDATE') then 'UPDATE on pg_settings' end,
      case when has_table_privilege(r.name, 'pg_catalog.pg_stat_activity', 'SELECT') then 'pg_stat_activity' end,
      case when has_table_privilege(r.name, 'pg_catalog.pg_locks', 'SELECT') then 'pg_locks' end,
      case when has_table_privilege(r.name, 'pg_catalog.pg_prepared_statements', 'SELECT') then 'pg_prepared_statements' end,
      -- pg_stat_statements (migrations 0004 and 0008): every tenant's SQL, run as this role
      case when has_schema_privilege(r.name, to_regnamespace('switchyard_stats'), 'USAGE') then 'USAGE on switchyard_stats' end,
      case when exists (select 1 from pg_proc p where p.pronamespace = to_regnamespace('switchyard_stats')
                        and has_function_privilege(r.name, p.oid, 'EXECUTE'))
           then 'EXECUTE on switchyard_stats functions' end
    ], null) as views,
    coalesce((select array_agg('CREATE on schema ' || n.nspname order by n.nspname) from pg_namespace n
              where has_schema_privilege(r.name, n.oid, 'CREATE')), '{}') as schemas,
    coalesce((select array_agg('membership in ' || g.rolname order by g.rolname) from pg_auth_members m
              join pg_roles g on g.oid = m.roleid join pg_roles u on u.oid = m.member where u.rolname = r.name), '{}')
    as memberships
    from r`
  const functions = await sql<{ name: string }[]>`
    select distinct p.proname || '()' as name
    from switchyard.revoked_catalog_functions() f join pg_proc p on p.oid = f
    where has_function_privilege(${role}::text, f, 'EXECUTE')
    order by name`.then(
    (rows) => rows.map((found) => found.name),
    () => ['every function shard migration 0006 revokes (it has not run)'],
  )
  // Only the defaults it could have given itself: a superuser's (temp_file_limit) are the operator's.
  const own = await sql.unsafe<{ name: string }[]>(ROUTER_OWN_SETTINGS, [role])
  return [
    ...(row?.database ?? []),
    ...functions,
    ...(row?.views ?? []),
    ...(own.length > 0
      ? [`session defaults (ALTER ROLE … SET ${own.map((found) => found.name).join(', ')})`]
      : []),
    ...(row?.schemas ?? []),
    ...(row?.memberships ?? []),
  ]
}

async function capabilityFinding(sql: Sql, capability: string | undefined): Promise<[boolean, string]> {
  const [row] = await sql<{ hash: Buffer }[]>`
    select capability_sha256 as hash from switchyard.router_secret where id = 1`.catch(() => [])
  if (!row) return [false, 'no router capability on this shard (run `switchyard migrate`)']
  if (capability === undefined) return [true, 'present (the directory could not be read to compare)']
  const matches = createHash('sha256').update(capability, 'utf8').digest().equals(row.hash)
  return matches
    ? [true, "matches the directory's"]
    : [false, "differs from the directory's: routers cannot enter tenants here (run `switchyard migrate`)"]
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
