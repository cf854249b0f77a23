import { createHash, randomBytes } from 'node:crypto'
import { describe, expect } from 'vitest'
import { withDirectory } from '../src/directory/connection.ts'
import { createKey, listKeys, revokeKey, verifyKey } from '../src/directory/keys.ts'
import { addTenant } from '../src/directory/tenants.ts'
import { connect, it } from './fixtures.ts'
import { cli, newTenantId, topology } from './support.ts'

const directory = () => connect(topology().directory)
const verify = (presented: string) => withDirectory(topology(), (d) => verifyKey(d, presented))
const keyCount = async () => (await directory()`select count(*)::int as n from api_keys`)[0]?.n as number

interface CreatedJson {
  id: string
  key: string
  prefix: string
  scope: string
  tenants: string[] | null
  name: string | null
  createdAt: string
}

async function createViaCli(args: string[]): Promise<CreatedJson> {
  const result = await cli(['keys', 'create', ...args, '--json'])
  expect(result.code, result.stderr).toBe(0)
  return JSON.parse(result.stdout) as CreatedJson
}

const secretOf = (key: string) => key.slice('sy_'.length + 12 + 1)

const tenantA = newTenantId()
const tenantB = newTenantId()

it.beforeAll(async () => {
  await withDirectory(topology(), async (d) => {
    await addTenant(d, topology(), { id: tenantA, shard: 'shard-1', name: 'keys A' })
    await addTenant(d, topology(), { id: tenantB, shard: 'shard-2', name: 'keys B' })
  })
})

describe('switchyard keys', () => {
  it('creates an app key limited to tenants, shown once and stored only as a hash', async () => {
    const created = await createViaCli([
      '--scope',
      'app',
      '--tenant',
      tenantA,
      '--tenant',
      tenantB,
      '--name',
      'booking widget',
    ])
    expect(created).toMatchObject({ scope: 'app', tenants: [tenantA, tenantB], name: 'booking widget' })
    expect(created.key).toMatch(/^sy_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/)
    expect(created.key.startsWith(`sy_${created.prefix}_`)).toBe(true)

    const secret = secretOf(created.key)
    const [row] = await directory()`select * from api_keys where id = ${created.id}`
    expect(row).toMatchObject({
      prefix: created.prefix,
      scope: 'app',
      tenants: [tenantA, tenantB],
      revoked_at: null,
    })
    const stored = JSON.stringify(row)
    expect(stored).not.toContain(secret)
    expect(stored).not.toContain(created.key)
    expect(row?.secret_hash).toBe(createHash('sha256').update(secret).digest('hex'))

    expect(await verify(created.key)).toEqual({ id: created.id, scope: 'app', tenants: [tenantA, tenantB] })
  })

  it('the CLI repeats --tenant as one variadic flag too', async () => {
    const created = await createViaCli(['--scope', 'app', '--tenant', tenantA, tenantB, tenantA])
    expect(created.tenants).toEqual([tenantA, tenantB])
  })

  it('creates an admin key and an unrestricted app key (tenants null = any tenant)', async () => {
    const admin = await createViaCli(['--scope', 'admin', '--name', 'ops'])
    expect(admin).toMatchObject({ scope: 'admin', tenants: null, name: 'ops' })
    expect(await verify(admin.key)).toEqual({ id: admin.id, scope: 'admin', tenants: null })
    const app = await createViaCli(['--scope', 'app'])
    expect(app).toMatchObject({ scope: 'app', tenants: null, name: null })
    expect(await verify(app.key)).toEqual({ id: app.id, scope: 'app', tenants: null })
  })

  it('human output prints only the key on stdout and warns on stderr that it will not be shown again', async () => {
    const result = await cli(['keys', 'create', '--scope', 'admin'])
    expect(result.code, result.stderr).toBe(0)
    const key = result.stdout.trim()
    expect(key).toMatch(/^sy_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/)
    expect(result.stderr).toMatch(/will not be shown again/)
    expect(result.stderr).not.toContain(secretOf(key))
    expect(await verify(key)).toMatchObject({ scope: 'admin' })
  })

  it('verifyKey refuses a wrong secret, a malformed key and an unknown prefix', async () => {
    const created = await withDirectory(topology(), (d) => createKey(d, { scope: 'app', tenants: [tenantA] }))
    expect(await verify(created.key)).toMatchObject({ id: created.id })
    const otherSecret = randomBytes(32).toString('base64url')
    expect(await verify(`sy_${created.prefix}_${otherSecret}`)).toBeUndefined()
    const flipped = created.key.slice(0, -1) + (created.key.endsWith('A') ? 'B' : 'A')
    expect(await verify(flipped)).toBeUndefined()
    for (const malformed of [
      '',
      'sy_',
      created.prefix,
      `Bearer ${created.key}`,
      `${created.key}x`,
      created.key.slice(0, -1),
      created.key.toUpperCase(),
      created.key.replace(/^sy_/, 'sk_'),
    ]) {
      expect(await verify(malformed), malformed).toBeUndefined()
    }
    expect(await verify(`sy_${'0'.repeat(12)}_${secretOf(created.key)}`)).toBeUndefined()
  })

  it('revoke by prefix stops the key at once, is idempotent, and works by id', async () => {
    const created = await createViaCli(['--scope', 'app', '--tenant', tenantB])
    expect(await verify(created.key)).toBeDefined()

    const revoked = await cli(['keys', 'revoke', created.prefix, '--json'])
    expect(revoked.code, revoked.stderr).toBe(0)
    const first = JSON.parse(revoked.stdout) as { id: string; revokedAt: string | null }
    expect(first.id).toBe(created.id)
    expect(first.revokedAt).not.toBeNull()
    expect(await verify(created.key)).toBeUndefined()

    const again = await cli(['keys', 'revoke', created.id, '--json'])
    expect(again.code, again.stderr).toBe(0)
    expect(JSON.parse(again.stdout)).toMatchObject({ id: created.id, revokedAt: first.revokedAt })
    expect(await verify(created.key)).toBeUndefined()

    const human = await cli(['keys', 'revoke', created.prefix])
    expect(human.code, human.stderr).toBe(0)
    expect(human.stderr).toMatch(new RegExp(`key ${created.prefix} revoked at `))
  })

  it('revoking an unknown key is key_unknown; a non-key argument is invalid_input', async () => {
    const unknown = await cli(['keys', 'revoke', 'zzzzzzzzzzzz'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/^error \[key_unknown\]: key zzzzzzzzzzzz does not exist/)
    const unknownId = await withDirectory(topology(), (d) => revokeKey(d, newTenantId())).catch((e) => e)
    expect(unknownId).toMatchObject({ code: 'key_unknown' })
    const garbage = await cli(['keys', 'revoke', 'not a key'])
    expect(garbage.code).toBe(1)
    expect(garbage.stderr).toMatch(/^error \[invalid_input\]: /)
  })

  it('list shows every key with its public fields and no secret material', async () => {
    const created = await createViaCli(['--scope', 'app', '--tenant', tenantA, '--name', 'listed'])
    const listed = await cli(['keys', 'list', '--json'])
    expect(listed.code, listed.stderr).toBe(0)
    expect(listed.stdout).not.toContain(secretOf(created.key))
    const rows = JSON.parse(listed.stdout) as Record<string, unknown>[]
    expect(rows.length).toBe(await keyCount())
    for (const row of rows) {
      expect(Object.keys(row).sort()).toEqual([
        'createdAt',
        'id',
        'name',
        'prefix',
        'revokedAt',
        'scope',
        'tenants',
      ])
    }
    expect(rows.find((row) => row.id === created.id)).toMatchObject({
      prefix: created.prefix,
      scope: 'app',
      tenants: [tenantA],
      name: 'listed',
      revokedAt: null,
    })
    const [hash] = await directory()`select secret_hash from api_keys where id = ${created.id}`
    expect(listed.stdout).not.toContain(hash?.secret_hash)

    const human = await cli(['keys', 'list'])
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout).toMatch(/^id\s+prefix\s+scope\s+tenants\s+name\s+createdAt\s+revokedAt/)
    expect(human.stdout).toContain(created.prefix)
    expect(human.stdout).not.toContain(secretOf(created.key))
    expect(await withDirectory(topology(), listKeys)).toHaveLength(rows.length)
  })

  const missing = newTenantId()
  it.each([
    [['--scope', 'root'], 'invalid_input', /scope: must be "app" or "admin"/],
    [['--scope', 'app', '--tenant', 'not-a-uuid'], 'invalid_input', /tenants\.0: must be a UUID/],
    [
      ['--scope', 'app', '--tenant', '{A}', '--tenant', missing],
      'tenant_unknown',
      new RegExp(`${missing} do not exist`),
    ],
    [
      ['--scope', 'admin', '--tenant', '{A}'],
      'invalid_input',
      /tenants: only app keys may be limited to tenants/,
    ],
    [['--scope', 'app', '--name', '   '], 'invalid_input', /name/],
  ])('bad input %j → %s, nothing written', async (args, code, message) => {
    const before = await keyCount()
    const result = await cli(['keys', 'create', ...args.map((arg) => arg.replace('{A}', tenantA))])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(new RegExp(`^error \\[${code}\\]: `))
    expect(result.stderr).toMatch(message)
    expect(result.stdout).toBe('')
    expect(await keyCount()).toBe(before)
  })

  it('the unknown-tenant error names only the missing tenants', async () => {
    const before = await keyCount()
    const failure = await withDirectory(topology(), (d) =>
      createKey(d, { scope: 'app', tenants: [tenantA, missing] }),
    ).catch((e) => e)
    expect(failure).toMatchObject({ code: 'tenant_unknown', details: { tenants: [missing] } })
    expect(failure.message).not.toContain(tenantA)
    expect(await keyCount()).toBe(before)
  })

  it('create without --scope is a usage error', async () => {
    const before = await keyCount()
    const result = await cli(['keys', 'create'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/--scope/)
    expect(await keyCount()).toBe(before)
  })
})
