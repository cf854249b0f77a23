import { describe, expect } from 'vitest'
import { classify, loadPolicy } from '../src/router/policy.ts'
import { connect, it } from './fixtures.ts'
import { refusal } from './policy-support.ts'
import { shard } from './support.ts'

// The statement policy (test/unit/policy.test.ts) against what PostgreSQL really has.
it.beforeAll(() => loadPolicy())

describe('against the real pg_catalog (PostgreSQL 18)', () => {
  it('takes every volatile pg_catalog function for a write or refuses it, except the clock and random ones', async () => {
    const sql = connect(shard('shard-1').primary)
    const rows = await sql<{ name: string }[]>`
      select distinct proname as name from pg_proc
      where pronamespace = 'pg_catalog'::regnamespace and provolatile = 'v'`
    expect(rows.length).toBeGreaterThan(200)
    const reads: string[] = []
    for (const { name } of rows) {
      try {
        if (classify(`select "${name}"()`).kind === 'read') reads.push(name)
      } catch (error) {
        expect(error).toMatchObject({ code: 'statement_not_allowed' })
      }
    }
    expect(reads.sort()).toEqual(
      [
        'array_sample',
        'array_shuffle',
        'clock_timestamp',
        'gen_random_uuid',
        'pg_sleep',
        'pg_sleep_for',
        'pg_sleep_until',
        'random',
        'random_normal',
        'timeofday',
        'uuidv4',
        'uuidv7',
      ].sort(),
    )
  })

  it('sends to replicas only what a hot standby runs: the volatile functions it reads work there', async () => {
    const replica = connect(shard('shard-1').replicas[0] as string)
    const sql =
      'select now(), clock_timestamp(), timeofday(), random(), random_normal(), gen_random_uuid(), uuidv4(), uuidv7(), array_shuffle(array[1, 2]), array_sample(array[1, 2], 1)'
    expect(classify(sql)).toMatchObject({ kind: 'read', command: 'select' })
    const [recovery] = await replica`select pg_is_in_recovery() as standby`
    expect(recovery?.standby).toBe(true)
    const rows = await replica.unsafe(sql)
    expect(rows).toHaveLength(1)
  })

  it('names real pg_catalog functions in its deny list', async () => {
    const sql = connect(shard('shard-1').primary)
    const denied = [
      'set_config',
      'pg_advisory_lock',
      'pg_advisory_xact_lock_shared',
      'pg_try_advisory_lock',
      'pg_terminate_backend',
      'pg_cancel_backend',
      'pg_reload_conf',
      'pg_read_file',
      'pg_read_binary_file',
      'pg_ls_dir',
      'lo_import',
      'lo_export',
      'query_to_xml',
      'ts_stat',
    ]
    const rows = await sql<{ name: string }[]>`
      select distinct proname as name from pg_proc
      where pronamespace = 'pg_catalog'::regnamespace and proname = any(${denied})`
    expect(rows.map((row) => row.name).sort()).toEqual([...denied].sort())
    for (const name of denied) expect(refusal(`select ${name}()`).code).toBe('statement_not_allowed')
  })
})
