import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { connect as tcpConnect } from 'node:net'
import path from 'node:path'
import { promisify } from 'node:util'
import { Pool as NeonPool, neonConfig } from '@neondatabase/serverless'
import pg from 'pg'
import postgres from 'postgres'
import { describe, expect, inject } from 'vitest'
import WebSocket from 'ws'
import { localCaFile, tlsDir } from '../src/cluster/tls.ts'
import { revokeKey } from '../src/directory/keys.ts'
import type { RunningRouter } from '../src/router/server.ts'
import { it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { topology } from './support.ts'

/**
 * The router's PostgreSQL front end (issue 15) with unmodified clients: psql, node-postgres and
 * postgres.js log in as a tenant (user = tenant id, password = an API key, SCRAM-SHA-256) and run
 * the example schema's statements; bad logins and bad bytes are refused without hurting anyone else.
 */

const run = promisify(execFile)

let router: RunningRouter
let tenant: TestTenant
let other: TestTenant

it.beforeAll(async () => {
  router = await startTestRouter()
  tenant = await tenantWithKey('shard-1')
  other = await tenantWithKey('shard-2')
})

const pgClient = (who: TestTenant, password = who.key, through = router) =>
  new pg.Client({
    host: '127.0.0.1',
    port: through.pgPort as number,
    user: who.id,
    password,
    database: 'switchyard',
    application_name: 'router-postgres-test',
  })

const jsClient = (who: TestTenant, max = 1) =>
  postgres({
    host: '127.0.0.1',
    port: router.pgPort as number,
    username: who.id,
    password: who.key,
    database: 'switchyard',
    max,
    onnotice: () => {},
  })

async function psql(who: TestTenant, sql: string, password = who.key) {
  return run(
    'psql',
    [
      '-X',
      '-A',
      '-t',
      '-v',
      'ON_ERROR_STOP=1',
      '-h',
      '127.0.0.1',
      '-p',
      String(router.pgPort),
      '-U',
      who.id,
      '-d',
      'switchyard',
      '-c',
      sql,
    ],
    { env: { ...process.env, PGPASSWORD: password, PGSSLMODE: 'prefer', PGCONNECT_TIMEOUT: '5' } },
  )
}

describe('logging in', () => {
  it('psql: SCRAM with the API key, then queries for the tenant', async () => {
    const inserted = await psql(
      tenant,
      `insert into customers (tenant_id, name, phone) values ('${tenant.id}', 'Ana', '555-0100') returning name`,
    )
    // psql prints the command tag after a RETURNING's rows.
    expect(inserted.stdout.trim().split('\n')).toEqual(['Ana', 'INSERT 0 1'])
    const counted = await psql(tenant, 'select count(*) from customers')
    expect(Number(counted.stdout.trim())).toBeGreaterThanOrEqual(1)
  })

  it('a session whose key is revoked ends at its next statement once wireKeyRecheckMs has passed', async ({
    directory,
  }) => {
    const strict = await startTestRouter({ wireKeyRecheckMs: 200 })
    const own = await tenantWithKey('shard-1')
    const client = pgClient(own, own.key, strict)
    client.on('error', () => {})
    await client.connect()
    expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }])
    await revokeKey(directory, own.key.split('_')[1] as string)
    await new Promise((resolve) => setTimeout(resolve, 300))
    await expect(client.query('select 1 as one')).rejects.toMatchObject({ code: '28P01' })
    await client.end().catch(() => {})
  })

  it('a wrong key is 28P01; a key of another tenant too; a user that is not a tenant id is refused', async () => {
    for (const [who, password] of [
      [tenant, `${tenant.key.slice(0, -2)}xx`],
      [tenant, other.key],
    ] as const) {
      const client = pgClient(who, password)
      const error = await client.connect().then(
        () => null,
        (e: { code?: string; message: string }) => e,
      )
      expect(error?.code).toBe('28P01')
      expect(error?.message).toMatch(/password authentication failed/)
    }
    const failed = await psql({ ...tenant, id: 'not-a-tenant' }, 'select 1').catch(
      (e: { stderr: string }) => e,
    )
    expect((failed as { stderr: string }).stderr).toMatch(/tenant id/)
  })
})

describe('TLS from the client (router.pgTls)', () => {
  const pgTls = (required: boolean) => ({
    certFile: path.join(tlsDir(inject('home')), 'server.crt'),
    keyFile: path.join(tlsDir(inject('home')), 'server.key'),
    required,
  })
  const psqlWith = (through: RunningRouter, sslmode: string) =>
    run(
      'psql',
      [
        '-X',
        '-A',
        '-t',
        '-h',
        '127.0.0.1',
        '-p',
        String(through.pgPort),
        '-U',
        tenant.id,
        '-d',
        'switchyard',
      ].concat(['-c', 'select 1 as one']),
      {
        env: {
          ...process.env,
          PGPASSWORD: tenant.key,
          PGSSLMODE: sslmode,
          PGSSLROOTCERT: localCaFile(inject('home')),
          PGCONNECT_TIMEOUT: '5',
        },
      },
    )

  it("psql with sslmode verify-full logs in over TLS; node-postgres's stream is encrypted; plain text still works", async () => {
    const secure = await startTestRouter({ pgTls: pgTls(false) })
    expect((await psqlWith(secure, 'verify-full')).stdout.trim()).toBe('1')
    expect((await psqlWith(secure, 'disable')).stdout.trim()).toBe('1')
    const client = new pg.Client({
      host: '127.0.0.1',
      port: secure.pgPort as number,
      user: tenant.id,
      password: tenant.key,
      database: 'switchyard',
      ssl: { ca: readFileSync(localCaFile(inject('home'))) },
    })
    await client.connect()
    try {
      const stream = (client as unknown as { connection: { stream: { encrypted?: boolean } } }).connection
        .stream
      expect(stream.encrypted).toBe(true)
      expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }])
    } finally {
      await client.end()
    }
    // The router without pgTls declines TLS: verify-full cannot be had there.
    await expect(psqlWith(router, 'verify-full')).rejects.toMatchObject({
      stderr: expect.stringMatching(/server does not support SSL/),
    })
  })

  it('required: a client that does not start TLS is refused (28000); bytes sent after an SSLRequest close the connection', async () => {
    const strict = await startTestRouter({ pgTls: pgTls(true) })
    expect((await psqlWith(strict, 'require')).stdout.trim()).toBe('1')
    await expect(psqlWith(strict, 'disable')).rejects.toMatchObject({
      stderr: expect.stringMatching(/over TLS only/),
    })
    // Files it cannot read stop the start, with nothing left listening.
    await expect(
      startTestRouter({
        pgTls: { certFile: '/nonexistent.crt', keyFile: '/nonexistent.key', required: true },
      }),
    ).rejects.toMatchObject({
      code: 'invalid_input',
      message: expect.stringMatching(/router.pgTls: cannot use/),
    })
    // An SSLRequest with a StartupMessage right behind it (CVE-2021-23214's buffer stuffing): no 'S', closed.
    const answer = await new Promise<Buffer>((resolve) => {
      const socket = tcpConnect(strict.pgPort as number, '127.0.0.1')
      const chunks: Buffer[] = []
      socket.on('data', (chunk) => chunks.push(chunk))
      socket.on('close', () => resolve(Buffer.concat(chunks)))
      socket.on('error', () => {})
      const request = Buffer.alloc(8)
      request.writeInt32BE(8, 0)
      request.writeInt32BE(80877103, 4)
      const startup = Buffer.from('\0\0\0\x0b\0\x03\0\0x\0\0', 'latin1')
      socket.write(Buffer.concat([request, startup]))
    })
    expect(answer.length).toBe(0)
  })
})

describe('node-postgres and postgres.js', () => {
  it('node-postgres: parameterised CRUD, types round-trip, errors keep their SQLSTATE', async () => {
    const client = pgClient(tenant)
    await client.connect()
    try {
      const created = await client.query(
        'insert into customers (tenant_id, name, phone) values ($1, $2, $3) returning id, name, created_at',
        [tenant.id, 'Bea', null],
      )
      expect(created.rows[0]).toMatchObject({ name: 'Bea' })
      expect(created.rows[0].created_at).toBeInstanceOf(Date)
      const id = created.rows[0].id as string
      const types = await client.query(
        `select $1::uuid as u, $2::int as i, $3::bool as b, $4::jsonb as j, $5::numeric as n, $6::text[] as a,
                $7::timestamptz as t, null::text as z`,
        [
          id,
          42,
          true,
          JSON.stringify({ a: [1, 'x'] }),
          '12.50',
          ['x', 'y z'],
          new Date('2026-01-02T03:04:05Z'),
        ],
      )
      expect(types.rows[0]).toEqual({
        u: id,
        i: 42,
        b: true,
        j: { a: [1, 'x'] },
        n: '12.50',
        a: ['x', 'y z'],
        t: new Date('2026-01-02T03:04:05Z'),
        z: null,
      })
      const updated = await client.query('update customers set phone = $1 where id = $2', ['555-0101', id])
      expect(updated.rowCount).toBe(1)
      expect(updated.command).toBe('UPDATE')
      const named = { name: 'by-id', text: 'select name, phone from customers where id = $1', values: [id] }
      expect((await client.query(named)).rows).toEqual([{ name: 'Bea', phone: '555-0101' }])
      expect((await client.query(named)).rows).toEqual([{ name: 'Bea', phone: '555-0101' }])
      const bad = await client.query('select 1/0').catch((e: { code: string }) => e)
      expect(bad).toMatchObject({ code: '22012' })
      const refused = await client.query('select * from pg_shadow').catch((e: { code: string }) => e)
      expect(refused).toMatchObject({ code: '42501' })
      // The session goes on after errors.
      const deleted = await client.query('delete from customers where id = $1', [id])
      expect(deleted.rowCount).toBe(1)
    } finally {
      await client.end()
    }
  })

  it('postgres.js: prepared statements (Describe before Bind), arrays and json, a tenant sees only its rows', async () => {
    const sql = jsClient(tenant, 2)
    const theirs = jsClient(other, 1)
    try {
      const [row] = await sql<{ id: string; name: string }[]>`
        insert into customers (tenant_id, name) values (${tenant.id}, ${'Cy'}) returning id, name`
      expect(row?.name).toBe('Cy')
      const found = await sql<{ name: string }[]>`select name from customers where id = ${row?.id as string}`
      expect(found.map((r) => r.name)).toEqual(['Cy'])
      const [mixed] = await sql<
        { a: number[]; j: { k: string } }[]
      >`select ${[1, 2, 3]}::int[] as a, ${sql.json({ k: 'v' })}::jsonb as j`
      expect(mixed).toEqual({ a: [1, 2, 3], j: { k: 'v' } })
      // The other tenant's session cannot see the row, whatever it asks.
      expect(await theirs`select id from customers where id = ${row?.id as string}`).toHaveLength(0)
      expect((await theirs`select count(*)::int as n from customers where name = 'Cy'`)[0]?.n).toBe(0)
    } finally {
      await sql.end()
      await theirs.end()
    }
  })

  it('cursors: postgres.js reads rows in batches (Execute with a row limit), in and out of a transaction', async () => {
    const sql = jsClient(tenant, 1)
    try {
      const sizes: number[] = []
      for await (const rows of sql`select g from generate_series(1, 5) g`.cursor(2)) sizes.push(rows.length)
      expect(sizes).toEqual([2, 2, 1])
      const inBlock = await sql.begin(async (tx) => {
        const seen: number[] = []
        for await (const rows of tx`select g from generate_series(1, 7) g`.cursor(3))
          seen.push(...rows.map((row) => row.g as number))
        return seen
      })
      expect(inBlock).toEqual([1, 2, 3, 4, 5, 6, 7])
    } finally {
      await sql.end()
    }
  })

  it("a CancelRequest stops the client's own running query on the shard (57014), and only with its key", async () => {
    const sql = jsClient(tenant, 1)
    try {
      const started = Date.now()
      const sleeping = sql`select pg_sleep(30)`
      setTimeout(() => sleeping.cancel(), 300)
      const error = await sleeping.then(
        () => null,
        (e: { code?: string }) => e,
      )
      expect(error?.code).toBe('57014')
      expect(Date.now() - started).toBeLessThan(10_000)
    } finally {
      await sql.end()
    }
    // The right session's pid with a wrong key cancels nothing: the query completes.
    const client = pgClient(tenant)
    await client.connect()
    try {
      const pid = (client as unknown as { processID: number }).processID
      const sleeping = client.query('select pg_sleep(0.6) as slept')
      await new Promise((resolve) => setTimeout(resolve, 150))
      const forged = Buffer.alloc(16)
      forged.writeInt32BE(16, 0)
      forged.writeInt32BE(80877102, 4)
      forged.writeInt32BE(pid, 8)
      forged.writeInt32BE(678, 12)
      const closed = await new Promise<boolean>((resolve) => {
        const socket = tcpConnect(router.pgPort as number, '127.0.0.1')
        socket.resume()
        socket.on('close', () => resolve(true))
        socket.on('error', () => {})
        socket.write(forged)
      })
      expect(closed).toBe(true)
      expect((await sleeping).rows).toEqual([{ slept: '' }])
    } finally {
      await client.end()
    }
  })

  it('what drivers send at startup is answered in the session, and SET stays in it', async () => {
    const client = pgClient(tenant)
    await client.connect()
    try {
      await client.query('SET application_name = $$mine$$')
      expect((await client.query('SHOW application_name')).rows).toEqual([{ application_name: 'mine' }])
      expect((await client.query('SHOW transaction_isolation')).rows[0].transaction_isolation).toBe(
        'read committed',
      )
      await client.query('SET extra_float_digits = 3')
      const refused = await client.query('SET search_path = pg_catalog').catch((e: { code: string }) => e)
      expect(refused).toMatchObject({ code: '0A000' })
      const version = await client.query('select version()')
      expect(version.rows[0].version).toMatch(/PostgreSQL/)
    } finally {
      await client.end()
    }
  })
})

describe('transactions', () => {
  it('node-postgres: BEGIN … COMMIT with a savepoint rolled back; ROLLBACK leaves nothing; errors abort the block', async () => {
    const client = pgClient(tenant)
    await client.connect()
    try {
      await client.query('BEGIN')
      const kept = await client.query(
        'insert into customers (tenant_id, name) values ($1, $2) returning id',
        [tenant.id, 'kept'],
      )
      await client.query('SAVEPOINT before_lost')
      await client.query('insert into customers (tenant_id, name) values ($1, $2)', [tenant.id, 'lost'])
      await client.query('ROLLBACK TO SAVEPOINT before_lost')
      // Read inside the block: its own write, on its own connection.
      expect(
        (await client.query('select name from customers where id = $1', [kept.rows[0].id])).rows,
      ).toEqual([{ name: 'kept' }])
      await client.query('COMMIT')
      const names = await client.query("select name from customers where name in ('kept', 'lost')")
      expect(names.rows.map((row) => row.name)).toEqual(['kept'])

      await client.query('BEGIN')
      await client.query('insert into customers (tenant_id, name) values ($1, $2)', [
        tenant.id,
        'rolled back',
      ])
      await client.query('ROLLBACK')
      expect(
        (await client.query("select count(*)::int as n from customers where name = 'rolled back'")).rows[0].n,
      ).toBe(0)

      await client.query('BEGIN')
      await expect(client.query('select 1/0')).rejects.toMatchObject({ code: '22012' })
      await expect(client.query('select 1')).rejects.toMatchObject({ code: '25P02' })
      const ended = await client.query('COMMIT')
      expect(ended.command).toBe('ROLLBACK')
      expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }])
    } finally {
      await client.end()
    }
  })

  it('postgres.js: sql.begin commits, a throw rolls back; the block reads its own writes before COMMIT', async () => {
    const sql = jsClient(tenant, 1)
    try {
      const id = await sql.begin(async (tx) => {
        const [row] = await tx<
          { id: string }[]
        >`insert into customers (tenant_id, name) values (${tenant.id}, 'in block') returning id`
        const [seen] = await tx<
          { name: string }[]
        >`select name from customers where id = ${row?.id as string}`
        expect(seen?.name).toBe('in block')
        return row?.id as string
      })
      expect(await sql`select name from customers where id = ${id}`).toEqual([{ name: 'in block' }])
      const thrown = await sql
        .begin(async (tx) => {
          await tx`insert into customers (tenant_id, name) values (${tenant.id}, 'thrown away')`
          throw new Error('changed my mind')
        })
        .catch((error: Error) => error.message)
      expect(thrown).toBe('changed my mind')
      expect(await sql`select id from customers where name = 'thrown away'`).toHaveLength(0)
    } finally {
      await sql.end()
    }
  })

  it('a block idle past wireIdleInTransactionMs ends the session (25P03) and is rolled back', async () => {
    const strict = await startTestRouter({ wireIdleInTransactionMs: 300 })
    const client = pgClient(tenant, tenant.key, strict)
    const ended = new Promise<{ code?: string }>((resolve) =>
      client.on('error', (error) => resolve(error as { code?: string })),
    )
    await client.connect()
    await client.query('BEGIN')
    await client.query('insert into customers (tenant_id, name) values ($1, $2)', [
      tenant.id,
      'idle in block',
    ])
    expect((await ended).code).toBe('25P03')
    const check = pgClient(tenant)
    await check.connect()
    expect(
      (await check.query("select count(*)::int as n from customers where name = 'idle in block'")).rows[0].n,
    ).toBe(0)
    await check.end()
  })

  it('read-your-writes through two routers: a write acknowledged by one is read back through the other', async () => {
    const second = await startTestRouter()
    const writer = pgClient(tenant)
    const reader = pgClient(tenant, tenant.key, second)
    await writer.connect()
    await reader.connect()
    try {
      for (let i = 0; i < 20; i++) {
        const written = await writer.query(
          'insert into customers (tenant_id, name) values ($1, $2) returning id',
          [tenant.id, `ryw ${i}`],
        )
        const read = await reader.query('select name from customers where id = $1', [written.rows[0].id])
        expect(read.rows).toEqual([{ name: `ryw ${i}` }])
      }
    } finally {
      await writer.end()
      await reader.end()
    }
  })
})

describe("Neon's serverless driver over a WebSocket", () => {
  it('Pool on /v2 of the HTTP port: SCRAM login, queries, an interactive transaction rolled back, a wrong key refused', async () => {
    neonConfig.webSocketConstructor = WebSocket
    neonConfig.useSecureWebSocket = false
    neonConfig.pipelineConnect = false
    neonConfig.wsProxy = () => `127.0.0.1:${router.port}/v2`
    const pool = new NeonPool({
      connectionString: `postgres://${tenant.id}:${encodeURIComponent(tenant.key)}@127.0.0.1:${router.port}/switchyard`,
    })
    try {
      const created = await pool.query(
        'insert into customers (tenant_id, name) values ($1, $2) returning id',
        [tenant.id, 'over ws'],
      )
      const id = created.rows[0].id as string
      expect((await pool.query('select name from customers where id = $1', [id])).rows).toEqual([
        { name: 'over ws' },
      ])
      const client = await pool.connect()
      try {
        await client.query('BEGIN')
        await client.query('update customers set name = $1 where id = $2', ['renamed in block', id])
        expect((await client.query('select name from customers where id = $1', [id])).rows[0].name).toBe(
          'renamed in block',
        )
        await client.query('ROLLBACK')
      } finally {
        client.release()
      }
      expect((await pool.query('select name from customers where id = $1', [id])).rows).toEqual([
        { name: 'over ws' },
      ])
      const wrong = new NeonPool({
        connectionString: `postgres://${tenant.id}:${encodeURIComponent(other.key)}@127.0.0.1:${router.port}/switchyard`,
      })
      await expect(wrong.query('select 1')).rejects.toMatchObject({ code: '28P01' })
      await wrong.end()
    } finally {
      await pool.end()
    }
  })
})

describe('hostile bytes', () => {
  it('garbage, an oversized message and a message cut short get an error and a closed connection; others go on', async () => {
    const answers = async (bytes: Buffer, end = true) =>
      new Promise<Buffer>((resolve) => {
        const socket = tcpConnect(router.pgPort as number, '127.0.0.1')
        const chunks: Buffer[] = []
        socket.on('data', (chunk) => chunks.push(chunk))
        socket.on('close', () => resolve(Buffer.concat(chunks)))
        socket.on('error', () => {})
        socket.write(bytes)
        if (end) socket.end()
        else setTimeout(() => socket.destroy(), 300)
      })
    const garbage = await answers(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
    expect(garbage.toString('latin1')).toMatch(/E.*08P01|E.*0A000/s)
    const huge = Buffer.alloc(8)
    huge.writeInt32BE(0x7fffffff, 0)
    huge.writeInt32BE(196608, 4)
    expect((await answers(huge)).toString('latin1')).toMatch(/08P01.*larger than the limit/s)
    const cut = Buffer.alloc(12)
    cut.writeInt32BE(64, 0)
    cut.writeInt32BE(196608, 4)
    await answers(cut, false)
    // The router still serves.
    const client = pgClient(tenant)
    await client.connect()
    expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }])
    await client.end()
  })

  it('a Parse of a statement past maxStatementBytes is refused (54000) before it is kept; the session goes on', async () => {
    const client = pgClient(tenant)
    await client.connect()
    try {
      const long = `select $1::text as v -- ${'x'.repeat(70_000)}`
      await expect(client.query(long, ['a'])).rejects.toMatchObject({ code: '54000' })
      expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }])
    } finally {
      await client.end()
    }
  })

  it('a login that never finishes is closed at the login timeout', async () => {
    const quick = await startTestRouter({ wireLoginTimeoutMs: 300 })
    const closed = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect(quick.pgPort as number, '127.0.0.1')
      socket.resume()
      socket.on('close', () => resolve(true))
      socket.on('error', () => {})
      setTimeout(() => resolve(false), 5000)
    })
    expect(closed).toBe(true)
    expect(topology().router.pgPort).toBe(0)
  })
})
