import { createHash, randomBytes } from 'node:crypto'
import type { Topology } from '../config/topology.ts'
import { type Sql, withAdmin } from './connection.ts'
import { applyMigrations, CORE_MIGRATIONS, latestTag, type MigrationSet } from './migrations.ts'
import { ROUTER_OWN_SETTINGS, resetRoleSetting } from './role-settings.ts'

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

/**
 * Brings one shard primary to the expected version: core schema, tenant schema, router role and grants,
 * and the secrets `switchyard.enter()` checks (the router capability's hash, the context MAC key).
 */
export async function migrateShard(
  topology: Topology,
  shardId: string,
  primaryUrl: string,
  capability: string,
): Promise<ShardMigration> {
  return withAdmin(primaryUrl, async (sql) => {
    const core = await applyMigrations(sql, CORE_MIGRATIONS)
    // Unqualified names in the tenant schema's migrations land in its first schema.
    await sql.unsafe(`set search_path to ${topology.tenantSchema.schemas.map(quoteIdent).join(', ')}`)
    const applied = core + (await applyMigrations(sql, tenantMigrations(topology)))
    await storeRouterSecret(sql, capability)
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
 * The capability's SHA-256 (updated when the directory's capability changes) and, made once per shard
 * and kept across reruns, HMAC-SHA-256's two padded keys for the tenant context (key XOR ipad, key XOR
 * opad: the shard then computes an HMAC with two sha256() calls and no extension).
 */
async function storeRouterSecret(sql: Sql, capability: string): Promise<void> {
  const key = randomBytes(32)
  const pad = (byte: number) => Buffer.from(Array.from({ length: 64 }, (_, i) => (key[i] ?? 0) ^ byte))
  const hash = createHash('sha256').update(capability, 'utf8').digest()
  await sql`
    insert into switchyard.router_secret (id, capability_sha256, hmac_inner, hmac_outer)
    values (1, ${hash}, ${pad(0x36)}, ${pad(0x5c)})
    on conflict (id) do update set capability_sha256 = excluded.capability_sha256
    where router_secret.capability_sha256 is distinct from excluded.capability_sha256`
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
  // Any role may give itself session defaults (ALTER ROLE … SET) that every new session of it starts
  // with and RESET ALL returns to: those go. Ones only a superuser could set (temp_file_limit) are the
  // operator's and stay. A membership would let it SET ROLE to another role's rights.
  const [db] = await sql<{ name: string }[]>`select current_database() as name`
  const own = await sql.unsafe<{ name: string; in_database: boolean }[]>(ROUTER_OWN_SETTINGS, [name])
  for (const setting of own) {
    await sql.unsafe(
      resetRoleSetting(quoteIdent(name), db?.name ?? '', {
        name: setting.name,
        inDatabase: setting.in_database,
      }),
    )
  }
  const memberships = await sql<{ role: string }[]>`
    select r.rolname as role from pg_auth_members m
    join pg_roles r on r.oid = m.roleid join pg_roles u on u.oid = m.member
    where u.rolname = ${name}`
  for (const { role } of memberships) await sql.unsafe(`revoke ${quoteIdent(role)} from ${quoteIdent(name)}`)
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

/**
 * DML on tenant tables, EXECUTE on enter(), current_tenant() (RLS policies call it as the querying role)
 * and the Idempotency-Key functions: nothing else. No temporary objects and no CREATE anywhere: either would let it make functions
 * whose SET clauses change its session. GRANT and REVOKE are idempotent.
 */
async function grantRouter(sql: Sql, topology: Topology): Promise<void> {
  const role = quoteIdent(topology.router.role.name)
  const [db] = await sql<{ name: string }[]>`select current_database() as name`
  const database = quoteIdent(db?.name ?? '')
  await sql.unsafe(`grant connect on database ${database} to ${role}`)
  await sql.unsafe(`revoke temporary, create on database ${database} from public, ${role}`)
  for (const schema of topology.tenantSchema.schemas.map(quoteIdent)) {
    await sql.unsafe(`revoke create on schema ${schema} from public, ${role}`)
    await sql.unsafe(`grant usage on schema ${schema} to ${role}`)
    await sql.unsafe(`grant select, insert, update, delete on all tables in schema ${schema} to ${role}`)
    await sql.unsafe(
      `alter default privileges in schema ${schema} grant select, insert, update, delete on tables to ${role}`,
    )
  }
  // pg_stat_statements (migrations 0004 and 0008): every tenant's SQL, as this role ran it. Again on every
  // run, so a grant made by hand (or by an extension update) goes, as `doctor` asks.
  for (const kind of ['schema', 'all tables in schema', 'all functions in schema'])
    await sql.unsafe(`revoke all on ${kind} switchyard_stats from public, ${role}`)
  await sql.unsafe(`grant usage on schema switchyard to ${role}`)
  await sql.unsafe(
    `grant execute on function switchyard.enter(uuid, integer, boolean, jsonb, text), switchyard.current_tenant(),
       switchyard.claim_idempotency_key(text, text, integer), switchyard.keep_idempotent_results(text, jsonb),
       switchyard.idempotent_results(text) to ${role}`,
  )
}

export const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`
export const quoteLiteral = (value: string) => `'${value.replaceAll("'", "''")}'`
