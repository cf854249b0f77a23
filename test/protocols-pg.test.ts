import postgres from 'postgres'
import { describe, expect } from 'vitest'
import { normalizeParams, parsePgProxyQuery } from '../src/router/protocols/pg-proxy.ts'
import { allTypes, allTypesRow, allTypesTable, proxyClient } from './all-types.ts'
import { it } from './fixtures.ts'
import { shard } from './support.ts'

/**
 * postgres.js re-serializes a parameter by the type the server infers for it (connection.js Bind: bool
 * `x === true ? 't' : 'f'`, json `JSON.stringify`, dates `new Date(x).toISOString()`, bytea
 * `Buffer.from(x)`), which would turn the text 'true' into 'f' and a JSON text into a JSON string: text
 * parameters have to pass as they are.
 */
async function withPassthrough<T>(url: string, use: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const passthrough = {
    to: 25,
    from: [16, 17, 114, 1082, 1114, 1184, 3802],
    serialize: (x: unknown) => x,
    parse: (x: string) => x,
  }
  const sql = postgres(url, { max: 1, onnotice: () => {}, types: { passthrough } })
  try {
    return await use(sql)
  } finally {
    await sql.end({ timeout: 5 })
  }
}

// The pg-proxy protocol (test/unit/protocols.test.ts) against PostgreSQL itself.
describe('pg-proxy', () => {
  it('PostgreSQL reads the normalized parameters, sent untyped, back as the fixture row', async () => {
    const { db, sent } = proxyClient(() => allTypes)
    await db.insert(allTypesTable).values(allTypesRow).returning()
    const params = normalizeParams(parsePgProxyQuery(sent[0]).params)
    const columns = allTypes.fields.map((f) => f.name).join(', ')
    const { rows, oids } = await withPassthrough(shard('shard-1').primary, (admin) =>
      admin.begin(async (tx) => {
        await tx.unsafe(`create temp table all_types (id int4, txt text, int int4, big int8, dbl float8, num numeric, bool bool,
          ts timestamp(3), tstz timestamptz, d date, iv interval, jsb jsonb, u uuid, texts text[], ints int4[], uuids uuid[],
          tss timestamptz[], nums numeric[], pt point, by bytea) on commit drop`)
        await tx.unsafe(`set local timezone = 'UTC'`)
        await tx.unsafe(
          `insert into all_types values (${params.map((_, i) => `$${i + 1}`).join(', ')})`,
          params,
        )
        const raw = await tx.unsafe(`select ${columns} from all_types`).raw()
        return {
          rows: raw.map((row) => row.map((value) => (value === null ? null : value.toString('utf8')))),
          oids: raw.columns.map((column) => column.type),
        }
      }),
    )
    expect(oids).toEqual(allTypes.fields.map((f) => f.dataTypeID))
    expect(rows).toEqual(allTypes.rows)
  })
})
