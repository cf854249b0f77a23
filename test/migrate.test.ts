import { describe, expect } from 'vitest'
import { migrateAll } from '../src/directory/migrate.ts'
import { connect, it } from './fixtures.ts'
import { topology } from './support.ts'

/** Everything migrate could touch on a shard, as text: relations, policies, roles, grants, versions. */
async function fingerprint(url: string): Promise<string> {
  const [row] = await connect(url)`
    select md5(string_agg(line, E'\n' order by line)) as hash from (
      select format('rel %s.%s kind=%s rls=%s force=%s acl=%s', n.nspname, c.relname, c.relkind,
                    c.relrowsecurity, c.relforcerowsecurity, c.relacl) as line
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('public', 'switchyard', 'drizzle')
      union all select format('policy %s %s', polrelid::regclass, pg_get_expr(polqual, polrelid)) from pg_policy
      union all select format('role %s %s %s %s', rolname, rolsuper, rolbypassrls, rolpassword) from pg_authid
        where rolname not like 'pg\\_%'
      union all select format('version %s %s', version, applied_at) from switchyard.schema_version
      union all select format('migration %s %s', id, created_at) from drizzle.switchyard_shard
      union all select format('tenant-migration %s %s', id, created_at) from drizzle.tenant_schema
      union all select format('proc %s %s', p.oid::regprocedure, p.proacl) from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace where n.nspname = 'switchyard'
    ) lines`
  return row?.hash as string
}

describe('switchyard migrate', () => {
  it('a second run applies nothing and changes nothing', async () => {
    const urls = topology().shards.map((s) => s.primary)
    const before = await Promise.all(urls.map(fingerprint))
    const directoryBefore = await connect(
      topology().directory,
    )`select id, capacity, state, schema_version, updated_at from shards order by id`
    const second = await migrateAll(topology())
    expect(second.directory).toBe(0)
    expect(second.shards.map((s) => s.applied)).toEqual([0, 0, 0])
    expect(await Promise.all(urls.map(fingerprint))).toEqual(before)
    const directoryAfter = await connect(
      topology().directory,
    )`select id, capacity, state, schema_version, updated_at from shards order by id`
    expect(directoryAfter).toEqual(directoryBefore)
  })

  it('records the same schema version on every shard and in the directory', async () => {
    const versions = await connect(topology().directory)`select id, schema_version from shards order by id`
    expect(versions.map((v) => v.id)).toEqual(['shard-1', 'shard-2', 'shard-3'])
    expect(new Set(versions.map((v) => v.schema_version)).size).toBe(1)
    expect(versions[0]?.schema_version).toMatch(/^\d{4}_\w+\+\d{4}_\w+$/)
  })

  it('names exactly the shard that failed', async () => {
    const broken = structuredClone(topology())
    const second = broken.shards[1]
    if (!second) throw new Error('missing shard')
    second.primary = second.primary.replace(/:(\d+)\//, ':1/')
    const failure = await migrateAll(broken).catch((error) => error)
    expect(failure).toMatchObject({ code: 'migrate_failed' })
    expect(failure.message).toContain('shard-2')
    expect(failure.message).not.toContain('shard-1')
    expect(failure.message).not.toContain('shard-3')
    expect(failure.details.failed).toHaveLength(1)
  })
})
