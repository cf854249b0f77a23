import { randomUUID } from 'node:crypto'
import { describe, expect } from 'vitest'
import {
  ConnectionError,
  connectWire,
  PipelineError,
  PostgresError,
  type WireConnection,
} from '../src/shard/wire/connection.ts'
import { createWirePool } from '../src/shard/wire/pool.ts'
import { connect, it, openWire } from './fixtures.ts'
import { freePorts } from './setup/topology.ts'
import { shard } from './support.ts'

// The router's own PostgreSQL client (src/shard/wire), against a real primary.
const table = `wire_probe_${randomUUID().slice(0, 8)}`
const url = () => shard('shard-1').primary

async function open(): Promise<WireConnection> {
  return openWire({ url: url(), parameters: { search_path: 'public' } })
}

it.beforeAll(async () => {
  await connect(url()).unsafe(`create table ${table} (id int primary key, note text)`)
})
it.afterAll(async () => {
  await connect(url()).unsafe(`drop table if exists ${table}`)
})

describe('wire client: one pipeline, one Sync', () => {
  it('logs in with SCRAM-SHA-256 and returns text values, columns, command tags and NULLs', async () => {
    const connection = await open()
    const [insert, select] = await connection.run([
      { sql: `insert into ${table} (id, note) values ($1, $2), ($3, $4)`, params: ['1', 'één', '2', null] },
      { sql: `select id, note, $1::int + 1 as next from ${table} order by id`, params: ['41'] },
    ])
    expect(insert).toMatchObject({ command: 'INSERT', rowCount: 2, fields: [], rows: [] })
    expect(select?.command).toBe('SELECT')
    expect(select?.rowCount).toBe(2)
    expect(select?.rows).toEqual([
      ['1', 'één', '42'],
      ['2', null, '42'],
    ])
    expect(select?.fields.map((field) => [field.name, field.dataTypeID])).toEqual([
      ['id', 23],
      ['note', 25],
      ['next', 23],
    ])
    expect(select?.fields[0]?.tableID).toBeGreaterThan(0)
    expect(select?.fields[0]?.columnID).toBe(1)
    expect(connection.transactionStatus).toBe('I')
  })

  it('without BEGIN the pipeline is one implicit transaction: local settings last until its Sync', async () => {
    const connection = await open()
    const [, seen] = await connection.run([
      { sql: `select set_config('app.current_tenant', $1, true)`, params: ['wire'] },
      { sql: `select current_setting('app.current_tenant', true)`, params: [] },
    ])
    expect(seen?.rows).toEqual([['wire']])
    const [after] = await connection.run([
      { sql: `select current_setting('app.current_tenant', true)`, params: [] },
    ])
    expect(after?.rows[0]?.[0] ?? '').toBe('')
  })

  it('names the failed step with its SQLSTATE, skips the rest, and rolls back the implicit transaction', async () => {
    const connection = await open()
    const failure = await connection
      .run([
        { sql: `insert into ${table} (id) values ($1)`, params: ['10'] },
        { sql: `insert into ${table} (id) values ($1)`, params: ['10'] },
        { sql: `insert into ${table} (id) values ($1)`, params: ['11'] },
      ])
      .catch((error: unknown) => error)
    expect(failure).toBeInstanceOf(PipelineError)
    expect((failure as PipelineError).step).toBe(1)
    expect((failure as PipelineError).cause).toBeInstanceOf(PostgresError)
    expect((failure as PipelineError).cause).toMatchObject({
      code: '23505',
      constraint_name: `${table}_pkey`,
      table_name: table,
      severity: 'ERROR',
    })
    const [count] = await connection.run([
      { sql: `select count(*) from ${table} where id in (10, 11)`, params: [] },
    ])
    expect(count?.rows).toEqual([['0']])
  })

  it('a syntax error is not cached as a prepared statement', async () => {
    const connection = await open()
    const bad = 'selec 1'
    for (let i = 0; i < 2; i++) {
      const failure = await connection.run([{ sql: bad, params: [] }]).catch((error: unknown) => error)
      expect((failure as PipelineError).cause.code).toBe('42601')
    }
    const [ok] = await connection.run([{ sql: 'select 1', params: [] }])
    expect(ok?.rows).toEqual([['1']])
  })

  it('reads a result larger than one socket read, and keeps at most maxStatements prepared', async () => {
    const connection = await openWire({ url: url(), maxStatements: 2 })
    const [big] = await connection.run([
      { sql: `select repeat('x', 1000) || g as v from generate_series(1, 2000) g`, params: [] },
    ])
    expect(big?.rows).toHaveLength(2000)
    expect(big?.rows[1999]?.[0]).toBe(`${'x'.repeat(1000)}2000`)
    for (const n of [1, 2, 3, 1, 2, 3]) {
      const [one] = await connection.run([{ sql: `select ${n} as n`, params: [] }])
      expect(one?.rows).toEqual([[String(n)]])
    }
    const [prepared] = await connection.run([
      { sql: 'select count(*) from pg_prepared_statements', params: [] },
    ])
    expect(Number(prepared?.rows[0]?.[0])).toBeLessThanOrEqual(2)
  })

  it('prepares a statement again when a table change invalidated its cached plan', async () => {
    const connection = await open()
    const read = { sql: `select * from ${table} where id = $1`, params: ['1'] }
    const [before] = await connection.run([read])
    expect(before?.fields.map((field) => field.name)).toEqual(['id', 'note'])
    await connect(url()).unsafe(`alter table ${table} add column extra int default 7`)
    const [after] = await connection.run([read])
    expect(after?.fields.map((field) => field.name)).toEqual(['id', 'note', 'extra'])
    expect(after?.rows[0]?.[2]).toBe('7')
  })

  it('refuses a wrong password with the server SQLSTATE, and a closed port with ECONNREFUSED', async () => {
    const wrong = new URL(url())
    wrong.password = 'not-the-password'
    const refused = await connectWire({ url: wrong.toString() }).catch((error: unknown) => error)
    expect(refused).toMatchObject({ code: '28P01' })
    const [port] = await freePorts(1)
    const nobody = new URL(url())
    nobody.port = String(port)
    const down = await connectWire({ url: nobody.toString() }).catch((error: unknown) => error)
    expect(down).toBeInstanceOf(ConnectionError)
    expect((down as ConnectionError).code).toBe('ECONNREFUSED')
  })
})

describe('wire pool', () => {
  it('rolls back a transaction left open before the connection is reused', async () => {
    const pool = createWirePool({ url: url(), max: 1 })
    try {
      const first = await pool.reserve()
      const failure = await first
        .run([
          { sql: 'begin', params: [] },
          { sql: `insert into ${table} (id) values ($1)`, params: ['20'] },
          { sql: 'select 1/0', params: [] },
          { sql: 'commit', params: [] },
        ])
        .catch((error: unknown) => error)
      expect((failure as PipelineError).step).toBe(2)
      expect(first.transactionStatus).toBe('E')
      pool.release(first)
      const again = await pool.reserve()
      expect(again).toBe(first)
      expect(again.transactionStatus).toBe('I')
      const [count] = await again.run([{ sql: `select count(*) from ${table} where id = 20`, params: [] }])
      expect(count?.rows).toEqual([['0']])
      pool.release(again)
    } finally {
      await pool.close()
    }
  })

  it('drops a connection the server ended and opens a new one; waiters get released connections', async () => {
    const pool = createWirePool({ url: url(), max: 1 })
    try {
      const first = await pool.reserve()
      const [pid] = await first.run([{ sql: 'select pg_backend_pid()', params: [] }])
      const waiting = pool.reserve()
      await connect(url()).unsafe(`select pg_terminate_backend(${pid?.rows[0]?.[0]})`)
      const failure = await first
        .run([{ sql: 'select pg_sleep(0.5)', params: [] }])
        .catch((error: unknown) => error)
      expect((failure as { code?: string }).code).toMatch(/^(57P01|CONNECTION_CLOSED|ECONNRESET|EPIPE)$/)
      expect(first.broken).toBe(true)
      pool.release(first)
      const second = await waiting
      expect(second).not.toBe(first)
      const [ok] = await second.run([{ sql: 'select 1', params: [] }])
      expect(ok?.rows).toEqual([['1']])
      pool.release(second)
    } finally {
      await pool.close()
    }
  })
})
