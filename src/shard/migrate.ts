import type { Topology } from '../config/topology.ts'
import { type Sql, withAdmin } from './connection.ts'
import { applyMigrations, CORE_MIGRATIONS, latestTag, type MigrationSet } from './migrations.ts'

export const tenantMigrations = (topology: Topology): MigrationSet => ({
  folder: topology.tenantSchema.migrations,
  table: 'tenant_schema',
})

/** The version every shard must run: the last core migration and the last tenant-schema migration. */
export function expectedShardVersion(topology: Topology): string {
  return `${latestTag(CORE_MIGRATIONS)}+${latestTag(tenantMigrations(topology))}`
}

export interface ShardMigration {
  shard: string
  applied: number
  version: string
}

/** Brings one shard primary to the expected version: core schema, tenant schema, router role and grants. */
export async function migrateShard(
  topology: Topology,
  shardId: string,
  primaryUrl: string,
): Promise<ShardMigration> {
  return withAdmin(primaryUrl, async (sql) => {
    const core = await applyMigrations(sql, CORE_MIGRATIONS)
    // Unqualified names in the tenant schema's migrations land in its first schema.
    await sql.unsafe(`set search_path to ${topology.tenantSchema.schemas.map(quoteIdent).join(', ')}`)
    const applied = core + (await applyMigrations(sql, tenantMigrations(topology)))
    await ensureRouterRole(sql, topology, primaryUrl)
    await grantRouter(sql, topology)
    const version = expectedShardVersion(topology)
    await sql`
      insert into switchyard.schema_version (id, version) values (1, ${version})
      on conflict (id) do update set version = excluded.version, applied_at = now()
      where schema_version.version is distinct from excluded.version`
    return { shard: shardId, applied, version }
  })
}

/**
 * The router's role may log in and nothing more: not superuser, not BYPASSRLS, owns nothing. Its
 * password is only reset when logging in with the configured one fails, so a rerun changes nothing.
 */
async function ensureRouterRole(sql: Sql, topology: Topology, primaryUrl: string): Promise<void> {
  const { name, password } = topology.router.role
  const [role] = await sql<
    {
      rolsuper: boolean
      rolbypassrls: boolean
      rolcreaterole: boolean
      rolcreatedb: boolean
      rolreplication: boolean
    }[]
  >`
    select rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication from pg_roles where rolname = ${name}`
  if (!role) {
    await sql.unsafe(
      `create role ${quoteIdent(name)} login password ${quoteLiteral(password)} nosuperuser nobypassrls nocreatedb nocreaterole noreplication`,
    )
    return
  }
  if (role.rolsuper || role.rolbypassrls || role.rolcreaterole || role.rolcreatedb || role.rolreplication) {
    await sql.unsafe(
      `alter role ${quoteIdent(name)} nosuperuser nobypassrls nocreatedb nocreaterole noreplication`,
    )
  }
  if (!(await canLogIn(primaryUrl, name, password))) {
    await sql.unsafe(`alter role ${quoteIdent(name)} login password ${quoteLiteral(password)}`)
  }
}

async function canLogIn(primaryUrl: string, user: string, password: string): Promise<boolean> {
  const url = new URL(primaryUrl)
  url.username = encodeURIComponent(user)
  url.password = encodeURIComponent(password)
  try {
    return await withAdmin(url.toString(), async (sql) => {
      await sql`select 1`
      return true
    })
  } catch {
    return false
  }
}

/** DML on tenant tables and EXECUTE on enter(): nothing else. GRANT is idempotent. */
async function grantRouter(sql: Sql, topology: Topology): Promise<void> {
  const role = quoteIdent(topology.router.role.name)
  const [db] = await sql<{ name: string }[]>`select current_database() as name`
  await sql.unsafe(`grant connect on database ${quoteIdent(db?.name ?? '')} to ${role}`)
  for (const schema of topology.tenantSchema.schemas.map(quoteIdent)) {
    await sql.unsafe(`grant usage on schema ${schema} to ${role}`)
    await sql.unsafe(`grant select, insert, update, delete on all tables in schema ${schema} to ${role}`)
    await sql.unsafe(
      `alter default privileges in schema ${schema} grant select, insert, update, delete on tables to ${role}`,
    )
  }
  await sql.unsafe(`grant usage on schema switchyard to ${role}`)
  await sql.unsafe(`grant execute on function switchyard.enter(uuid, integer, boolean, jsonb) to ${role}`)
}

export const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`
export const quoteLiteral = (value: string) => `'${value.replaceAll("'", "''")}'`
