import { randomUUID } from 'node:crypto'
import { connect as tcpConnect } from 'node:net'
import { setTimeout as sleep, setImmediate as tick } from 'node:timers/promises'
import pg from 'pg'
import { describe, expect } from 'vitest'
import type { RunningRouter } from '../src/router/server.ts'
import {
  type MessageWriter,
  writeBind,
  writeClose,
  writeDescribeStatement,
  writeExecute,
  writeParse,
  writeQuery,
  writeSync,
  writeTerminate,
} from '../src/shard/wire/messages.ts'
import { it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { type BackendMessage, errorCodes, RawPostgres } from './raw-postgres.ts'
import { shard } from './support.ts'

/**
 * The PostgreSQL front end's bounds, with a client that sends exactly what a test writes: a client that
 * stops reading, one that never closes its side, a WebSocket closed by its peer, a session that keeps
 * huge statements, and a batch cut short by an error. Each is something no driver does and an attacker
 * would; each must cost the router a bounded amount and nobody else anything.
 */

let router: RunningRouter
let tenant: TestTenant
let other: TestTenant

it.beforeAll(async () => {
  router = await startTestRouter({
    requestTimeoutMs: 8_000,
    maxUnreadBytes: 8 * 1024 * 1024,
    wireIdleInTransactionMs: 60_000,
  })
  tenant = await tenantWithKey('shard-1')
  other = await tenantWithKey('shard-2')
})

const login = (who: TestTenant, options: { halfOpen?: boolean } = {}) =>
  RawPostgres.login(router.pgPort as number, who.id, who.key, options)

async function query(who: TestTenant, sql: string, params: unknown[] = []) {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: router.pgPort as number,
    user: who.id,
    password: who.key,
    database: 'switchyard',
  })
  await client.connect()
  try {
    return await client.query(sql, params)
  } finally {
    await client.end()
  }
}

describe('a client that does not read', () => {
  it('holds one answer at a time, counted against its tenant’s unread bound, and is cut off at requestTimeoutMs', async () => {
    const stuck = await login(tenant)
    stuck.socket.pause()
    // Twelve answers of 4 MB each: 48 MB if the router answered a client that does not read.
    const statements = Array.from({ length: 12 }, () => `select repeat('x', 4000000) as big`).join('; ')
    writeQuery(stuck.writer, statements)
    stuck.send()
    // While it holds more than its tenant's share (a quarter of maxUnreadBytes) unread, the tenant's
    // other sessions are refused (53300); another tenant is served.
    await expect
      .poll(
        () =>
          query(tenant, 'select 1 as one').then(
            () => 'served',
            (error) => error.code,
          ),
        {
          timeout: 6_000,
          interval: 200,
        },
      )
      .toBe('53300')
    expect((await query(other, 'select 1 as one')).rows).toEqual([{ one: 1 }])
    // Past requestTimeoutMs the router cuts it off, and what it held is released. (A paused socket
    // hears of its reset only once it reads again.)
    await expect.poll(() => router.app.answers.bytes, { timeout: 20_000, interval: 200 }).toBe(0)
    stuck.socket.resume()
    await stuck.closed
    const completed: string[] = []
    for (let message = await stuck.next(); message; message = await stuck.next())
      if (message.type === 'C') completed.push(message.body.toString())
    expect(completed.length).toBeLessThan(12)
    expect((await query(tenant, 'select 1 as one')).rows).toEqual([{ one: 1 }])
  })
})

/**
 * The router ended its side (FIN), and then let the socket go: a client that keeps its side open learns
 * that only when it writes (the router's kernel answers a socket nobody holds with a reset). Were the
 * router still holding it, the bytes would be read and the socket would stay open.
 */
async function letGo(client: RawPostgres) {
  await client.endedByRouter
  for (let i = 0; i < 100 && !client.ended; i++) {
    client.send(Buffer.from([0]))
    await sleep(100)
  }
  expect(client.ended).toBe(true)
}

describe('ending sessions', () => {
  it('a Terminate, or a FATAL, from a client that never closes its side: the router closes the connection', async () => {
    const terminated = await login(tenant, { halfOpen: true })
    writeTerminate(terminated.writer)
    terminated.send()
    await letGo(terminated)
    const violated = await login(tenant, { halfOpen: true })
    violated.send(Buffer.from([0x7a, 0, 0, 0, 4]))
    expect(errorCodes([await violated.expect('E')])).toEqual(['08P01'])
    await letGo(violated)
  })

  it('a WebSocket closed by its peer ends its session: the open block is rolled back and its locks freed', async () => {
    const id = randomUUID()
    const { ws, client } = await RawPostgres.loginWebSocket(
      `ws://127.0.0.1:${router.port}/v2`,
      tenant.id,
      tenant.key,
    )
    writeQuery(
      client.writer,
      `begin; insert into customers (id, tenant_id, name) values ('${id}', '${tenant.id}', 'held')`,
    )
    client.send()
    const answered = await client.until('Z')
    expect(errorCodes(answered)).toEqual([])
    expect(answered.at(-1)?.body.toString()).toBe('T')
    ws.close()
    // Were the block still open, this insert would wait on its row lock until requestTimeoutMs (57014);
    // the idle limit (60 s here) would not end it first.
    const inserted = await query(
      tenant,
      'insert into customers (id, tenant_id, name) values ($1, $2, $3) returning name',
      [id, tenant.id, 'after'],
    )
    expect(inserted.rows).toEqual([{ name: 'after' }])
  })
})

describe('what a session keeps', () => {
  it('parameter types count against the session’s bytes: Parses past 4 MiB are refused (54000) until some are closed', async () => {
    const client = await login(tenant)
    const types = Array.from({ length: 65_535 }, () => 23)
    for (let i = 0; i < 10; i++) writeParse(client.writer, `s${i}`, 'select 1', types)
    writeSync(client.writer)
    client.send()
    const answered = await client.until('Z')
    const kept = answered.filter((message) => message.type === '1').length
    expect(kept).toBeGreaterThan(0)
    expect(kept).toBeLessThan(10)
    expect(errorCodes(answered)).toEqual(['54000'])
    writeClose(client.writer, 's0')
    writeParse(client.writer, 'again', 'select 1', types)
    writeSync(client.writer)
    client.send()
    const after = await client.until('Z')
    expect(after.map((message) => message.type)).toEqual(['3', '1', 'Z'])
    client.close()
  })

  it('messages after an error in a batch are skipped: a Parse after it is not kept, nor is one the parser refuses', async () => {
    const client = await login(tenant)
    writeParse(client.writer, 'fails', 'select 1/0')
    writeBind(client.writer, 'fails', [])
    writeExecute(client.writer)
    writeParse(client.writer, 'later', 'select 2 as two')
    writeSync(client.writer)
    client.send()
    const failed = await client.until('Z')
    expect(failed.map((message) => message.type)).toEqual(['1', '2', 'E', 'Z'])
    expect(errorCodes(failed)).toEqual(['22012'])
    // Had 'later' been kept, this Parse would be 42P05 (already exists).
    writeParse(client.writer, 'later', 'select 2 as two')
    writeParse(client.writer, 'two', 'select 1; select 2')
    writeSync(client.writer)
    client.send()
    const parsed = await client.until('Z')
    expect(parsed.map((message) => message.type)).toEqual(['1', 'E', 'Z'])
    expect(errorCodes(parsed)).toEqual(['42601'])
    writeParse(client.writer, 'two', 'select 2 as two')
    writeBind(client.writer, 'later', [])
    writeExecute(client.writer)
    writeSync(client.writer)
    client.send()
    const ran = await client.until('Z')
    expect(ran.map((message) => message.type)).toEqual(['1', '2', 'D', 'C', 'Z'])
    client.close()
  })

  it('a message sent a byte at a time is read whole', async () => {
    const client = await login(tenant)
    writeQuery(client.writer, 'select 41 + 1 as answer')
    const bytes = client.writer.take()
    for (const byte of bytes) {
      client.send(Buffer.from([byte]))
      await tick()
    }
    const answered = await client.until('Z')
    expect(answered.map((message) => message.type)).toEqual(['T', 'D', 'C', 'Z'])
    client.close()
  })
})

/** A message as the comparison sees it: its type, and a CommandComplete's tag or a DataRow's bytes. */
const shape = (messages: BackendMessage[]) =>
  messages.map((message) =>
    message.type === 'C' || message.type === 'D'
      ? `${message.type}:${message.body.toString('latin1').replace(/\0/g, '')}`
      : message.type,
  )

/** Execute with a row limit, as drivers send for a cursor (`MessageWriter` has only the unlimited one). */
function executeLimited(writer: MessageWriter, portal: string, maxRows: number) {
  writer.begin('E').cstring(portal).int32(maxRows).end()
}

describe('the extended protocol as PostgreSQL answers it', () => {
  it('Execute with a row limit: PortalSuspended, the rest on the next Execute, in and out of a block — as PostgreSQL does', async () => {
    const primary = new URL(shard('shard-1').primary)
    const direct = await RawPostgres.login(
      Number(primary.port),
      decodeURIComponent(primary.username),
      decodeURIComponent(primary.password),
      { database: primary.pathname.slice(1) },
    )
    const routed = await login(tenant)
    const conversation = async (client: RawPostgres) => {
      const seen: BackendMessage[] = []
      const step = async (write: (writer: MessageWriter) => void) => {
        write(client.writer)
        client.send()
        seen.push(...(await client.until('Z')))
      }
      const series = 'select g from generate_series(1, 5) g'
      // Unnamed portal, one Sync: 2 + 2 + 1 rows, then an Execute of a finished portal.
      await step((writer) => {
        writeParse(writer, '', series)
        writeBind(writer, '', [])
        for (let i = 0; i < 4; i++) executeLimited(writer, '', 2)
        writeSync(writer)
      })
      // A portal does not outlive its transaction: after the Sync it is gone (34000).
      await step((writer) => {
        executeLimited(writer, '', 2)
        writeSync(writer)
      })
      // In a block a named portal lives across Syncs until COMMIT.
      await step((writer) => writeQuery(writer, 'begin'))
      await step((writer) => {
        writeParse(writer, 'series', series)
        writer.begin('B').cstring('cursor').cstring('series').uint16(0).uint16(0).uint16(0).end()
        executeLimited(writer, 'cursor', 3)
        writeSync(writer)
      })
      await step((writer) => {
        executeLimited(writer, 'cursor', 0)
        writeSync(writer)
      })
      await step((writer) => writeQuery(writer, 'commit'))
      return shape(seen).filter((type) => type !== 'N')
    }
    const expected = await conversation(direct)
    expect(await conversation(routed)).toEqual(expected)
    expect(expected).toContain('s')
    direct.close()
    routed.close()
  })
})

/** A login that went through: the client is closed again. */
const loggedIn = (client: RawPostgres) => {
  client.close()
  return 'in'
}

/** A Flush: what the batch so far answers is sent, nothing ends its transaction. */
const writeFlush = (writer: MessageWriter) => writer.begin('H').end()

describe('what one message may make the router do', () => {
  it('a Describe in a block runs on the block’s own connection; outside one it waits for a share only until its deadline', async () => {
    // One connection per tenant: the block's is the tenant's whole share.
    const narrow = await startTestRouter({ tenantConnections: 1, requestTimeoutMs: 1_500 })
    const port = narrow.pgPort as number
    const holder = await RawPostgres.login(port, tenant.id, tenant.key)
    writeQuery(holder.writer, 'begin; select 1')
    holder.send()
    expect(errorCodes(await holder.until('Z'))).toEqual([])
    writeParse(holder.writer, 'mine', 'select id, name from customers where tenant_id = $1')
    writeDescribeStatement(holder.writer, 'mine')
    writeSync(holder.writer)
    holder.send()
    expect((await holder.until('Z')).map((message) => message.type)).toEqual(['1', 't', 'T', 'Z'])
    // Another session of the tenant has no connection to describe on while the block holds it: its
    // Describe gives up at its deadline (57014) instead of waiting for ever, and the session goes on.
    const waiter = await RawPostgres.login(port, tenant.id, tenant.key)
    const describe = async () => {
      writeParse(waiter.writer, '', 'select 1 as one')
      writeDescribeStatement(waiter.writer, '')
      writeSync(waiter.writer)
      waiter.send()
      return waiter.until('Z')
    }
    expect(errorCodes(await describe())).toEqual(['57014'])
    writeQuery(holder.writer, 'commit')
    holder.send()
    await holder.until('Z')
    expect((await describe()).map((message) => message.type)).toEqual(['1', 't', 'T', 'Z'])
    // A statement the shard refuses at its Describe fails with the shard's SQLSTATE, not an internal error.
    writeParse(waiter.writer, '', 'select * from no_such_table')
    writeDescribeStatement(waiter.writer, '')
    writeSync(waiter.writer)
    waiter.send()
    expect(errorCodes(await waiter.until('Z'))).toEqual(['42P01'])
    holder.close()
    waiter.close()
  })

  it('a Query longer than maxStatementBytes is refused before it is parsed (54000); the session goes on', async () => {
    const client = await login(tenant)
    writeQuery(client.writer, 'select 1;'.repeat(10_000))
    client.send()
    expect(errorCodes(await client.until('Z'))).toEqual(['54000'])
    writeQuery(client.writer, 'select 1 as one')
    client.send()
    expect((await client.until('Z')).map((message) => message.type)).toEqual(['T', 'D', 'C', 'Z'])
    client.close()
  })

  it('a parameter typed xml or xml[] is refused at its Parse (42501): its input is libxml2’s parser', async () => {
    const client = await login(tenant)
    for (const type of [142, 143]) {
      writeParse(client.writer, '', 'select $1::text as t', [type])
      writeSync(client.writer)
      client.send()
      expect(errorCodes(await client.until('Z'))).toEqual(['42501'])
    }
    client.close()
  })

  it('a FunctionCall gets an error and ReadyForQuery; COPY messages outside COPY are ignored; RESET gives back the first value', async () => {
    const client = await login(tenant)
    client.writer.begin('F').int32(1299).uint16(0).uint16(0).int16(0).end()
    client.send()
    const called = await client.until('Z')
    expect(called.map((message) => message.type)).toEqual(['E', 'Z'])
    expect(errorCodes(called)).toEqual(['0A000'])
    client.writer.begin('d').raw(Buffer.from('stray')).end()
    client.writer.begin('c').end()
    writeQuery(client.writer, 'select 1 as one')
    client.send()
    expect((await client.until('Z')).map((message) => message.type)).toEqual(['T', 'D', 'C', 'Z'])
    const shown = async (sql: string) => {
      writeQuery(client.writer, sql)
      client.send()
      const answered = await client.until('Z')
      expect(errorCodes(answered)).toEqual([])
      const row = answered.filter((message) => message.type === 'D').at(-1)
      return row?.body.subarray(6).toString()
    }
    const first = await shown('show timezone')
    expect(first).toBeTruthy()
    expect(await shown('reset timezone; show timezone')).toBe(first)
    expect(await shown('set time zone local; show timezone')).toBe(first)
    client.close()
  })

  it('a StartupMessage and the SASLInitialResponse in one segment log in; a startup packet past 10000 bytes is refused (08P01)', async () => {
    const client = await RawPostgres.login(router.pgPort as number, tenant.id, tenant.key, {
      oneSegment: true,
    })
    writeQuery(client.writer, 'select 1 as one')
    client.send()
    expect((await client.until('Z')).map((message) => message.type)).toEqual(['T', 'D', 'C', 'Z'])
    client.close()
    const socket = tcpConnect({ port: router.pgPort as number, host: '127.0.0.1' })
    const answer: Buffer[] = []
    socket.on('data', (chunk: Buffer) => answer.push(chunk))
    const closed = new Promise((resolve) => socket.on('close', resolve))
    const header = Buffer.alloc(8)
    header.writeInt32BE(20_000, 0)
    header.writeInt32BE(196_608, 4)
    socket.write(header)
    await closed
    const text = Buffer.concat(answer).toString('latin1')
    expect(text[0]).toBe('E')
    expect(text).toContain('C08P01')
  })

  it('each statement and savepoint of a block counts against the tenant’s rate limit, not only the first', async () => {
    const limited = await tenantWithKey('shard-1', { api_rate_limit: 3 })
    const client = await login(limited)
    const codes: (string | undefined)[][] = []
    // A savepoint is a round trip to the shard too: it counts. Each names a new API request of the
    // application (switchyard.request, set in the router's session: not a round trip).
    for (const [i, sql] of ['begin', 'select 1', 'savepoint a', 'select 3', 'select 4'].entries()) {
      writeQuery(client.writer, `set switchyard.request = 'api-${i}'; ${sql}`)
      client.send()
      codes.push(errorCodes(await client.until('Z')))
    }
    expect(codes).toEqual([[], [], [], [], ['53400']])
    client.close()
  })
})

describe('idle in a transaction', () => {
  let strict: RunningRouter
  it.beforeAll(async () => {
    strict = await startTestRouter({ wireIdleInTransactionMs: 400 })
  })

  it('pings (empty Syncs and Flushes, a Close of nothing, stray COPY messages) do not keep an idle block open', async () => {
    const client = await RawPostgres.login(strict.pgPort as number, tenant.id, tenant.key)
    writeQuery(client.writer, 'begin; select 1')
    client.send()
    expect((await client.until('Z')).at(-1)?.body.toString()).toBe('T')
    const ping = setInterval(() => {
      writeSync(client.writer)
      writeFlush(client.writer)
      client.writer.begin('C').byte(0x50).cstring('nope').end()
      client.writer.begin('c').end()
      writeSync(client.writer)
      client.send()
    }, 100)
    try {
      const ended = await Promise.race([client.until('E'), sleep(3_000).then(() => undefined)])
      expect(ended && errorCodes(ended)).toEqual(['25P03'])
    } finally {
      clearInterval(ping)
    }
  })

  it('a portal suspended without a Sync holds rows: the session is ended (25P03) and the rows let go', async () => {
    const client = await RawPostgres.login(strict.pgPort as number, tenant.id, tenant.key)
    writeParse(client.writer, '', 'select g from generate_series(1, 10000) g')
    writeBind(client.writer, '', [])
    executeLimited(client.writer, '', 1)
    writeFlush(client.writer)
    client.send()
    expect((await client.until('s')).map((message) => message.type)).toEqual(['1', '2', 'D', 's'])
    expect(strict.app.answers.bytes).toBeGreaterThan(0)
    expect(errorCodes([await client.expect('E')])).toEqual(['25P03'])
    await client.closed
    expect(strict.app.answers.bytes).toBe(0)
  })

  it('bytes that never complete a message do not keep an idle block open', async () => {
    const client = await RawPostgres.login(strict.pgPort as number, tenant.id, tenant.key)
    writeQuery(client.writer, 'begin; select 1')
    client.send()
    expect((await client.until('Z')).at(-1)?.body.toString()).toBe('T')
    // The start of a Query of 1000 bytes, then one byte of it every 100 ms: 3 s of bytes, no message.
    client.send(Buffer.from([0x51, 0, 0, 0x03, 0xe8]))
    const trickle = setInterval(() => client.send(Buffer.from('x')), 100)
    try {
      const ended = await Promise.race([client.expect('E'), sleep(3_000).then(() => undefined)])
      expect(ended && errorCodes([ended])).toEqual(['25P03'])
    } finally {
      clearInterval(trickle)
    }
  })
})

describe('what a session holds, after a second attack review', () => {
  it('rows kept for a portal run twice in a batch, or closed after its Execute, are let go at the Sync', async () => {
    const client = await login(tenant)
    const series = 'select g, repeat($$x$$, 100) from generate_series(1, 2000) g'
    writeParse(client.writer, 's', series)
    for (let i = 0; i < 2; i++) {
      client.writer.begin('B').cstring('p').cstring('s').uint16(0).uint16(0).uint16(0).end()
      executeLimited(client.writer, 'p', 1)
    }
    client.writer.begin('C').byte(0x50).cstring('p').end()
    client.writer.begin('B').cstring('q').cstring('s').uint16(0).uint16(0).uint16(0).end()
    executeLimited(client.writer, 'q', 1)
    client.writer.begin('C').byte(0x50).cstring('q').end()
    writeSync(client.writer)
    client.send()
    expect(errorCodes(await client.until('Z'))).toEqual([])
    expect(router.app.answers.bytes).toBe(0)
    client.close()
  })

  it('a portal keeps its statement’s bytes after the statement is closed: Parse, Bind, Close over and over is refused past 4 MiB (54000)', async () => {
    const client = await login(tenant)
    const big = `select '${'x'.repeat(60_000)}' as big`
    let refusedAt = -1
    for (let i = 0; i < 100 && refusedAt < 0; i++) {
      writeParse(client.writer, 's', big)
      client.writer.begin('B').cstring(`p${i}`).cstring('s').uint16(0).uint16(0).uint16(0).end()
      writeClose(client.writer, 's')
      writeFlush(client.writer)
      client.send()
      const answered: BackendMessage[] = []
      while (answered.filter((message) => message.type === '3' || message.type === 'E').length === 0)
        answered.push(await client.next().then((message) => message as BackendMessage))
      if (errorCodes(answered).length) {
        expect(errorCodes(answered)).toEqual(['54000'])
        refusedAt = i
      }
    }
    expect(refusedAt).toBeGreaterThan(30)
    expect(refusedAt).toBeLessThan(80)
    client.close()
  })

  it('a tenant holds at most wireMaxClientsPerTenant sessions on a router (53300); another tenant is not counted', async () => {
    const capped = await startTestRouter({ wireMaxClientsPerTenant: 2 })
    const port = capped.pgPort as number
    const held = [
      await RawPostgres.login(port, tenant.id, tenant.key),
      await RawPostgres.login(port, tenant.id, tenant.key),
    ]
    await expect(RawPostgres.login(port, tenant.id, tenant.key)).rejects.toThrow(/E\(53300: /)
    const others = await RawPostgres.login(port, other.id, other.key)
    held[0]?.close()
    await expect
      .poll(() => RawPostgres.login(port, tenant.id, tenant.key).then(loggedIn), {
        timeout: 5_000,
        interval: 100,
      })
      .toBe('in')
    held[1]?.close()
    others.close()
  })

  it('SET in a failed block is refused (25P02) and changes nothing', async () => {
    const client = await login(tenant)
    const answers = async (sql: string) => {
      writeQuery(client.writer, sql)
      client.send()
      return client.until('Z')
    }
    await answers('begin')
    expect(errorCodes(await answers('select 1/0'))).toEqual(['22012'])
    expect(errorCodes(await answers("set application_name = 'changed'"))).toEqual(['25P02'])
    await answers('rollback')
    const shown = (await answers('show application_name')).find((message) => message.type === 'D')
    expect(shown?.body.subarray(6).toString()).not.toBe('changed')
    client.close()
  })
})

describe('a transaction’s life, and clients that have not logged in', () => {
  it('a block busy with work still ends at wireMaxTransactionMs (25P04)', async () => {
    const short = await startTestRouter({ wireMaxTransactionMs: 1_000 })
    const client = await RawPostgres.login(short.pgPort as number, tenant.id, tenant.key)
    writeQuery(client.writer, 'begin')
    client.send()
    await client.until('Z')
    const busy = setInterval(() => {
      writeQuery(client.writer, 'select 1')
      client.send()
    }, 100)
    try {
      const seen: BackendMessage[] = []
      for (let m = await client.next(); m; m = await client.next()) seen.push(m)
      expect(errorCodes(seen)).toEqual(['25P04'])
    } finally {
      clearInterval(busy)
    }
  })

  it('a prepared SET is described by the router, not refused by the policy', async () => {
    const client = await login(tenant)
    writeParse(client.writer, 'set', "set application_name = 'described'")
    writeDescribeStatement(client.writer, 'set')
    writeSync(client.writer)
    client.send()
    expect((await client.until('Z')).map((message) => message.type)).toEqual(['1', 't', 'n', 'Z'])
    client.close()
  })

  it('clients that connect and do not log in hold at most wireMaxLogins slots; logged-in sessions do not count', async () => {
    const few = await startTestRouter({ wireMaxLogins: 2 })
    const port = few.pgPort as number
    const session = await RawPostgres.login(port, tenant.id, tenant.key)
    const silent = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<ReturnType<typeof tcpConnect>>((resolve) => {
            const socket = tcpConnect({ port, host: '127.0.0.1' }, () => resolve(socket))
          }),
      ),
    )
    await sleep(100)
    const refused = await new Promise<string>((resolve) => {
      const socket = tcpConnect({ port, host: '127.0.0.1' })
      const chunks: Buffer[] = []
      socket.on('data', (chunk: Buffer) => chunks.push(chunk))
      socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')))
    })
    expect(refused).toContain('C53300')
    for (const socket of silent) socket.destroy()
    await expect
      .poll(() => RawPostgres.login(port, tenant.id, tenant.key).then(loggedIn), {
        timeout: 5_000,
        interval: 100,
      })
      .toBe('in')
    session.close()
  })
})
