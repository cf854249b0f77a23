import { describe, expect } from 'vitest'
import {
  ConnectionError,
  type ConnectOptions,
  DEADLINE,
  PipelineError,
  QueryCancelledError,
  ResultTooLargeError,
  TooManyParametersError,
  type WireConnection,
  WireError,
} from '../src/shard/wire/connection.ts'
import { PoolTimeoutError } from '../src/shard/wire/errors.ts'
import { createWirePool } from '../src/shard/wire/pool.ts'
import { connect, it, openWire } from './fixtures.ts'
import { shard } from './support.ts'
import { rssMb, verifyFull } from './wire-support.ts'

// The router's wire client against a real primary of the test topology, over verified TLS, logged in as
// the admin (who may read pg_stat_activity and its own pg_prepared_statements).
const url = () => shard('shard-1').primary
const MiB = 1024 * 1024

async function open(options: Partial<ConnectOptions> = {}): Promise<WireConnection> {
  return openWire({ url: url(), tls: verifyFull(), ...options })
}

const one = (sql: string, ...params: (string | null)[]) => [{ sql, params }]
const failure = (promise: Promise<unknown>) =>
  promise.then(
    () => {
      throw new Error('expected a rejection')
    },
    (error: unknown) => error as WireError,
  )

/** What the shard says the connection's backend is doing, as the admin sees it on another connection. */
async function backendState(connection: WireConnection): Promise<{ state: string; query: string }> {
  const [row] = await connect(url())<{ state: string; query: string }[]>`
    select state, query from pg_stat_activity where pid = ${connection.info.pid}`
  return row as { state: string; query: string }
}

describe('result budgets: checked on each DataRow header, the query cancelled, nothing buffered', () => {
  it("select repeat('x', 600000000) stops at maxBytes without buffering it; the connection is reusable", async () => {
    const connection = await open()
    const before = rssMb()
    const started = performance.now()
    const error = await failure(connection.run(one("select repeat('x', 600000000)"), { maxBytes: 10 * MiB }))
    const ms = performance.now() - started
    const after = rssMb()
    console.log(
      `600 MB value, maxBytes 10 MiB: result_too_large in ${ms.toFixed(0)} ms; RSS ${before} -> ${after} MB`,
    )
    expect(error).toBeInstanceOf(ResultTooLargeError)
    expect(error).toMatchObject({ code: 'result_too_large', limit: 'bytes', max: 10 * MiB })
    expect(error).toMatchObject({ completedSteps: 0, sent: true })
    expect(after - before).toBeLessThan(200)
    expect(connection.broken).toBe(false)
    expect((await backendState(connection)).state).toBe('idle')
    const [again] = await connection.run(one('select 1'))
    expect(again?.rows).toEqual([['1']])
  })

  it('a run that names no budget still has one (256 MiB by default)', async () => {
    const connection = await open()
    const before = rssMb()
    const error = await failure(connection.run(one("select repeat('y', 300000000)")))
    console.log(`300 MB value, default budget: ${error.code}; RSS ${before} -> ${rssMb()} MB`)
    expect(error).toMatchObject({ code: 'result_too_large', limit: 'bytes', max: 256 * MiB })
    expect((await connection.run(one('select 2')))[0]?.rows).toEqual([['2']])
  })

  it('a 50-million-row generate_series stops at maxRows and is cancelled on the shard', async () => {
    const connection = await open()
    const before = rssMb()
    const started = performance.now()
    const error = await failure(
      connection.run(one('select g from generate_series(1, 50000000) g'), { maxRows: 10_000 }),
    )
    console.log(
      `50M rows, maxRows 10000: ${error.code} in ${(performance.now() - started).toFixed(0)} ms; RSS ${before} -> ${rssMb()} MB`,
    )
    expect(error).toMatchObject({ code: 'result_too_large', limit: 'rows', max: 10_000 })
    expect(rssMb() - before).toBeLessThan(200)
    expect((await backendState(connection)).state).toBe('idle')
    expect((await connection.run(one('select 3')))[0]?.rows).toEqual([['3']])
  })

  it('rows and bytes are counted across the whole pipeline, and completedSteps says where it stopped', async () => {
    const connection = await open()
    // The second step passes the budget and is cancelled long before it could end.
    const rows = await failure(
      connection.run(
        [
          { sql: 'select generate_series(1, 600)', params: [] },
          { sql: 'select generate_series(1, 50000000)', params: [] },
        ],
        { maxRows: 1000 },
      ),
    )
    expect(rows).toMatchObject({ code: 'result_too_large', limit: 'rows', completedSteps: 1 })
    const bytes = await failure(
      connection.run(
        [
          { sql: "select repeat('b', 600)", params: [] },
          { sql: "select repeat('b', 600), generate_series(1, 50000000)", params: [] },
        ],
        { maxBytes: 1000 },
      ),
    )
    expect(bytes).toMatchObject({ code: 'result_too_large', limit: 'bytes', completedSteps: 1 })
    // At the limit exactly is within it.
    const [, exact] = await connection.run(
      [
        { sql: 'select generate_series(1, 600)', params: [] },
        { sql: 'select generate_series(1, 400)', params: [] },
      ],
      { maxRows: 1000 },
    )
    expect(exact?.rows).toHaveLength(400)
  })

  it('COPY TO STDOUT data counts against maxBytes and is dropped; under it, the command completes', async () => {
    const connection = await open()
    const [copied] = await connection.run(one('copy (select g from generate_series(1, 1000) g) to stdout'))
    expect(copied).toMatchObject({ command: 'COPY', rowCount: 1000, rows: [] })
    const error = await failure(
      connection.run(one("copy (select repeat('c', 1000) from generate_series(1, 100000)) to stdout"), {
        maxBytes: MiB,
      }),
    )
    expect(error).toMatchObject({ code: 'result_too_large', limit: 'bytes' })
    expect((await connection.run(one('select 4')))[0]?.rows).toEqual([['4']])
  })
})

describe('cancellation', () => {
  it('an aborted signal cancels pg_sleep on the shard: QueryCancelledError with the reason, nothing left running', async () => {
    const connection = await open()
    const controller = new AbortController()
    const reason = new Error('client went away')
    setTimeout(() => controller.abort(reason), 100)
    const started = performance.now()
    const error = await failure(connection.run(one('select pg_sleep(30)'), { signal: controller.signal }))
    console.log(
      `pg_sleep(30) aborted after 100 ms: settled in ${(performance.now() - started).toFixed(0)} ms`,
    )
    expect(error).toBeInstanceOf(QueryCancelledError)
    expect(error).toMatchObject({ code: 'query_cancelled', reason, completedSteps: 0, sent: true })
    const backend = await backendState(connection)
    expect(backend.state).toBe('idle')
    expect((await connection.run(one('select pg_sleep(0.2), 5')))[0]?.rows).toEqual([['', '5']])
  })

  it('timeoutMs is a deadline: the query is cancelled on the shard with reason DEADLINE', async () => {
    const connection = await open()
    const started = performance.now()
    const error = await failure(connection.run(one('select pg_sleep(30)'), { timeoutMs: 150 }))
    console.log(`pg_sleep(30) with timeoutMs 150: settled in ${(performance.now() - started).toFixed(0)} ms`)
    expect(error).toMatchObject({ code: 'query_cancelled', reason: DEADLINE, completedSteps: 0, sent: true })
    expect((await backendState(connection)).state).toBe('idle')
    const [fast] = await connection.run(one('select 18'), { timeoutMs: 5000 })
    expect(fast?.rows).toEqual([['18']])
  })

  it('a cancelled explicit transaction reports the steps that completed and commits nothing', async () => {
    const connection = await open()
    await connection.run(one('create temp table cancelled_writes (id int)'))
    const controller = new AbortController()
    setTimeout(() => controller.abort('deadline'), 100)
    const error = await failure(
      connection.run(
        [
          { sql: 'begin', params: [] },
          { sql: 'insert into cancelled_writes values (1)', params: [] },
          { sql: 'select pg_sleep(30)', params: [] },
          { sql: 'commit', params: [] },
        ],
        { signal: controller.signal },
      ),
    )
    expect(error).toMatchObject({ code: 'query_cancelled', completedSteps: 2, sent: true })
    expect(connection.transactionStatus).toBe('E')
    await connection.execute('rollback')
    expect((await connection.run(one('select count(*) from cancelled_writes')))[0]?.rows).toEqual([['0']])
  })

  it('a signal aborted before run() sends nothing; cancel() with nothing running sends nothing', async () => {
    const connection = await open()
    const controller = new AbortController()
    controller.abort('too late')
    const error = await failure(connection.run(one('select 1'), { signal: controller.signal }))
    expect(error).toMatchObject({
      code: 'query_cancelled',
      reason: 'too late',
      sent: false,
      completedSteps: 0,
    })
    await connection.cancel()
    // Had that cancel gone out, it could hit this query.
    expect((await connection.run(one('select pg_sleep(0.3), 6')))[0]?.rows).toEqual([['', '6']])
  })

  it('cancel() stops the running pipeline and resolves once the server took the request', async () => {
    const connection = await open()
    const running = failure(connection.run(one('select pg_sleep(30)')))
    await new Promise((resolve) => setTimeout(resolve, 50))
    await connection.cancel('client closed')
    expect(await running).toMatchObject({
      code: 'query_cancelled',
      reason: 'client closed',
      completedSteps: 0,
    })
    expect((await backendState(connection)).state).toBe('idle')
  })

  it('a cancel never hits a later query: 200 short queries, each aborted at a random moment', async () => {
    const connection = await open()
    const outcomes = { completed: 0, cancelled: 0 }
    const hit: string[] = []
    for (let i = 0; i < 200; i++) {
      const controller = new AbortController()
      const sleep = (Math.random() * 0.004).toFixed(4)
      const delay = Math.floor(Math.random() * 5)
      if (delay === 0) queueMicrotask(() => controller.abort('race'))
      else setTimeout(() => controller.abort('race'), delay)
      const outcome = await connection
        .run(one('select pg_sleep($1::float8)', sleep), { signal: controller.signal })
        .then(
          () => 'completed' as const,
          (error: WireError) => {
            if (error instanceof QueryCancelledError) return 'cancelled' as const
            throw error
          },
        )
      outcomes[outcome]++
      // The next query, right away, on the same connection, with no signal: it must never see 57014.
      const next = await connection
        .run(one('select pg_sleep(0.001), $1::int', String(i)))
        .catch((error: WireError) => error)
      if (!Array.isArray(next)) hit.push(`${i}: ${(next as PipelineError).cause?.code ?? next.code}`)
    }
    console.log(`cancel race, 200 rounds: ${outcomes.completed} completed, ${outcomes.cancelled} cancelled`)
    expect(hit).toEqual([])
    expect(outcomes.cancelled).toBeGreaterThan(0)
    expect(outcomes.completed).toBeGreaterThan(0)
  })

  it('a cancel that cannot settle within cancelGraceMs drops the connection instead of reusing it', async () => {
    // A grace shorter than the cancel's own round trip: it cannot settle in time.
    const connection = await open({ cancelGraceMs: 1 })
    const controller = new AbortController()
    setTimeout(() => controller.abort('deadline'), 50)
    const error = await failure(connection.run(one('select pg_sleep(30)'), { signal: controller.signal }))
    expect(error).toMatchObject({ code: 'query_cancelled', sent: true })
    expect(connection.broken).toBe(true)
    const later = await failure(connection.run(one('select 1')))
    expect(later).toBeInstanceOf(ConnectionError)
    expect(later).toMatchObject({ sent: false, completedSteps: 0 })
  })
})

describe('prepared statements: LRU by count and bytes, closed first, names nobody can guess', () => {
  const PREPARED = 'select name, statement from pg_prepared_statements order by statement'
  const onServer = async (connection: WireConnection) =>
    ((await connection.run(one(PREPARED)))[0]?.rows ?? []) as [string, string][]

  it('keeps the most recently used: a hit refreshes a statement, the least recently used is closed', async () => {
    const connection = await open({ maxStatements: 4 })
    for (const n of ['1', '2', '3']) await connection.run(one(`select ${n} as a`))
    expect((await onServer(connection)).map(([, sql]) => sql)).toEqual([
      'select 1 as a',
      'select 2 as a',
      'select 3 as a',
      PREPARED,
    ])
    await connection.run(one('select 1 as a'))
    await connection.run(one('select 4 as a'))
    expect((await onServer(connection)).map(([, sql]) => sql)).toEqual([
      'select 1 as a',
      'select 3 as a',
      'select 4 as a',
      PREPARED,
    ])
  })

  it('names carry a random per-connection prefix', async () => {
    const [a, b] = [await open(), await open()]
    const names = [...(await onServer(a)), ...(await onServer(b))].map(([name]) => name)
    for (const name of names) expect(name).toMatch(/^sy[0-9a-f]{12}_\d+$/)
    expect(names[0]?.split('_')[0]).not.toBe(names[1]?.split('_')[0])
    // SQL-level PREPARE of the old predictable names collides with nothing.
    await a.run(one('prepare sy1 as select 7'))
    await a.run(one('prepare sy2 as select 8'))
    expect((await a.run(one('select 9')))[0]?.rows).toEqual([['9']])
  })

  it('is bounded by bytes of SQL text; a statement longer than the bound runs unnamed', async () => {
    const connection = await open({ maxStatementBytes: 300 })
    for (let n = 0; n < 20; n++) await connection.run(one(`select ${n} as padded_to_be_about_forty_bytes`))
    const kept = await onServer(connection)
    const bytes = kept.reduce((sum, [, sql]) => sum + Buffer.byteLength(sql), 0)
    console.log(`maxStatementBytes 300: ${kept.length} statements, ${bytes} bytes kept`)
    expect(bytes).toBeLessThanOrEqual(300)
    const long = `select '${'l'.repeat(400)}' as long`
    const [result] = await connection.run(one(long))
    expect(result?.rows[0]?.[0]).toHaveLength(400)
    expect((await onServer(connection)).some(([, sql]) => sql === long)).toBe(false)
  })

  it('evictions go first in the pipeline, so a failing step cannot make the server skip them', async () => {
    const connection = await open({ maxStatements: 3 })
    for (let n = 0; n < 30; n++) {
      if (n % 2 === 0) await connection.run(one(`select ${n} as fine`))
      else {
        const error = await failure(
          connection.run([
            { sql: 'select 1/0', params: [] },
            { sql: `select ${n} as never_runs`, params: [] },
          ]),
        )
        expect(error).toMatchObject({ step: 0, completedSteps: 0 })
      }
      // A Parse error: nothing prepared, nothing kept.
      if (n % 5 === 0) await failure(connection.run(one(`selec ${n}`)))
    }
    const kept = await onServer(connection)
    console.log(`maxStatements 3, 30 pipelines half of them failing: ${kept.length} statements on the server`)
    expect(kept.length).toBeLessThanOrEqual(3)
    expect(kept.some(([, sql]) => sql.includes('never_runs') || sql.startsWith('selec '))).toBe(false)
  })

  it('a statement dropped on the server (DEALLOCATE ALL) is prepared again, and the pipeline rerun', async () => {
    const connection = await open()
    const three = ['select 10 as ten', 'select 20 as twenty', 'select 30 as thirty'].map((sql) => ({
      sql,
      params: [],
    }))
    await connection.run(three)
    await connection.execute('deallocate all')
    // All three are gone: one rerun must do, so every statement is prepared afresh.
    expect((await connection.run(three)).map((result) => result.rows)).toEqual([[['10']], [['20']], [['30']]])
    // Dropped by a step of the pipeline itself (the rest of it then fails), the same.
    const failed = await failure(connection.run([...three, { sql: 'deallocate all', params: [] }, ...three]))
    expect(failed).toBeInstanceOf(PipelineError)
    expect((await connection.run(three)).map((result) => result.rows)).toEqual([[['10']], [['20']], [['30']]])
  })

  it('is not rerun once a step has committed: the write happens once', async () => {
    const connection = await open()
    await connection.run(one('create temp table once (id int)'))
    await connection.run(one('select 11 as eleven'))
    await connection.execute('deallocate all')
    const error = await failure(
      connection.run([
        { sql: 'begin', params: [] },
        { sql: 'insert into once values (1)', params: [] },
        { sql: 'commit', params: [] },
        { sql: 'select 11 as eleven', params: [] },
      ]),
    )
    // The insert's and commit's statements were new (prepared here); the last one no longer existed.
    expect(error).toBeInstanceOf(PipelineError)
    expect(error).toMatchObject({ step: 3, completedSteps: 3, sent: true })
    expect((await connection.run(one('select count(*) from once')))[0]?.rows).toEqual([['1']])
    expect((await connection.run(one('select 11 as eleven')))[0]?.rows).toEqual([['11']])
  })
})

describe('Bind: parameter counts are unsigned 16-bit', () => {
  it('takes 65535 parameters, and refuses 65536 before writing anything', async () => {
    const connection = await open()
    const placeholders = (count: number) => Array.from({ length: count }, (_, i) => `$${i + 1}`).join(',')
    const values = (count: number) => Array.from({ length: count }, () => '1')
    const [sum] = await connection.run([
      { sql: `select sum(v) from unnest(array[${placeholders(65_535)}]::int[]) v`, params: values(65_535) },
    ])
    expect(sum?.rows).toEqual([['65535']])
    const error = await failure(
      connection.run([
        { sql: 'select 1', params: [] },
        { sql: 'select $1', params: values(65_536) },
      ]),
    )
    expect(error).toBeInstanceOf(TooManyParametersError)
    expect(error).toMatchObject({ code: 'too_many_params', step: 1, count: 65_536, sent: false })
    expect((await connection.run(one('select 12')))[0]?.rows).toEqual([['12']])
  })
})

describe('COPY, notices and notifications', () => {
  it('COPY FROM STDIN as the last step is failed at once (never hangs); the connection stays usable', async () => {
    const connection = await open()
    await connection.run(one('create temp table copy_target (id int)'))
    const error = await failure(connection.run(one('copy copy_target from stdin')))
    expect(error).toBeInstanceOf(PipelineError)
    expect((error as PipelineError).cause.message).toMatch(/COPY from stdin failed/)
    expect((await connection.run(one('select 13')))[0]?.rows).toEqual([['13']])
  })

  it('COPY FROM STDIN followed by more steps fails without hanging (the server ends that session)', async () => {
    const connection = await open()
    await connection.run(one('create temp table copy_target (id int)'))
    const error = await failure(
      connection.run([
        { sql: 'copy copy_target from stdin', params: [] },
        { sql: 'select 14', params: [] },
      ]),
    )
    expect(error).toBeInstanceOf(WireError)
    expect(error).toMatchObject({ completedSteps: 0, sent: true })
  })

  it('skips notices and notifications, even a 20 MB notice', async () => {
    const connection = await open()
    const before = rssMb()
    const [, notified] = await connection.run([
      { sql: `do $$ begin raise notice '%', repeat('n', 20000000); end $$`, params: [] },
      { sql: 'select 15', params: [] },
    ])
    expect(notified?.rows).toEqual([['15']])
    await connection.run(one('listen wire_test'))
    await connection.run(one(`select pg_notify('wire_test', 'hello')`))
    expect((await connection.run(one('select 16')))[0]?.rows).toEqual([['16']])
    console.log(`20 MB notice skipped: RSS ${before} -> ${rssMb()} MB`)
  })
})

describe('robustness', () => {
  it('without any budget, a value too large for a JS string fails the exchange, not the process', async () => {
    const connection = await open()
    const error = await failure(
      connection.run(one("select repeat('z', 600000000)"), { maxBytes: Number.POSITIVE_INFINITY }),
    )
    expect(error).toBeInstanceOf(ConnectionError)
    expect(error).toMatchObject({ code: 'PROTOCOL_ERROR', completedSteps: 0, sent: true })
    expect(connection.broken).toBe(true)
  })
})

describe('wire pool: bounded waits', () => {
  it('reserve({ timeoutMs }) rejects with pool_timeout; a waiter that gave up takes no connection', async () => {
    const pool = createWirePool({ url: url(), tls: verifyFull(), max: 1, name: 'shard-1-primary' })
    try {
      const held = await pool.reserve()
      const error = await failure(pool.reserve({ timeoutMs: 100 }))
      expect(error).toBeInstanceOf(PoolTimeoutError)
      expect(error).toMatchObject({ code: 'pool_timeout', node: 'shard-1-primary' })
      const controller = new AbortController()
      const aborted = failure(pool.reserve({ signal: controller.signal }))
      controller.abort('client left')
      expect(await aborted).toMatchObject({ code: 'query_cancelled', reason: 'client left' })
      expect(pool.waiting).toBe(0)
      const next = pool.reserve({ timeoutMs: 5000 })
      pool.release(held)
      expect(await next).toBe(held)
      pool.release(held)
    } finally {
      await pool.close()
    }
  })

  it('a connection released while its cancel settles goes to the next caller only once settled', async () => {
    const pool = createWirePool({ url: url(), tls: verifyFull(), max: 1 })
    try {
      const connection = await pool.reserve()
      const controller = new AbortController()
      const running = failure(connection.run(one('select pg_sleep(30)'), { signal: controller.signal }))
      await new Promise((resolve) => setTimeout(resolve, 50))
      controller.abort('deadline')
      pool.release(connection) // too early, on purpose
      const next = await pool.reserve()
      expect(next).toBe(connection)
      expect(next.busy).toBe(false)
      expect(await running).toMatchObject({ code: 'query_cancelled' })
      expect((await next.run(one('select pg_sleep(0.2), 17')))[0]?.rows).toEqual([['', '17']])
      pool.release(next)
    } finally {
      await pool.close()
    }
  })
})

describe("a front end's client, passed on: parameter types, binary formats, raw rows, Describe", () => {
  it('Parse types name the statement; binary parameters and results go through as bytes; describe() tells types and columns', async () => {
    const connection = await open()
    // int4 1 and 2 in binary, asked back in binary: the rows are the DataRow bodies as the server sent them.
    const int4 = (n: number) => {
      const value = Buffer.alloc(4)
      value.writeInt32BE(n)
      return value
    }
    const [binary] = await connection.run([
      {
        sql: 'select $1 + $2 as sum, $1::text as first',
        params: [int4(40), int4(2)],
        paramTypes: [23, 23],
        paramFormats: [1],
        resultFormats: [1, 0],
        raw: true,
      },
    ])
    expect(binary?.command).toBe('SELECT')
    expect(binary?.rows).toEqual([])
    const row = binary?.raw?.[0] as Buffer
    expect(row.readUInt16BE(0)).toBe(2)
    expect(row.readInt32BE(2)).toBe(4)
    expect(row.readInt32BE(6)).toBe(42)
    expect(row.readInt32BE(10)).toBe(2)
    expect(row.toString('utf8', 14)).toBe('40')
    expect(binary?.fields.map((f) => [f.name, f.dataTypeID, f.dataTypeSize])).toEqual([
      ['sum', 23, 4],
      ['first', 25, -1],
    ])
    // The same SQL with other types is another statement; the text path still works alongside.
    const [text] = await connection.run([
      { sql: 'select $1 + $2 as sum, $1::text as first', params: ['1.5', '2'], paramTypes: [1700, 1700] },
    ])
    expect(text?.rows).toEqual([['3.5', '1.5']])
    expect(text?.raw).toBeUndefined()

    const described = await connection.describe([
      { sql: 'select $1::int8 as n, now() as at' },
      { sql: 'select $1 + $2 as sum, $1::text as first', paramTypes: [23, 23] },
      { sql: 'set local work_mem = 1024' },
    ])
    expect(described.map((d) => d.paramTypes)).toEqual([[20], [23, 23], []])
    expect(described[0]?.fields.map((f) => [f.name, f.dataTypeID])).toEqual([
      ['n', 20],
      ['at', 1184],
    ])
    expect(described[1]?.fields.map((f) => f.name)).toEqual(['sum', 'first'])
    expect(described[2]?.fields).toEqual([])
    // describe() ran nothing: the SET was only prepared.
    const [workMem] = await connection.run(one('show work_mem'))
    expect(workMem?.rows[0]?.[0]).not.toBe('1MB')
    // A Describe of a statement that does not parse fails as a pipeline step.
    const error = await failure(connection.describe([{ sql: 'select from nowhere_at_all' }]))
    expect(error).toBeInstanceOf(PipelineError)
    expect((await connection.run(one('select 1')))[0]?.rows).toEqual([['1']])
    await connection.close()
  })
})
