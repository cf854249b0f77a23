import { describe, expect } from 'vitest'
import type { Directory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { PHASES } from '../src/migrate-tenant/mover.ts'
import { readOwnership } from '../src/shard/ownership.ts'
import { monthStart } from '../src/shard/partitions.ts'
import { connect, it, startTestRouter } from './fixtures.ts'
import {
  addMonth,
  contentOn,
  createPartitioned,
  moveArtifacts,
  rowsOn,
  seededTenant,
  total,
} from './move-support.ts'
import { post, query } from './router-support.ts'
import { cli, eventually, shard } from './support.ts'

/** The phases a mover can be killed in: every phase but the terminal one. */
const CRASH_AT = PHASES.filter((phase) => phase !== 'done')

/** Starts `switchyard move` with a failpoint that SIGKILLs it at `phase`; returns the move it left. */
async function crashedMove(
  directory: Directory,
  tenant: string,
  phase: string,
  when: 'before' | 'after' | 'midway',
) {
  const killed = await cli(['move', tenant, '--to', 'shard-2'], {
    SWITCHYARD_FAILPOINT: `move:${phase}:${when}`,
  })
  expect(killed.code, killed.stderr).not.toBe(0)
  const [move] = await directory.sql<{ id: string; state: string }[]>`
    select id, state from moves where tenant_id = ${tenant} order by created_at desc limit 1`
  expect(move?.state, killed.stderr).not.toMatch(/^(done|aborted|failed)$/)
  return move as { id: string; state: string }
}

/**
 * Every move here also carries a partitioned table (issue 16): three monthly partitions on shard-1 only,
 * so each move's preflight gives shard-2 its partitions, and the crash checks below (content on the home
 * shard, nothing elsewhere) cover it as they cover the example's plain tables.
 */
const SHARDS = ['shard-1', 'shard-2', 'shard-3']
it.beforeAll(async () => {
  for (const id of SHARDS) await createPartitioned(connect(shard(id).primary), 'crash_visits')
  for (const offset of [-1, 0, 1])
    await addMonth(connect(shard('shard-1').primary), 'crash_visits', monthStart(new Date(), offset))
})
it.afterAll(async () => {
  for (const id of SHARDS) await connect(shard(id).primary)`drop table if exists public.crash_visits`
})

/** A seeded tenant on shard-1 (with 300 rows across the partitioned table's months), its rows, and the move to shard-2 a killed mover left at `phase`. */
async function seededCrash(directory: Directory, phase: string, when: 'before' | 'after' | 'midway') {
  const tenant = await seededTenant('shard-1')
  await connect(shard('shard-1').primary)`
    insert into crash_visits (tenant_id, at, note)
    select ${tenant}, ${monthStart(new Date(), -1)}::timestamptz + n * interval '5 hours', 'seeded'
    from generate_series(1, 300) n`
  const rows = await contentOn('shard-1', tenant)
  expect(rows.crash_visits).toMatch(/^300 rows/)
  return { tenant, rows, move: await crashedMove(directory, tenant, phase, when) }
}

/** The tenant is home on `on` at `epoch` with exactly the content it had, and nothing is left elsewhere. */
async function expectHome(
  directory: Directory,
  tenant: string,
  on: string,
  rows: Record<string, string>,
  epoch: number,
) {
  const [row] = await directory.sql`select shard_id, epoch, state from tenants where id = ${tenant}`
  expect(row).toEqual({ shard_id: on, epoch, state: 'active' })
  expect(await contentOn(on, tenant)).toEqual(rows)
  expect(await readOwnership(connect(shard(on).primary), tenant)).toEqual({ epoch, state: 'owner' })
  const away = on === 'shard-1' ? 'shard-2' : 'shard-1'
  expect(total(await rowsOn(away, tenant))).toBe(0)
  expect(await readOwnership(connect(shard(away).primary), tenant)).toBeUndefined()
  expect(await moveArtifacts()).toEqual([])
}

describe('a mover killed (SIGKILL) at any phase leaves a move that resumes or aborts cleanly', () => {
  for (const phase of CRASH_AT) {
    for (const when of ['before', 'after'] as const) {
      const at = when === 'before' ? `at ${phase}` : `after ${phase}'s side effect`
      // The flip records `cleanup` in the very transaction that flips the directory.
      const left = when === 'after' && phase === 'flip' ? 'cleanup' : phase
      it(`killed ${at}: \`move resume\` finishes it`, async ({ directory }) => {
        const { tenant, rows, move } = await seededCrash(directory, phase, when)
        expect(move.state).toBe(left)
        const resumed = await cli(['move', 'resume', move.id, '--json'])
        expect(resumed.code, resumed.stderr).toBe(0)
        expect(JSON.parse(resumed.stdout)).toMatchObject({ id: move.id, state: 'done' })
        await expectHome(directory, tenant, 'shard-2', rows, 2)
      })

      it(`killed ${at}: \`move abort\` restores the start (past the cutover, with --move-back)`, async ({
        directory,
      }) => {
        const { tenant, rows, move } = await seededCrash(directory, phase, when)
        expect(move.state).toBe(left)
        const aborted = await cli(['move', 'abort', move.id, '--json'])
        if (move.state === 'cleanup') {
          // The directory already points at the target and writes may have landed there: a plain abort
          // refuses, --move-back finishes the move and moves the tenant back with a move of its own.
          expect(aborted.code).toBe(1)
          expect(aborted.stderr).toMatch(/move_past_cutover.*--move-back/)
          const back = await cli(['move', 'abort', move.id, '--move-back', '--json'])
          expect(back.code, back.stderr).toBe(0)
          expect(JSON.parse(back.stdout)).toMatchObject({
            sourceShard: 'shard-2',
            targetShard: 'shard-1',
            state: 'done',
          })
          const [original] = await directory.sql`select state from moves where id = ${move.id}`
          expect(original).toEqual({ state: 'done' })
          await expectHome(directory, tenant, 'shard-1', rows, 3)
          return
        }
        expect(aborted.code, aborted.stderr).toBe(0)
        expect(JSON.parse(aborted.stdout)).toMatchObject({ id: move.id, state: 'aborted' })
        await expectHome(directory, tenant, 'shard-1', rows, 1)
      })
    }
  }

  it('killed midway through flip (shards flipped, directory not): abort gives the tenant back to the source', async ({
    directory,
  }) => {
    const { tenant, rows, move } = await seededCrash(directory, 'flip', 'midway')
    expect(move.state).toBe('flip')
    expect(await readOwnership(connect(shard('shard-2').primary), tenant)).toEqual({
      epoch: 2,
      state: 'owner',
    })
    const aborted = await cli(['move', 'abort', move.id])
    expect(aborted.code, aborted.stderr).toBe(0)
    await expectHome(directory, tenant, 'shard-1', rows, 1)
  })

  it('killed midway through flip: resume finishes the cutover', async ({ directory }) => {
    const { tenant, rows, move } = await seededCrash(directory, 'flip', 'midway')
    const resumed = await cli(['move', 'resume', move.id])
    expect(resumed.code, resumed.stderr).toBe(0)
    await expectHome(directory, tenant, 'shard-2', rows, 2)
  })

  it('POST /admin/v1/moves/:id/abort past the cutover: refused, then with moveBack 202 and the tenant goes back', async ({
    directory,
  }) => {
    const { tenant, rows, move } = await seededCrash(directory, 'cleanup', 'before')
    const router = await startTestRouter()
    const { key } = await createKey(directory, { scope: 'admin', name: 'move-back test' })
    const abort = (body: unknown) =>
      post<{ state?: string; error?: { code: string } }>(router, `/admin/v1/moves/${move.id}/abort`, body, {
        authorization: `Bearer ${key}`,
      })
    expect(await abort({ moveBack: 'yes' })).toMatchObject({
      status: 400,
      body: { error: { code: 'invalid_input' } },
    })
    expect(await abort({})).toMatchObject({ status: 409, body: { error: { code: 'move_past_cutover' } } })
    expect(await abort({ moveBack: true })).toMatchObject({ status: 202, body: { state: 'cleanup' } })
    const back = await eventually(async () => {
      const [found] = await directory.sql<{ state: string }[]>`
        select state from moves where tenant_id = ${tenant} and source_shard = 'shard-2' and state = 'done'`
      return found
    }, 30_000)
    expect(back).toEqual({ state: 'done' })
    await expectHome(directory, tenant, 'shard-1', rows, 3)
  })

  it('a mover killed while the tenant is fenced: a router resumes the move and the write it held lands', async ({
    directory,
  }) => {
    const tenant = await seededTenant('shard-1')
    const counts = await rowsOn('shard-1', tenant)
    const { key } = await createKey(directory, { scope: 'app', tenants: [tenant], name: 'rescue test' })
    // The suite's routers leave crashed moves alone; this one looks for fenced ones twice a second.
    const router = await startTestRouter({ moveRescueIntervalMs: 500 })
    const move = await crashedMove(directory, tenant, 'verify', 'before')
    try {
      const held = await query(
        router,
        { id: tenant, shard: 'shard-1', key },
        "update customers set phone = 'held'",
      )
      expect(held.status, JSON.stringify(held.body)).toBe(200)
      const done = await eventually(async () => {
        const [found] = await directory.sql<
          { state: string }[]
        >`select state from moves where id = ${move.id}`
        return found?.state === 'done' ? found : undefined
      }, 30_000)
      expect(done).toEqual({ state: 'done' })
    } finally {
      // The other tests here crash moves for `move resume` and `move abort` to find: no rescue for them.
      await router.close()
    }
    const phones = await connect(shard('shard-2').primary)`
      select distinct phone from customers where tenant_id = ${tenant}`
    expect(phones).toEqual([{ phone: 'held' }])
    // The held write changed the content: the rows are all there, and nothing is left elsewhere.
    expect(await rowsOn('shard-2', tenant)).toEqual(counts)
    await expectHome(directory, tenant, 'shard-2', await contentOn('shard-2', tenant), 2)
  })

  it('an abort killed halfway is finished by the next abort', async ({ directory }) => {
    const { tenant, rows, move } = await seededCrash(directory, 'verify', 'before')
    const killed = await cli(['move', 'abort', move.id], { SWITCHYARD_FAILPOINT: 'move:aborting:after' })
    expect(killed.code).not.toBe(0)
    const [record] = await directory.sql`select state from moves where id = ${move.id}`
    expect(record?.state).toBe('aborting')
    const aborted = await cli(['move', 'abort', move.id])
    expect(aborted.code, aborted.stderr).toBe(0)
    await expectHome(directory, tenant, 'shard-1', rows, 1)
  })

  it('`move resume` of an abort killed halfway finishes the abort and says the move is not done (exit 1)', async ({
    directory,
  }) => {
    const { tenant, rows, move } = await seededCrash(directory, 'verify', 'before')
    const killed = await cli(['move', 'abort', move.id], { SWITCHYARD_FAILPOINT: 'move:aborting:after' })
    expect(killed.code).not.toBe(0)
    const resumed = await cli(['move', 'resume', move.id, '--json'])
    expect(resumed.code).toBe(1)
    expect(resumed.stderr).toMatch(/ended aborted, not done/)
    expect(JSON.parse(resumed.stdout)).toMatchObject({ id: move.id, state: 'aborted' })
    await expectHome(directory, tenant, 'shard-1', rows, 1)
  })
})
