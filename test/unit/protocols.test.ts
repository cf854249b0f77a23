import { neon, neonConfig } from '@neondatabase/serverless'
import { eq, sql } from 'drizzle-orm'
import postgres from 'postgres'
import { afterEach, describe, expect, it } from 'vitest'
import { SwitchyardError } from '../../src/errors.ts'
import {
  type NeonRequest,
  parseNeonConnectionString,
  parseNeonRequest,
  toNeonBatch,
  toNeonError,
  toNeonResult,
} from '../../src/router/protocols/neon.ts'
import {
  normalizeParams,
  parseArrayText,
  parsePgProxyBatch,
  parsePgProxyQuery,
  pgProxyValue,
  toPgProxyBatchResponse,
  toPgProxyResponse,
} from '../../src/router/protocols/pg-proxy.ts'
import type { StatementResult } from '../../src/router/result.ts'
import { allTypes, allTypesRow, allTypesTable, field, proxyClient, wire } from '../all-types.ts'

describe('pg-proxy', () => {
  it('drizzle selects every column type with the JS type its node-postgres reference server gives', async () => {
    const { db, sent } = proxyClient(() => allTypes)
    const rows = await db.select().from(allTypesTable).where(eq(allTypesTable.id, 1))
    expect(sent).toEqual([
      {
        sql: expect.stringMatching(/^select "id", "txt", .* where "all_types"\."id" = \$1$/),
        params: [1],
        method: 'all',
      },
    ])
    expect(rows).toEqual([allTypesRow])
    expect(rows[0]?.ts).toBeInstanceOf(Date)
    expect(typeof rows[0]?.big).toBe('bigint')
  })

  it('drizzle inserts every column type as parameters PostgreSQL parses for the column', async () => {
    const { db, sent } = proxyClient(() => allTypes)
    const [returned] = await db.insert(allTypesTable).values(allTypesRow).returning()
    expect(returned).toEqual(allTypesRow)
    const body = parsePgProxyQuery(sent[0])
    expect(body.method).toBe('all')
    // Each of these was inserted into PostgreSQL 18 and read back as the row above.
    expect(normalizeParams(body.params)).toEqual([
      '1',
      'it\'s "quoted" \\ {x}',
      '-7',
      '9007199254740993',
      'NaN',
      '1.50',
      'true',
      '2022-01-01T16:00:00.123Z',
      '2022-01-01T02:00:00.456Z',
      '2022-03-04T00:00:00.000Z',
      '1 day 02:00:00',
      '{"b":{"c":true},"s":"str"}',
      '0190f0e0-0000-7000-8000-0000000000ff',
      '{"a","b c","\\"q\\"","back\\\\slash","","NULL"}',
      '{1,2,3}',
      '{"0190f0e0-0000-7000-8000-0000000000aa"}',
      '{"2022-05-06T07:08:09.123Z"}',
      '{"1.50","2"}',
      '(1.5,2)',
      '\\x00ff10',
    ])
  })

  it('db.execute gets object rows keyed by column name, values as node-postgres with the reference overrides', async () => {
    const { db, sent } = proxyClient(() => allTypes)
    const rows = await db.execute(sql`select * from all_types where id = ${1}`)
    expect(sent).toEqual([{ sql: 'select * from all_types where id = $1', params: [1], method: 'execute' }])
    expect(rows).toEqual([
      {
        id: 1,
        txt: 'it\'s "quoted" \\ {x}',
        int: -7,
        big: '9007199254740993',
        dbl: 'NaN',
        num: '1.50',
        bool: true,
        ts: '2022-01-01 16:00:00.123',
        tstz: '2022-01-01 02:00:00.456+00',
        d: '2022-03-04',
        iv: '1 day 02:00:00',
        jsb: { b: { c: true }, s: 'str' },
        u: '0190f0e0-0000-7000-8000-0000000000ff',
        texts: ['a', 'b c', '"q"', 'back\\slash', '', 'NULL'],
        ints: [1, 2, 3],
        uuids: ['0190f0e0-0000-7000-8000-0000000000aa'],
        tss: '{"2022-05-06 07:08:09.123+00"}',
        nums: '{1.50,2}',
        pt: { x: 1.5, y: 2 },
        by: { type: 'Buffer', data: [0, 255, 16] },
      },
    ])
  })

  it('all keeps every column by position; execute keeps the last of repeated names, as node-postgres', () => {
    const result: StatementResult = {
      command: 'SELECT',
      rowCount: 2,
      fields: [field('a', 23), field('a', 25), field('b', 16)],
      rows: [
        ['1', 'x', null],
        [null, null, 'f'],
      ],
    }
    expect(toPgProxyResponse(result, 'all')).toEqual({
      rows: [
        [1, 'x', null],
        [null, null, false],
      ],
    })
    expect(toPgProxyResponse(result, 'execute')).toEqual({
      rows: [
        { a: 'x', b: null },
        { a: null, b: false },
      ],
    })
    const insert: StatementResult = { command: 'INSERT', rowCount: 3, fields: [], rows: [] }
    expect(toPgProxyResponse(insert, 'execute')).toEqual({ rows: [] })
  })

  // Each expected value is what node-postgres (pg-types 2.2, with the reference server's identity parsers
  // for 1082 1114 1184 1186 1115 1182 1185 1187 1231) gave for the same PostgreSQL output, after JSON.
  it.each([
    [21, '1', 1],
    [23, '-5', -5],
    [26, '1', 1],
    [20, '9007199254740993', '9007199254740993'],
    [700, '1.5', 1.5],
    [701, '-Infinity', '-Infinity'],
    [1700, '1.50', '1.50'],
    [16, 't', true],
    [16, 'f', false],
    [1114, '2022-01-01 02:00:00.123456', '2022-01-01 02:00:00.123456'],
    [1184, '2022-01-01 02:00:00.123456+00', '2022-01-01 02:00:00.123456+00'],
    [1082, '2022-01-01', '2022-01-01'],
    [1083, '12:34:56', '12:34:56'],
    [1266, '12:34:56+02', '12:34:56+02'],
    [1186, '1 year 2 mons 3 days 04:05:06.5', '1 year 2 mons 3 days 04:05:06.5'],
    [3802, '{"a": [1, "x", null], "k": 1}', { a: [1, 'x', null], k: 1 }],
    [114, '{"k":1}', { k: 1 }],
    [3802, '"str"', 'str'],
    [3802, 'null', null],
    [2950, '0190f0e0-0000-7000-8000-0000000000ff', '0190f0e0-0000-7000-8000-0000000000ff'],
    [1042, 'ab ', 'ab '],
    [
      1009,
      '{a,NULL,"b c","NULL","","q\\"uo\\\\te","{x}"}',
      ['a', null, 'b c', 'NULL', '', 'q"uo\\te', '{x}'],
    ],
    [1007, '{1,2,NULL}', [1, 2, null]],
    [
      1005,
      '{{1,2},{3,4}}',
      [
        [1, 2],
        [3, 4],
      ],
    ],
    [1007, '[0:1]={7,8}', [7, 8]],
    [1016, '{1,2}', ['1', '2']],
    [2951, '{0190f0e0-0000-7000-8000-0000000000ff,NULL}', ['0190f0e0-0000-7000-8000-0000000000ff', null]],
    [1000, '{t,f,NULL}', [true, false, null]],
    [1022, '{1.5,2.25}', [1.5, 2.25]],
    [1231, '{1.50,2}', '{1.50,2}'],
    [1185, '{"2022-01-01 00:00:00.5+00"}', '{"2022-01-01 00:00:00.5+00"}'],
    [1182, '{2020-01-01}', '{2020-01-01}'],
    [1187, '{"1 day"}', '{"1 day"}'],
    [1183, '{12:00:00}', ['12:00:00']],
    [3807, '{"{\\"a\\": 1}",NULL}', [{ a: 1 }, null]],
    [199, '{"[1,2]"}', [[1, 2]]],
    [1009, '{}', []],
    [17, '\\x00ff10', { type: 'Buffer', data: [0, 255, 16] }],
    [1001, '{"\\\\x0102",NULL}', [{ type: 'Buffer', data: [1, 2] }, null]],
    [600, '(1.5,2)', { x: 1.5, y: 2 }],
    [
      1017,
      '{"(1,2)","(3,4)"}',
      [
        { x: 1, y: 2 },
        { x: 3, y: 4 },
      ],
    ],
    [718, '<(1,2),3>', { x: 1, y: 2, radius: 3 }],
    [869, '192.168.0.1/24', '192.168.0.1/24'],
    [1041, '{10.0.0.1}', ['10.0.0.1']],
    [3907, '{"[1,2)"}', ['[1,2)']],
    [790, '$12.34', '$12.34'],
    [3614, "'a' 'b'", "'a' 'b'"],
    [2205, 'pg_class', 'pg_class'],
    [1020, '{(1,1),(0,0)}', '{(1,1),(0,0)}'],
  ])('type %i: %j → %j', (oid, textValue, expected) => {
    expect(wire(pgProxyValue(textValue, oid))).toEqual(expected)
  })

  it('reads bytea in the escape format too', () => {
    expect(pgProxyValue('a\\\\b\\001', 17)).toEqual({ type: 'Buffer', data: [0x61, 0x5c, 0x62, 1] })
  })

  it('parses /v1/query and /v1/batch bodies, migrator strings included, and names what is wrong', () => {
    expect(parsePgProxyQuery({ sql: 'select 1', method: 'all', typings: ['none'] })).toEqual({
      sql: 'select 1',
      params: [],
      method: 'all',
    })
    expect(parsePgProxyBatch({ queries: [] })).toEqual({ queries: [] })
    expect(
      parsePgProxyBatch({
        queries: ['create table t (id int)', { sql: 'select $1', params: ['x'], method: 'all' }],
      }),
    ).toEqual({
      queries: [
        { sql: 'create table t (id int)', params: [], method: 'execute' },
        { sql: 'select $1', params: ['x'], method: 'all' },
      ],
    })
    expect(() => parsePgProxyQuery({ sql: 'select 1', method: 'values' })).toThrowError(
      expect.objectContaining({ code: 'invalid_input', message: expect.stringContaining('method') }),
    )
    expect(() => parsePgProxyQuery({ sql: 'select 1', params: 'x', method: 'all' })).toThrowError(
      expect.objectContaining({ code: 'invalid_input', message: expect.stringContaining('params') }),
    )
    expect(() => parsePgProxyBatch({ queries: [{ sql: '' }] })).toThrowError(
      expect.objectContaining({ code: 'invalid_input' }),
    )
  })

  it('answers a batch with one { rows } per statement in its own method', () => {
    const one: StatementResult = { command: 'SELECT', rowCount: 1, fields: [field('n', 23)], rows: [['1']] }
    const created: StatementResult = { command: 'CREATE', rowCount: null, fields: [], rows: [] }
    expect(
      toPgProxyBatchResponse(
        [created, one, one],
        [{ method: 'execute' }, { method: 'all' }, { method: 'execute' }],
      ),
    ).toEqual({
      results: [{ rows: [] }, { rows: [[1]] }, { rows: [{ n: 1 }] }],
    })
  })
})

describe('parameters', () => {
  it('become text PostgreSQL parses for the target column, or null', () => {
    const bytes = Buffer.from([0, 255, 16])
    expect(
      normalizeParams([
        'as is',
        42,
        1.5,
        12345678901234567890n,
        true,
        false,
        null,
        undefined,
        new Date('2022-01-01T00:00:00.456-02:00'),
        { a: [1, 'b'] },
        ['a', null, 'b "c"', 'back\\slash', '', 'NULL'],
        [
          [1, 2],
          [3, null],
        ],
        [{ x: 1 }, true, 2],
        bytes,
        wire(bytes),
        [bytes, null],
        { type: 'Buffer', data: [1, 'x'] },
      ]),
    ).toEqual([
      'as is',
      '42',
      '1.5',
      '12345678901234567890',
      'true',
      'false',
      null,
      null,
      '2022-01-01T02:00:00.456Z',
      '{"a":[1,"b"]}',
      '{"a",NULL,"b \\"c\\"","back\\\\slash","","NULL"}',
      '{{"1","2"},{"3",NULL}}',
      '{"{\\"x\\":1}","true","2"}',
      '\\x00ff10',
      '\\x00ff10',
      '{\\\\x00ff10,NULL}',
      '{"type":"Buffer","data":[1,"x"]}',
    ])
  })
})

describe('PostgreSQL array text', () => {
  it('reads quotes, escapes, NULL and nesting, and leaves anything else as it was', () => {
    expect(parseArrayText('{"a,b","c\\"d",NULL,"NULL"}', (s) => s)).toEqual(['a,b', 'c"d', null, 'NULL'])
    expect(parseArrayText('{{"x"},{NULL}}', (s) => s.toUpperCase())).toEqual([['X'], [null]])
    expect(parseArrayText('{(1,1),(0,0);(2,2),(1,1)}', (s) => s, ';')).toEqual(['(1,1),(0,0)', '(2,2),(1,1)'])
    expect(parseArrayText('not an array', (s) => s)).toBe('not an array')
    expect(parseArrayText('{"unterminated', (s) => s)).toBe('{"unterminated')
    expect(parseArrayText('{1,2}trailing', (s) => s)).toBe('{1,2}trailing')
  })
})

describe('Neon serverless HTTP', () => {
  const original = { fetchEndpoint: neonConfig.fetchEndpoint, fetchFunction: neonConfig.fetchFunction }
  afterEach(() => Object.assign(neonConfig, original))

  const connectionString =
    'postgresql://0190F0E0-0000-7000-8000-0000000000FF:sy_abc123_s3cr%2Ft@router.local/app'

  /** The real client, its requests answered in process by `answer` (a JSON body and status). */
  function neonClient(answer: (request: NeonRequest) => { status: number; body: unknown }) {
    const seen: { headers: Record<string, string>; body: unknown; url: string }[] = []
    neonConfig.fetchEndpoint = 'http://router.test/sql'
    neonConfig.fetchFunction = async (
      url: string,
      init: { body: string; headers: Record<string, string> },
    ) => {
      const body = JSON.parse(init.body)
      seen.push({ url, headers: init.headers, body })
      let reply: { status: number; body: unknown }
      try {
        parseNeonConnectionString(new Headers(init.headers).get('Neon-Connection-String'))
        reply = answer(parseNeonRequest(body, new Headers(init.headers)))
      } catch (error) {
        reply = toNeonError(error as SwitchyardError)
      }
      return new Response(JSON.stringify(reply.body), {
        status: reply.status,
        headers: { 'content-type': 'application/json' },
      })
    }
    return { sql: neon(connectionString), seen }
  }

  it('the client sends raw-text array-mode requests with its parameters already text; values parse client side', async () => {
    const { sql, seen } = neonClient((request) => {
      expect(request).toEqual({
        queries: [
          {
            sql: 'select * from all_types where id = $1 and ts > $2 and jsb @> $3',
            params: ['1', expect.any(String), '{"s":"str"}'],
            arrayMode: true,
          },
        ],
        batch: false,
        arrayMode: true,
        rawText: true,
      })
      return {
        status: 200,
        body: toNeonResult(allTypes, {
          arrayMode: request.queries[0]?.arrayMode ?? false,
          rawText: request.rawText,
        }),
      }
    })
    const rows = await sql.query('select * from all_types where id = $1 and ts > $2 and jsb @> $3', [
      1,
      new Date('2020-01-01T00:00:00Z'),
      { s: 'str' },
    ])
    expect(seen[0]?.url).toBe('http://router.test/sql')
    expect(seen[0]?.headers).toEqual({
      'Neon-Connection-String': `${connectionString}?application_name=pkg%3Anpm%2F%2540neondatabase%2Fserverless%401.2.0`,
      'Neon-Raw-Text-Output': 'true',
      'Neon-Array-Mode': 'true',
    })
    // The client's own node-postgres parsers: timestamps become Dates, int8 and numeric stay strings.
    expect(rows).toEqual([
      expect.objectContaining({
        id: 1,
        big: '9007199254740993',
        dbl: Number.NaN,
        num: '1.50',
        bool: true,
        tstz: new Date('2022-01-01T02:00:00.456Z'),
        jsb: { b: { c: true }, s: 'str' },
        texts: ['a', 'b c', '"q"', 'back\\slash', '', 'NULL'],
        ints: [1, 2, 3],
        tss: [new Date('2022-05-06T07:08:09.123Z')],
        pt: { x: 1.5, y: 2 },
      }),
    ])
  })

  it('fullResults gets fields, command, rowCount and rowAsArray', async () => {
    const result: StatementResult = {
      command: 'INSERT',
      rowCount: 2,
      fields: [field('id', 23, 1)],
      rows: [['7'], ['8']],
    }
    const { sql } = neonClient((request) => ({
      status: 200,
      body: toNeonResult(result, { arrayMode: true, rawText: request.rawText }),
    }))
    const full = await sql.query('insert into t values (7), (8) returning id', [], {
      fullResults: true,
      arrayMode: true,
    })
    expect(full).toMatchObject({
      command: 'INSERT',
      rowCount: 2,
      rowAsArray: true,
      rows: [[7], [8]],
      fields: [{ name: 'id', dataTypeID: 23, tableID: 16438, columnID: 1, format: 'text' }],
    })
  })

  it('a transaction is one batch request with its options in headers, answered with { results }', async () => {
    const one: StatementResult = { command: 'SELECT', rowCount: 1, fields: [field('one', 23)], rows: [['1']] }
    const arr: StatementResult = {
      command: 'SELECT',
      rowCount: 1,
      fields: [field('arr', 1007)],
      rows: [['{1,2}']],
    }
    const { sql, seen } = neonClient((request) => {
      expect(request).toEqual({
        queries: [
          { sql: 'select 1 as one', params: [], arrayMode: true },
          { sql: 'select $1::int[] as arr', params: ['{"1","2"}'], arrayMode: true },
        ],
        batch: true,
        arrayMode: true,
        rawText: true,
        isolation: 'ReadUncommitted',
        isolationSql: 'read committed',
        readOnly: true,
        deferrable: false,
      })
      return { status: 200, body: toNeonBatch([one, arr], request) }
    })
    const results = await sql.transaction(
      [sql`select 1 as one`, sql.query('select $1::int[] as arr', [[1, 2]])],
      {
        isolationLevel: 'ReadUncommitted',
        readOnly: true,
        deferrable: false,
      },
    )
    expect(seen[0]?.headers).toMatchObject({
      'Neon-Batch-Isolation-Level': 'ReadUncommitted',
      'Neon-Batch-Read-Only': 'true',
      'Neon-Batch-Deferrable': 'false',
    })
    expect(results).toEqual([[{ one: 1 }], [{ arr: [1, 2] }]])
  })

  it('a SQL error reaches the client as a NeonDbError with its SQLSTATE and fields', async () => {
    const error = new postgres.PostgresError({
      message: 'duplicate key value violates unique constraint "all_types_pkey"',
      severity_local: 'ERROR',
      severity: 'ERROR',
      code: '23505',
      detail: 'Key (id)=(1) already exists.',
      schema_name: 'public',
      table_name: 'all_types',
      constraint_name: 'all_types_pkey',
      file: 'nbtinsert.c',
      line: '673',
      routine: '_bt_check_unique',
    } as never)
    const { sql } = neonClient(() => toNeonError(error))
    const thrown = await sql`insert into all_types (id) values (${1})`.catch((e: unknown) => e)
    expect(thrown).toMatchObject({
      name: 'NeonDbError',
      message: 'duplicate key value violates unique constraint "all_types_pkey"',
      code: '23505',
      severity: 'ERROR',
      detail: 'Key (id)=(1) already exists.',
      schema: 'public',
      table: 'all_types',
      constraint: 'all_types_pkey',
      routine: '_bt_check_unique',
    })
    expect((thrown as { hint?: unknown }).hint).toBeUndefined()
  })

  it('a Switchyard refusal reaches the client as a NeonDbError whose code is the stable code', async () => {
    const { sql } = neonClient(() =>
      toNeonError(new SwitchyardError('rate_limited', 'tenant is over its limit')),
    )
    await expect(sql`select 1`).rejects.toMatchObject({
      name: 'NeonDbError',
      code: 'rate_limited',
      message: 'tenant is over its limit',
    })
    const bad = neon('postgresql://someone:pw@router.local/app')
    await expect(bad`select 1`).rejects.toMatchObject({ name: 'NeonDbError', code: 'invalid_credentials' })
  })

  it('reads headers as Neon proxy does: only "true" is true, the body may set arrayMode per statement', () => {
    const headers = new Headers({
      'Neon-Array-Mode': 'yes',
      'Neon-Batch-Read-Only': 'true',
      'Neon-Batch-Isolation-Level': 'Serializable',
    })
    expect(parseNeonRequest({ query: 'select 1' }, headers)).toEqual({
      queries: [{ sql: 'select 1', params: [], arrayMode: false }],
      batch: false,
      arrayMode: false,
      rawText: false,
    })
    expect(
      parseNeonRequest({ queries: [{ query: 'select 1', arrayMode: true }, { query: 'select 2' }] }, headers),
    ).toEqual({
      queries: [
        { sql: 'select 1', params: [], arrayMode: true },
        { sql: 'select 2', params: [], arrayMode: false },
      ],
      batch: true,
      arrayMode: false,
      rawText: false,
      isolation: 'Serializable',
      isolationSql: 'serializable',
      readOnly: true,
    })
    expect(parseNeonRequest({ queries: [] }, new Headers())).toMatchObject({ queries: [], batch: true })
    expect(() =>
      parseNeonRequest({ query: 'select 1' }, new Headers({ 'Neon-Batch-Isolation-Level': 'Chaos' })),
    ).toThrowError(
      expect.objectContaining({
        code: 'invalid_input',
        message: expect.stringContaining('isolation level "Chaos"'),
      }),
    )
    expect(() => parseNeonRequest({ sql: 'select 1' }, new Headers())).toThrowError(
      expect.objectContaining({ code: 'invalid_input' }),
    )
  })

  it('takes the tenant from the user and the key from the password', () => {
    expect(parseNeonConnectionString(`${connectionString}?application_name=x`)).toEqual({
      tenant: '0190f0e0-0000-7000-8000-0000000000ff',
      key: 'sy_abc123_s3cr/t',
    })
    for (const bad of [
      undefined,
      '',
      'not a url',
      'mysql://0190f0e0-0000-7000-8000-0000000000ff:k@h/db',
      'postgres://tenant:k@h/db',
      'postgres://0190f0e0-0000-7000-8000-0000000000ff@h/db',
      'postgres://0190f0e0-0000-7000-8000-0000000000ff:%E0%A4%A@h/db',
    ])
      expect(() => parseNeonConnectionString(bad), String(bad)).toThrowError(
        expect.objectContaining({ code: 'invalid_credentials' }),
      )
  })

  it('without raw text, types values in JSON as Neon proxy does; without array mode, rows are objects', () => {
    const result: StatementResult = {
      command: 'SELECT',
      rowCount: 1,
      fields: [
        field('b', 16),
        field('i', 23),
        field('big', 20),
        field('f', 701),
        field('nan', 701),
        field('j', 3802),
        field('ts', 1184),
        field('ints', 1007),
        field('nested', 1005),
        field('flags', 1000),
        field('boxes', 1020),
        field('n', 1700),
        field('none', 25),
      ],
      rows: [
        [
          't',
          '42',
          '9007199254740993',
          '1.5',
          'NaN',
          '{"a": [1, null]}',
          '2022-01-01 02:00:00+00',
          '{1,NULL,3}',
          '{{1,2},{3,4}}',
          '{t,f}',
          '{(1,1),(0,0);(2,2),(1,1)}',
          '1.50',
          null,
        ],
      ],
    }
    expect(toNeonResult(result, { arrayMode: false, rawText: false }).rows).toEqual([
      {
        b: true,
        i: 42,
        big: '9007199254740993',
        f: 1.5,
        nan: 'NaN',
        j: { a: [1, null] },
        ts: '2022-01-01 02:00:00+00',
        ints: [1, null, 3],
        nested: [
          [1, 2],
          [3, 4],
        ],
        flags: [true, false],
        boxes: ['(1,1),(0,0)', '(2,2),(1,1)'],
        n: '1.50',
        none: null,
      },
    ])
    expect(toNeonResult(result, { arrayMode: true, rawText: true }).rows).toEqual(result.rows)
  })
})
