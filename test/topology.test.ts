import { describe, expect } from 'vitest'
import { connect, it } from './fixtures.ts'
import { asRouter, cli, eventually, topology } from './support.ts'

describe('the shared test topology', () => {
  it.each([0, 1, 2])('shard %i: a row written on the primary appears on its replica', async (index) => {
    const shard = topology().shards[index]
    if (!shard) throw new Error('missing shard')
    const primary = connect(shard.primary)
    const replica = connect(shard.replicas[0] as string)
    const marker = `replicated-${shard.id}-${Date.now()}`
    // Outside the tenant schemas, so `doctor` in a parallel test file never sees it.
    await primary`create schema if not exists replication_probe`
    await primary`create table if not exists replication_probe.markers (marker text primary key)`
    await primary`insert into replication_probe.markers values (${marker})`
    const seen = await eventually(async () => {
      const rows = await replica`select marker from replication_probe.markers where marker = ${marker}`.catch(
        () => [],
      )
      return rows.length ? rows[0]?.marker : undefined
    })
    expect(seen).toBe(marker)
  })

  it('replicas are in recovery and streaming; primaries are not', async () => {
    for (const shard of topology().shards) {
      const [primary] = await connect(shard.primary)`select pg_is_in_recovery() as recovery`
      expect(primary?.recovery).toBe(false)
      const [replica] = await connect(shard.replicas[0] as string)`
        select pg_is_in_recovery() as recovery, (select status from pg_stat_wal_receiver) as status`
      expect(replica).toEqual({ recovery: true, status: 'streaming' })
    }
  })

  it('primaries run wal_level=logical with pg_stat_statements loaded', async () => {
    for (const shard of topology().shards) {
      const [row] = await connect(shard.primary)`
        select current_setting('wal_level') as wal_level, current_setting('shared_preload_libraries') as preload`
      expect(row).toEqual({ wal_level: 'logical', preload: 'pg_stat_statements' })
    }
  })

  it('the router role is not superuser, not BYPASSRLS and owns nothing', async () => {
    const role = topology().router.role.name
    for (const shard of topology().shards) {
      const sql = connect(asRouter(shard.primary))
      const [me] = await sql`
        select r.rolsuper, r.rolbypassrls,
               (select count(*)::int from pg_class c where c.relowner = r.oid) as owns
        from pg_roles r where r.rolname = current_user`
      expect(me).toEqual({ rolsuper: false, rolbypassrls: false, owns: 0 })
      expect((await sql`select current_user as who`)[0]?.who).toBe(role)
    }
  })

  it('cluster status --json lists every node, up, with replica lag', async () => {
    const result = await cli(['cluster', 'status', '--json'])
    expect(result.code, result.stderr).toBe(0)
    const { nodes } = JSON.parse(result.stdout) as {
      nodes: { name: string; role: string; shard?: string; url: string; up: boolean; lagBytes?: number }[]
    }
    expect(nodes.map((node) => `${node.name}:${node.role}`)).toEqual([
      'directory:directory',
      'shard-1-primary:primary',
      'shard-1-replica-1:replica',
      'shard-2-primary:primary',
      'shard-2-replica-1:replica',
      'shard-3-primary:primary',
      'shard-3-replica-1:replica',
      'redis:redis',
    ])
    expect(nodes.every((node) => node.up)).toBe(true)
    for (const node of nodes.filter((n) => n.role === 'replica')) {
      expect(node.shard).toMatch(/^shard-\d$/)
      expect(node.lagBytes).toBeGreaterThanOrEqual(0)
    }
    expect(nodes.find((n) => n.role === 'redis')?.url).toBe(topology().redis)
    expect(nodes.find((n) => n.role === 'directory')?.url).toBe(topology().directory)
  })
})
