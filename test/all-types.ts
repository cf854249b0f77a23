import {
  bigint,
  boolean,
  customType,
  date,
  doublePrecision,
  integer,
  interval,
  jsonb,
  numeric,
  pgTable,
  point,
  text,
  timestamp,
  uuid,
} from 'drizzle-orm/pg-core'
import { drizzle } from 'drizzle-orm/pg-proxy'
import { parsePgProxyQuery, toPgProxyResponse } from '../src/router/protocols/pg-proxy.ts'
import type { ResultField, StatementResult } from '../src/router/result.ts'

// One row of every column type the protocols carry, as PostgreSQL 18 wrote it, as drizzle reads it, and a
// drizzle pg-proxy client answered in process: the protocol tests (test/unit/protocols.test.ts) and the
// check that PostgreSQL reads it back (test/protocols-pg.test.ts) share it.

/** Through the wire and back, as the router's JSON responses and the clients' JSON bodies travel. */
export const wire = <T>(value: T): T => JSON.parse(JSON.stringify(value))

export const field = (name: string, dataTypeID: number, columnID = 0): ResultField => ({
  name,
  dataTypeID,
  tableID: columnID ? 16438 : 0,
  columnID,
})

/** `select id, txt, … from all_types`: what PostgreSQL 18 wrote for one row, in text format. */
export const allTypes: StatementResult = {
  command: 'SELECT',
  rowCount: 1,
  fields: [
    field('id', 23, 1),
    field('txt', 25, 2),
    field('int', 23, 3),
    field('big', 20, 5),
    field('dbl', 701, 8),
    field('num', 1700, 9),
    field('bool', 16, 11),
    field('ts', 1114, 12),
    field('tstz', 1184, 14),
    field('d', 1082, 16),
    field('iv', 1186, 19),
    field('jsb', 3802, 21),
    field('u', 2950, 22),
    field('texts', 1009, 23),
    field('ints', 1007, 24),
    field('uuids', 2951, 25),
    field('tss', 1185, 26),
    field('nums', 1231, 27),
    field('pt', 600, 31),
    field('by', 17, 32),
  ],
  rows: [
    [
      '1',
      'it\'s "quoted" \\ {x}',
      '-7',
      '9007199254740993',
      'NaN',
      '1.50',
      't',
      '2022-01-01 16:00:00.123',
      '2022-01-01 02:00:00.456+00',
      '2022-03-04',
      '1 day 02:00:00',
      '{"b": {"c": true}, "s": "str"}',
      '0190f0e0-0000-7000-8000-0000000000ff',
      '{a,"b c","\\"q\\"","back\\\\slash","","NULL"}',
      '{1,2,3}',
      '{0190f0e0-0000-7000-8000-0000000000aa}',
      '{"2022-05-06 07:08:09.123+00"}',
      '{1.50,2}',
      '(1.5,2)',
      '\\x00ff10',
    ],
  ],
}

/** drizzle 0.45 has no bytea column; this is the customType its docs suggest. */
const bytea = customType<{ data: Buffer; driverData: Buffer }>({
  dataType: () => 'bytea',
  fromDriver: (value) => Buffer.from(value),
})

export const allTypesTable = pgTable('all_types', {
  id: integer('id').primaryKey(),
  txt: text('txt'),
  int: integer('int'),
  big: bigint('big', { mode: 'bigint' }),
  dbl: doublePrecision('dbl'),
  num: numeric('num'),
  bool: boolean('bool'),
  ts: timestamp('ts', { precision: 3 }),
  tstz: timestamp('tstz', { withTimezone: true }),
  d: date('d', { mode: 'date' }),
  iv: interval('iv'),
  jsb: jsonb('jsb'),
  u: uuid('u'),
  texts: text('texts').array(),
  ints: integer('ints').array(),
  uuids: uuid('uuids').array(),
  tss: timestamp('tss', { withTimezone: true }).array(),
  nums: numeric('nums').array(),
  pt: point('pt'),
  by: bytea('by'),
})

export const allTypesRow = {
  id: 1,
  txt: 'it\'s "quoted" \\ {x}',
  int: -7,
  big: 9007199254740993n,
  dbl: Number.NaN,
  num: '1.50',
  bool: true,
  ts: new Date('2022-01-01T16:00:00.123Z'),
  tstz: new Date('2022-01-01T02:00:00.456Z'),
  d: new Date('2022-03-04T00:00:00.000Z'),
  iv: '1 day 02:00:00',
  jsb: { b: { c: true }, s: 'str' },
  u: '0190f0e0-0000-7000-8000-0000000000ff',
  texts: ['a', 'b c', '"q"', 'back\\slash', '', 'NULL'],
  ints: [1, 2, 3],
  uuids: ['0190f0e0-0000-7000-8000-0000000000aa'],
  tss: [new Date('2022-05-06T07:08:09.123Z')],
  nums: ['1.50', '2'],
  pt: [1.5, 2] as [number, number],
  by: Buffer.from([0, 255, 16]),
}

/**
 * drizzle's pg-proxy driver with a callback that sends its arguments as JSON (bigint and non-finite numbers
 * as strings, which JSON cannot carry) and returns the router's answer: every request it makes is recorded
 * and answered with `answer`.
 */
export function proxyClient(answer: (sql: string) => StatementResult) {
  const sent: unknown[] = []
  const db = drizzle(async (sqlText, params, method) => {
    const body = JSON.parse(
      JSON.stringify({ sql: sqlText, params, method }, (_key, value) =>
        typeof value === 'bigint' || (typeof value === 'number' && !Number.isFinite(value))
          ? String(value)
          : value,
      ),
    )
    sent.push(body)
    const query = parsePgProxyQuery(body)
    return wire(toPgProxyResponse(answer(query.sql), query.method))
  })
  return { db, sent }
}
