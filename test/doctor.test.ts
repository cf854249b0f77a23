import { describe, expect } from 'vitest'
import { connect, it } from './fixtures.ts'
import { cli, shard, topology } from './support.ts'

interface DoctorReport {
  ok: boolean
  findings: { check: string; target: string; ok: boolean; detail: string }[]
}

async function doctor(): Promise<{ code: number; report: DoctorReport }> {
  const result = await cli(['doctor', '--json'])
  return { code: result.code, report: JSON.parse(result.stdout) as DoctorReport }
}

// These tests change the shared topology's tenant schema for a moment, so they run one after another.
describe.sequential('switchyard doctor', () => {
  it('finds nothing wrong with a fresh topology', async () => {
    const { code, report } = await doctor()
    expect(report.findings.filter((f) => !f.ok)).toEqual([])
    expect(code).toBe(0)
    const checks = new Set(report.findings.map((f) => f.check))
    for (const check of [
      'wal_level',
      'replication slots',
      'replica streaming',
      'RLS enabled and forced',
      'tenant_id in primary key',
      'router role cannot bypass RLS',
      'router role cannot change its session or see other sessions',
      'RLS policies ask switchyard.current_tenant()',
      'router capability',
      'no prepared transactions',
      'schema version',
    ]) {
      expect(checks).toContain(check)
    }
  })

  it('fails on a tenant table whose RLS is enabled but not forced', async () => {
    const sql = connect(shard('shard-2').primary)
    await sql`create table doctor_unforced (tenant_id uuid, id uuid, primary key (tenant_id, id))`
    await sql`alter table doctor_unforced enable row level security`
    await sql`create policy p on doctor_unforced using (tenant_id = (select switchyard.current_tenant()))`
    try {
      const { code, report } = await doctor()
      expect(code).toBe(1)
      expect(report.findings.filter((f) => !f.ok)).toEqual([
        {
          check: 'RLS enabled and forced',
          target: 'shard-2-primary public.doctor_unforced',
          ok: false,
          detail: 'RLS is enabled but not forced',
        },
      ])
    } finally {
      await sql`drop table doctor_unforced`
    }
  })

  it('fails on a tenant table whose primary key lacks tenant_id', async () => {
    const sql = connect(shard('shard-3').primary)
    await sql`create table doctor_bad_pk (id uuid primary key, tenant_id uuid not null)`
    await sql`alter table doctor_bad_pk enable row level security, force row level security`
    await sql`create policy p on doctor_bad_pk using (tenant_id = (select switchyard.current_tenant()))`
    try {
      const { code, report } = await doctor()
      expect(code).toBe(1)
      expect(report.findings.filter((f) => !f.ok)).toEqual([
        {
          check: 'tenant_id in primary key',
          target: 'shard-3-primary public.doctor_bad_pk',
          ok: false,
          detail: 'primary key (id)',
        },
      ])
    } finally {
      await sql`drop table doctor_bad_pk`
    }
  })

  it('fails on a tenant table whose policy trusts a setting anyone can set', async () => {
    const sql = connect(shard('shard-2').primary)
    await sql`create table doctor_forgeable (tenant_id uuid, id uuid, primary key (tenant_id, id))`
    await sql`alter table doctor_forgeable enable row level security, force row level security`
    await sql`create policy mine on doctor_forgeable using (tenant_id = (select switchyard.current_tenant()))`
    await sql`create policy legacy on doctor_forgeable using (tenant_id = nullif(current_setting('app.current_tenant', true), '')::uuid)`
    try {
      const { code, report } = await doctor()
      expect(code).toBe(1)
      expect(report.findings.filter((f) => !f.ok)).toEqual([
        {
          check: 'RLS policies ask switchyard.current_tenant()',
          target: 'shard-2-primary public.doctor_forgeable',
          ok: false,
          detail:
            'policy legacy does not compare with (select switchyard.current_tenant()) or reads a setting anyone can set',
        },
      ])
    } finally {
      await sql`drop table doctor_forgeable`
    }
  })

  it('fails when the router role may change its session, and migrate takes it back', async () => {
    const sql = connect(shard('shard-1').primary)
    const role = topology().router.role.name
    await sql.unsafe(`grant temporary on database app to ${role}`)
    await sql.unsafe(`grant execute on function pg_catalog.set_config(text, text, boolean) to ${role}`)
    await sql.unsafe(`alter role ${role} set synchronous_commit = off`)
    await sql.unsafe(`alter role ${role} in database app set "DateStyle" = 'German'`)
    // Only a superuser may set these: the operator's, neither flagged nor taken back.
    await sql.unsafe(`alter role ${role} set temp_file_limit = '8GB'`)
    await sql.unsafe(`alter role ${role} in database app set dynamic_library_path = '$libdir'`)
    const settings = async () => {
      const rows = await sql<{ setting: string }[]>`
        select c as setting from pg_db_role_setting s, unnest(s.setconfig) c
        where s.setrole = (select oid from pg_roles where rolname = ${role})`
      return rows.map((row) => row.setting).sort()
    }
    try {
      const { code, report } = await doctor()
      expect(code).toBe(1)
      expect(report.findings.filter((f) => !f.ok)).toEqual([
        {
          check: 'router role cannot change its session or see other sessions',
          target: 'shard-1-primary',
          ok: false,
          detail: `${role} has TEMPORARY on the database, set_config(), session defaults (ALTER ROLE … SET synchronous_commit, DateStyle) (run \`switchyard migrate\`)`,
        },
      ])
      // migrate takes back what it owns: TEMPORARY and role defaults; set_config is the core migration's.
      await sql.unsafe(`revoke execute on function pg_catalog.set_config(text, text, boolean) from ${role}`)
      expect((await cli(['migrate'])).code).toBe(0)
      expect(await settings()).toEqual(['dynamic_library_path=$libdir', 'temp_file_limit=8GB'])
      const { code: after, report: fixed } = await doctor()
      expect(fixed.findings.filter((f) => !f.ok)).toEqual([])
      expect(after).toBe(0)
    } finally {
      await sql.unsafe(`revoke execute on function pg_catalog.set_config(text, text, boolean) from ${role}`)
      await sql.unsafe(`alter role ${role} reset all`)
      await sql.unsafe(`alter role ${role} in database app reset all`)
      await sql.unsafe(`revoke temporary on database app from ${role}`)
    }
    expect(await settings()).toEqual([])
  })

  it('fails when the router role may run XPath or currtid2 (revoked from PUBLIC by shard migration 0006)', async () => {
    const sql = connect(shard('shard-3').primary)
    const role = topology().router.role.name
    await sql`grant execute on function pg_catalog.xpath(text, xml) to public`
    await sql.unsafe(`grant execute on function pg_catalog.currtid2(text, tid) to ${role}`)
    try {
      const { code, report } = await doctor()
      expect(code).toBe(1)
      expect(report.findings.filter((f) => !f.ok)).toEqual([
        {
          check: 'router role cannot change its session or see other sessions',
          target: 'shard-3-primary',
          ok: false,
          detail: `${role} has currtid2(), xpath() (run \`switchyard migrate\`)`,
        },
      ])
    } finally {
      await sql`revoke execute on function pg_catalog.xpath(text, xml) from public`
      await sql.unsafe(`revoke execute on function pg_catalog.currtid2(text, tid) from ${role}`)
    }
    const names = await sql<{ fn: string }[]>`
      select f::text as fn from switchyard.revoked_catalog_functions() f
      where f::text ~ '^(xpath|xpath_exists|"?xmlexists"?|currtid2)[(]'`
    expect(names.map((row) => row.fn).sort()).toEqual([
      '"xmlexists"(text,xml)',
      'currtid2(text,tid)',
      'xpath(text,xml)',
      'xpath(text,xml,text[])',
      'xpath_exists(text,xml)',
      'xpath_exists(text,xml,text[])',
    ])
    for (const { fn } of names) {
      const [row] = await sql<{ public: boolean; router: boolean }[]>`
        select has_function_privilege('public', ${fn}::regprocedure, 'EXECUTE') as public,
               has_function_privilege(${role}::text, ${fn}::regprocedure, 'EXECUTE') as router`
      expect({ fn, ...row }).toEqual({ fn, public: false, router: false })
    }
  })

  it('fails when a replica is not streaming (unreachable)', async () => {
    const result = await cli(['doctor', '--json'], {
      SWITCHYARD_SHARDS: JSON.stringify([
        { ...shard('shard-1'), replicas: ['postgres://switchyard:switchyard@127.0.0.1:1/app'] },
      ]),
    })
    const report = JSON.parse(result.stdout) as DoctorReport
    expect(result.code).toBe(1)
    expect(report.findings.filter((f) => !f.ok)).toEqual([
      { check: 'replica streaming', target: 'shard-1-replica-1', ok: false, detail: 'does not answer' },
    ])
  })
})
