import { describe, expect } from 'vitest'
import { withDirectory } from '../src/directory/connection.ts'
import { addTenant } from '../src/directory/tenants.ts'
import { connect, it } from './fixtures.ts'
import { cli, newTenantId, shard, topology } from './support.ts'

const directory = () => connect(topology().directory)

/** Where a tenant is written: its directory row and every shard's ownership row. */
async function footprint(id: string) {
  const [row] = await directory()`select shard_id, epoch, state from tenants where id = ${id}`
  const owners: string[] = []
  for (const s of topology().shards) {
    const [owned] = await connect(
      s.primary,
    )`select state from switchyard.tenant_ownership where tenant_id = ${id}`
    if (owned) owners.push(`${s.id}:${owned.state}`)
  }
  return { directory: row ?? null, owners }
}

describe('switchyard tenants', () => {
  it('add writes the directory row and the shard ownership row; show and list report it', async () => {
    const id = newTenantId()
    const added = await cli([
      'tenants',
      'add',
      id,
      '--shard',
      'shard-2',
      '--name',
      'Peluquería Centro',
      '--json',
    ])
    expect(added.code, added.stderr).toBe(0)
    expect(JSON.parse(added.stdout)).toMatchObject({
      id,
      name: 'Peluquería Centro',
      shardId: 'shard-2',
      epoch: 1,
      state: 'active',
    })
    expect(await footprint(id)).toEqual({
      directory: { shard_id: 'shard-2', epoch: 1, state: 'active' },
      owners: ['shard-2:owner'],
    })
    const shown = await cli(['tenants', 'show', id, '--json'])
    expect(JSON.parse(shown.stdout)).toMatchObject({
      id,
      shardId: 'shard-2',
      ownership: { state: 'owner', epoch: 1 },
    })
    const listed = await cli(['tenants', 'list', '--json'])
    expect((JSON.parse(listed.stdout) as { id: string }[]).map((t) => t.id)).toContain(id)
  })

  it.each([
    [['tenants', 'add', 'not-a-uuid', '--shard', 'shard-1'], 'invalid_input', /must be a UUID/],
    [['tenants', 'add', '{id}', '--shard', 'shard-9'], 'shard_unknown', /shard-9/],
    [['tenants', 'add', '{id}', '--shard', 'Shard 1'], 'invalid_input', /shard/],
    [['tenants', 'add', '{id}', '--shard', 'shard-1', '--name', '   '], 'invalid_input', /name/],
  ])('bad input %j → %s, nothing written', async (args, code, message) => {
    const id = newTenantId()
    const result = await cli(args.map((arg) => arg.replace('{id}', id)))
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(new RegExp(`^error \\[${code}\\]: `))
    expect(result.stderr).toMatch(message)
    expect(await footprint(id)).toEqual({ directory: null, owners: [] })
  })

  it('add without --shard places the tenant on an active shard with room', async () => {
    const id = newTenantId()
    const result = await cli(['tenants', 'add', id, '--json'])
    expect(result.code, result.stderr).toBe(0)
    const placed = JSON.parse(result.stdout).shardId as string
    expect(['shard-1', 'shard-2', 'shard-3']).toContain(placed)
    expect(await footprint(id)).toEqual({
      directory: { shard_id: placed, epoch: 1, state: 'active' },
      owners: [`${placed}:owner`],
    })
  })

  it('a duplicate tenant is refused and the first one is left as it was', async () => {
    const id = newTenantId()
    await withDirectory(topology(), (d) => addTenant(d, topology(), { id, shard: 'shard-1', name: 'first' }))
    const again = await cli(['tenants', 'add', id, '--shard', 'shard-2'])
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/^error \[tenant_exists\]/)
    expect(await footprint(id)).toEqual({
      directory: { shard_id: 'shard-1', epoch: 1, state: 'active' },
      owners: ['shard-1:owner'],
    })
  })

  it('a full shard is refused, nothing written', async () => {
    const [fill] = await directory()`select count(*)::int as used from tenants where shard_id = 'shard-3'`
    await directory()`update shards set capacity = ${Math.max(1, fill?.used ?? 0)} where id = 'shard-3'`
    try {
      if ((fill?.used ?? 0) === 0) {
        await withDirectory(topology(), (d) =>
          addTenant(d, topology(), { id: newTenantId(), shard: 'shard-3' }),
        )
      }
      const id = newTenantId()
      const result = await cli(['tenants', 'add', id, '--shard', 'shard-3'])
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(/^error \[shard_full\]: shard "shard-3" is full/)
      expect(await footprint(id)).toEqual({ directory: null, owners: [] })
    } finally {
      await directory()`update shards set capacity = 100 where id = 'shard-3'`
    }
  })

  it('a shard that cannot be written leaves no directory row either', async () => {
    const id = newTenantId()
    const broken = structuredClone(topology())
    const target = broken.shards.find((s) => s.id === 'shard-1')
    if (!target) throw new Error('missing shard')
    target.primary = target.primary.replace(/:(\d+)\//, ':1/')
    const failure = await withDirectory(broken, (d) => addTenant(d, broken, { id, shard: 'shard-1' })).catch(
      (e) => e,
    )
    expect(failure).toMatchObject({ code: 'shard_unavailable' })
    expect(await footprint(id)).toEqual({ directory: null, owners: [] })
  })

  it('concurrent adds never overfill a shard', async () => {
    const [fill] = await directory()`select count(*)::int as used from tenants where shard_id = 'shard-2'`
    const used = fill?.used ?? 0
    await directory()`update shards set capacity = ${used + 3} where id = 'shard-2'`
    try {
      const outcomes = await withDirectory(topology(), (d) =>
        Promise.allSettled(
          Array.from({ length: 8 }, () => addTenant(d, topology(), { id: newTenantId(), shard: 'shard-2' })),
        ),
      )
      expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(3)
      const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected')
      expect(refused.map((o) => o.reason.code)).toEqual(Array(5).fill('shard_full'))
      const [after] = await directory()`select count(*)::int as used from tenants where shard_id = 'shard-2'`
      expect(after?.used).toBe(used + 3)
      const [owned] = await connect(
        shard('shard-2').primary,
      )`select count(*)::int as n from switchyard.tenant_ownership`
      expect(owned?.n).toBe(used + 3)
    } finally {
      await directory()`update shards set capacity = 100 where id = 'shard-2'`
    }
  })
})
