import pino from 'pino'
import { describe, expect } from 'vitest'
import type { Directory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { abortMove, createMove, type MoverDeps, runMove, startMove } from '../src/migrate-tenant/mover.ts'
import type { Sql } from '../src/shard/connection.ts'
import { readOwnership } from '../src/shard/ownership.ts'
import { monthStart } from '../src/shard/partitions.ts'
import { connect, it, startTestRouter, tenantWithKey } from './fixtures.ts'
import {
  addMonth,
  createPartitioned,
  leftoverProblems,
  moveArtifacts,
  moverDeps,
  rowsOn,
  seededTenant,
  total,
} from './move-support.ts'
import { query } from './router-support.ts'
import { cli, eventually, shard, topology } from './support.ts'

describe('moving a tenant between shards', () => {
  it('copies every row to the target, flips the directory and ownership, and cleans the source', async ({
    directory,
  }) => {
    const tenant = await seededTenant('shard-1')
    const before = await rowsOn('shard-1', tenant)
    expect(total(before)).toBeGreaterThan(50)
    const move = await startMove(moverDeps(directory), { tenant, target: 'shard-2' })
    expect(move.state).toBe('done')
    expect(await rowsOn('shard-2', tenant)).toEqual(before)
    expect(total(await rowsOn('shard-1', tenant))).toBe(0)
    const [row] = await directory.sql`select shard_id, epoch, state from tenants where id = ${tenant}`
    expect(row).toEqual({ shard_id: 'shard-2', epoch: 2, state: 'active' })
    expect(await readOwnership(connect(shard('shard-2').primary), tenant)).toEqual({
      epoch: 2,
      state: 'owner',
    })
    expect(await readOwnership(connect(shard('shard-1').primary), tenant)).toBeUndefined()
    expect(await moveArtifacts()).toEqual([])
    expect(move.progress.stallMs).toBeGreaterThanOrEqual(0)
    expect(move.progress.totalRows).toBe(total(before))
    // The record says so too: no late progress report may put it back into `cleanup`.
    const [record] =
      await directory.sql`select state, finished_at is not null as finished from moves where id = ${move.id}`
    expect(record).toEqual({ state: 'done', finished: true })
  })

  it('`switchyard move` runs a move to the end and prints it as JSON; `move status` shows it', async () => {
    const tenant = await seededTenant('shard-2')
    const moved = await cli(['move', tenant, '--to', 'shard-3', '--json'])
    expect(moved.stderr).toMatch(/done/)
    expect(moved.code).toBe(0)
    const move = JSON.parse(moved.stdout) as { id: string; state: string; targetShard: string }
    expect(move).toMatchObject({ state: 'done', targetShard: 'shard-3' })
    const status = await cli(['move', 'status', move.id, '--json'])
    expect(status.stderr).toBe('')
    expect(status.code).toBe(0)
    expect(JSON.parse(status.stdout)).toMatchObject({ id: move.id, state: 'done' })
    expect(total(await rowsOn('shard-3', tenant))).toBeGreaterThan(50)
  })

  it('refuses bad requests with a clear error and creates nothing', async ({ directory }) => {
    const tenant = await seededTenant('shard-1')
    const movesBefore = await directory.sql`select count(*)::int as n from moves`
    const refuse = async (request: { tenant: unknown; target: unknown }, code: string) => {
      await expect(createMove(moverDeps(directory), request)).rejects.toMatchObject({ code })
    }
    await refuse({ tenant: '8f9e7c2a-0000-4000-8000-000000000000', target: 'shard-2' }, 'tenant_unknown')
    await refuse({ tenant: 'not-a-uuid', target: 'shard-2' }, 'invalid_input')
    await refuse({ tenant, target: 'shard-9' }, 'shard_unknown')
    await refuse({ tenant, target: 'shard-1' }, 'same_shard')
    await directory.sql`update shards set capacity = (select count(*) from tenants where shard_id = 'shard-2') where id = 'shard-2'`
    try {
      await refuse({ tenant, target: 'shard-2' }, 'shard_full')
    } finally {
      await directory.sql`update shards set capacity = 100 where id = 'shard-2'`
    }
    const target = connect(shard('shard-3').primary)
    await target`update switchyard.schema_version set version = version || '+other'`
    try {
      await refuse({ tenant, target: 'shard-3' }, 'schema_mismatch')
    } finally {
      await target`update switchyard.schema_version set version = replace(version, '+other', '')`
    }
    const both = ['shard-1', 'shard-3'].map((id) => connect(shard(id).primary))
    // Partitioned on one side only: the target could not route the rows as the source does.
    await both[0]?.unsafe(`create table public.move_parts (tenant_id uuid not null, id int not null,
                            primary key (tenant_id, id)) partition by hash (tenant_id)`)
    await both[1]?.unsafe(`create table public.move_parts (tenant_id uuid not null, id int not null,
                            primary key (tenant_id, id))`)
    try {
      await refuse({ tenant, target: 'shard-3' }, 'partition_mismatch')
    } finally {
      for (const sql of both) await sql`drop table public.move_parts`
    }
    // A partition partitioned again: moves take one level of partitions.
    for (const sql of both) {
      await sql`create table public.move_parts (tenant_id uuid not null, id int not null,
                  primary key (tenant_id, id)) partition by range (id)`
      await sql`create table public.move_parts_low partition of public.move_parts
                  for values from (0) to (100) partition by hash (tenant_id)`
    }
    try {
      await refuse({ tenant, target: 'shard-3' }, 'partitioned_table')
    } finally {
      for (const sql of both) await sql`drop table public.move_parts`
    }
    // Rows of the tenant that no move put on the target: the move does not delete what it did not write.
    const stray = connect(shard('shard-3').primary)
    await stray`insert into businesses (tenant_id, name) values (${tenant}, 'Stray')`
    try {
      await refuse({ tenant, target: 'shard-3' }, 'target_has_rows')
      const [kept] = await stray`select count(*)::int as n from businesses where tenant_id = ${tenant}`
      expect(kept).toEqual({ n: 1 })
    } finally {
      await stray`delete from businesses where tenant_id = ${tenant}`
    }
    const cliRefused = await cli(['move', tenant, '--to', 'shard-1'])
    expect(cliRefused.code).toBe(1)
    expect(cliRefused.stderr).toMatch(/error \[same_shard\]/)
    expect(await directory.sql`select count(*)::int as n from moves`).toEqual(movesBefore)
    expect(await moveArtifacts()).toEqual([])
    const [row] = await directory.sql`select shard_id, state from tenants where id = ${tenant}`
    expect(row).toEqual({ shard_id: 'shard-1', state: 'active' })
    // The refused tenant still moves when asked properly.
    const move = await createMove(moverDeps(directory), { tenant, target: 'shard-2' })
    expect((await runMove(moverDeps(directory), move.id)).state).toBe('done')
  })

  it('`switchyard doctor` reports a publication or slot a move left behind, and is clean without one', async () => {
    const clean = await cli(['doctor', '--json'])
    expect(leftoverProblems(clean.stdout)).toEqual([])
    const source = connect(shard('shard-3').primary)
    const name = `sy_move_${'ab'.repeat(16)}`
    await source.unsafe(`create publication ${name}`)
    await source`select pg_create_logical_replication_slot(${name}, 'pgoutput')`
    try {
      const found = await cli(['doctor', '--json'])
      expect(found.code).toBe(1)
      expect(leftoverProblems(found.stdout).map((f) => f.detail)).toEqual([
        expect.stringMatching(
          /^publication sy_move_abab.* belongs to move abababab-abab-abab-abab-abababababab, which is not open/,
        ),
        expect.stringMatching(/^slot sy_move_abab.*inactive, holding .* of WAL/),
      ])
    } finally {
      await source`select pg_drop_replication_slot(${name})`
      await source.unsafe(`drop publication ${name}`)
    }
  })

  it('`switchyard doctor` reports the WAL kept by an open move that no process runs and whose slot nobody reads', async ({
    directory,
  }) => {
    const tenant = await seededTenant('shard-1')
    const deps: MoverDeps = {
      ...moverDeps(directory),
      failpoint: (state) => {
        if (state === 'catch_up') throw new Error('the mover stops here')
      },
    }
    await expect(startMove(deps, { tenant, target: 'shard-2' })).rejects.toThrow(/stops here/)
    const [move] = await directory.sql<{ id: string }[]>`select id from moves where tenant_id = ${tenant}`
    const id = move?.id as string
    const slot = `sy_move_${id.replaceAll('-', '')}`
    const findings = async () => leftoverProblems((await cli(['doctor', '--json'])).stdout)
    // Its subscription still streams: the slot is read, nothing piles up.
    expect(await findings()).toEqual([])
    // An apply error disables the subscription (disable_on_error): the slot keeps WAL from now on.
    await connect(shard('shard-2').primary).unsafe(`alter subscription ${slot} disable`)
    const reported = await eventually(async () => {
      const found = await findings()
      return found.length > 0 ? found : undefined
    }, 10_000)
    expect(reported.map((f) => f.detail)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^slot ${slot} \\(inactive, holding .* of WAL\\) belongs to move ${id} \\(catch_up\\), which no process runs: .*move resume ${id}`,
        ),
      ),
    ])
    await abortMove(moverDeps(directory), id)
    expect(await findings()).toEqual([])
  })

  it('POST /admin/v1/moves starts a move in the router; GET shows it to the end; /metrics has its stall', async ({
    directory,
  }) => {
    const router = await startTestRouter()
    const { key } = await createKey(directory, { scope: 'admin', name: 'move test' })
    const admin = (method: string, path: string, body?: unknown) =>
      fetch(`${router.url}/admin/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      }).then(async (r) => ({
        status: r.status,
        body: (await r.json()) as { id?: string; state?: string; error?: { code: string } },
      }))
    const tenant = await seededTenant('shard-3')
    const started = await admin('POST', '/moves', { tenant, to: 'shard-1' })
    expect(started.status).toBe(202)
    const id = started.body.id as string
    const done = await eventually(async () => {
      const move = await admin('GET', `/moves/${id}`)
      return move.body.state === 'done' ? move.body : undefined
    }, 30_000)
    expect(done).toMatchObject({ tenantId: tenant, sourceShard: 'shard-3', targetShard: 'shard-1' })
    const metrics = await (await fetch(`${router.url}/metrics`)).text()
    expect(metrics).toMatch(/switchyard_move_stall_seconds_count 1/)
    expect(metrics).toMatch(/switchyard_moves_total\{outcome="done"\} 1/)

    const refused = await Promise.all([
      admin('POST', '/moves', { tenant, to: 'shard-1' }),
      admin('POST', '/moves', { tenant: 'nope', to: 'shard-2' }),
      admin('POST', '/moves', { tenant, to: 'shard-2', extra: 1 }),
      admin('GET', '/moves/not-a-uuid'),
    ])
    expect(refused.map((r) => [r.status, r.body.error?.code])).toEqual([
      [409, 'same_shard'],
      [400, 'invalid_input'],
      [400, 'invalid_input'],
      [400, 'invalid_input'],
    ])
  })

  it('an error while fenced, before the flip, unfences the tenant; the move waits in catch_up and resumes', async ({
    directory,
  }) => {
    const tenant = await seededTenant('shard-1')
    const rows = await rowsOn('shard-1', tenant)
    const failing = {
      ...moverDeps(directory),
      failpoint: (state: string, when: string) => {
        if (state === 'verify' && when === 'before') throw new Error('injected: the target stopped answering')
      },
    }
    await expect(startMove(failing, { tenant, target: 'shard-2' })).rejects.toThrow(/injected/)
    const [move] = await directory.sql<{ id: string; state: string; error: string }[]>`
      select id, state, error from moves where tenant_id = ${tenant}`
    expect(move).toMatchObject({ state: 'catch_up', error: expect.stringMatching(/injected/) })
    const [route] = await directory.sql`select shard_id, state from tenants where id = ${tenant}`
    expect(route).toEqual({ shard_id: 'shard-1', state: 'moving' })
    expect(await readOwnership(connect(shard('shard-1').primary), tenant)).toEqual({
      epoch: 1,
      state: 'owner',
    })
    const resumed = await runMove(moverDeps(directory), move?.id as string)
    expect(resumed.state).toBe('done')
    expect(await rowsOn('shard-2', tenant)).toEqual(rows)
  })

  it('a runner that lost its run lock (its directory session ended) stops at its next record write; another finishes', async ({
    directory,
  }) => {
    const tenant = await seededTenant('shard-1')
    const rows = await rowsOn('shard-1', tenant)
    const cutOff = {
      ...moverDeps(directory),
      // While fenced, the session holding the run lock ends (a network cut, a directory restart): from
      // here on another process (a router's rescue, an operator) may run the move. This one lives on.
      failpoint: async (state: string, when: string) => {
        if (state !== 'verify' || when !== 'before') return
        await directory.sql`
          select pg_terminate_backend(l.pid, 5000) from pg_locks l join moves m on m.tenant_id = ${tenant}
          where l.locktype = 'advisory' and l.classid = hashtext('switchyard.move')::oid
            and l.objid = hashtext(m.id::text)::oid`
      },
    }
    await expect(startMove(cutOff, { tenant, target: 'shard-2' })).rejects.toThrow(
      /no longer run by this process/,
    )
    const [move] = await directory.sql<{ id: string; state: string }[]>`
      select id, state from moves where tenant_id = ${tenant}`
    // It did not go on to the flip: the directory and the source still have the tenant, fenced.
    expect(move?.state).toBe('verify')
    const [route] = await directory.sql`select shard_id, state from tenants where id = ${tenant}`
    expect(route).toEqual({ shard_id: 'shard-1', state: 'frozen' })
    const resumed = await runMove(moverDeps(directory), move?.id as string)
    expect(resumed.state).toBe('done')
    expect(await rowsOn('shard-2', tenant)).toEqual(rows)
  })

  it('a move that waits longer than an idle connection lives keeps its run lock to the end', async ({
    directory,
  }) => {
    const tenant = await seededTenant('shard-1')
    const slow = {
      ...moverDeps(directory),
      // A long copy: the run lock's session sits idle past the 5 s after which pools drop idle connections.
      failpoint: async (state: string, when: string) => {
        if (state === 'copy' && when === 'before') await new Promise((resolve) => setTimeout(resolve, 6_000))
      },
    }
    const move = await startMove(slow, { tenant, target: 'shard-2' })
    expect(move.state).toBe('done')
  })

  it('a write held by a fence that gave up without the route changing lands once the shard unfences', async ({
    directory,
  }) => {
    const router = await startTestRouter({ rateLimitOverride: 1_000_000 })
    const tenant = await tenantWithKey('shard-2')
    const source = connect(shard('shard-2').primary)
    const fenced = (state: 'frozen' | 'owner') =>
      source`update switchyard.tenant_ownership set state = ${state} where tenant_id = ${tenant.id}`
    // The shard is fenced and the directory still says `moving`, as while a fence is tried.
    await directory.sql`update tenants set state = 'moving' where id = ${tenant.id}`
    await fenced('frozen')
    try {
      const write = query(router, tenant, 'insert into customers (tenant_id, name) values ($1, $2)', [
        tenant.id,
        'held by a fence',
      ])
      await new Promise((resolve) => setTimeout(resolve, 300))
      // The fence gives up: the shard serves the tenant again; the route (shard, epoch, moving) is unchanged.
      await fenced('owner')
      const answer = await write
      expect(answer.status, JSON.stringify(answer.body)).toBe(200)
      expect((await rowsOn('shard-2', tenant.id)).customers).toBe(1)
    } finally {
      await fenced('owner')
      await directory.sql`update tenants set state = 'active' where id = ${tenant.id}`
    }
  })
})

describe('verify from a baseline hashed before the fence', () => {
  /** Mover deps that keep the baseline whatever the tenant's size, and collect the mover's log. */
  const baselineDeps = (
    directory: Directory,
    logs: string[],
    beforeFence: () => Promise<unknown>,
  ): MoverDeps => ({
    ...moverDeps(directory),
    topology: { ...topology(), mover: { ...topology().mover, verifyFromBaselineAboveMs: 0 } },
    logger: pino({ level: 'info' }, { write: (line: string) => logs.push(line) }),
    // Runs after the baseline is taken (catch-up done) and before the fence.
    failpoint: async (state, when) => {
      if (state === 'fence' && when === 'before') await beforeFence()
    },
  })
  const verified = (logs: string[]) =>
    logs.map((line) => JSON.parse(line)).filter((entry) => entry.msg === 'verify hashed both sides')

  it('inserts, updates and deletes made between the baseline and the fence verify equal', async ({
    directory,
  }) => {
    const tenant = await seededTenant('shard-1')
    const source = connect(shard('shard-1').primary)
    const [first] = await source<{ customer: string; appointment: string }[]>`
      select (select id from customers where tenant_id = ${tenant} order by id limit 1) as customer,
             (select id from appointments where tenant_id = ${tenant} order by id limit 1) as appointment`
    const logs: string[] = []
    const deps = baselineDeps(directory, logs, async () => {
      await source`insert into customers (tenant_id, name, email, phone)
                   values (${tenant}, 'Late', 'late@example.com', 'inserted')`
      await source`update customers set phone = 'updated' where tenant_id = ${tenant} and id = ${first?.customer ?? ''}`
      await source`delete from appointments where tenant_id = ${tenant} and id = ${first?.appointment ?? ''}`
    })
    const move = await startMove(deps, { tenant, target: 'shard-2' })
    expect(move.state).toBe('done')
    expect(verified(logs)).toMatchObject([{ sidesFromBaseline: 2, equal: true }])
    const target = connect(shard('shard-2').primary)
    const phones = await target<{ phone: string }[]>`
      select phone from customers where tenant_id = ${tenant} and phone in ('inserted', 'updated') order by phone`
    expect(phones).toEqual([{ phone: 'inserted' }, { phone: 'updated' }])
    const [gone] =
      await target`select count(*)::int as n from appointments where id = ${first?.appointment ?? ''}`
    expect(gone).toEqual({ n: 0 })
  })

  it('a baseline whose snapshot session is gone is not used: that side is hashed in full', async ({
    directory,
  }) => {
    const tenant = await seededTenant('shard-1')
    const source = connect(shard('shard-1').primary)
    const logs: string[] = []
    const deps = baselineDeps(directory, logs, async () => {
      await source`insert into customers (tenant_id, name, email, phone) values (${tenant}, 'Late', 'l@example.com', '1')`
      // The session exporting the source's snapshot ends (a cut, idle_in_transaction_session_timeout).
      const ended = await source`
        select pg_terminate_backend(pid, 5000) as ended from pg_stat_activity
        where state = 'idle in transaction' and query like '%pg_export_snapshot%'`
      expect(ended).toEqual([{ ended: true }])
    })
    const move = await startMove(deps, { tenant, target: 'shard-2' })
    expect(move.state).toBe('done')
    expect(verified(logs)).toMatchObject([{ sidesFromBaseline: 1, equal: true }])
  })

  it('a table with column types that have no hash function (json, point) verifies by row text', async ({
    directory,
  }) => {
    const shards = ['shard-1', 'shard-2'].map((id) => connect(shard(id).primary))
    const create = `create table public.move_notes (tenant_id uuid not null, id int not null, body json,
                      at point, primary key (tenant_id, id))`
    for (const sql of shards) await sql.unsafe(create)
    try {
      const tenant = await seededTenant('shard-1')
      const [source, target] = shards as [ReturnType<typeof connect>, ReturnType<typeof connect>]
      await source`insert into move_notes select ${tenant}, n, json_build_object('n', n), point(n, n)
                   from generate_series(1, 200) n`
      const logs: string[] = []
      const deps = baselineDeps(directory, logs, async () => {
        await source`update move_notes set body = '{"changed": true}' where tenant_id = ${tenant} and id = 7`
        await source`insert into move_notes values (${tenant}, 201, '[]', point(0, 0))`
      })
      const move = await startMove(deps, { tenant, target: 'shard-2' })
      expect(move.state).toBe('done')
      expect(verified(logs)).toMatchObject([{ sidesFromBaseline: 2, equal: true }])
      const [moved] = await target<{ n: number; changed: string }[]>`
        select count(*)::int as n, max(body::text) filter (where id = 7) as changed
        from move_notes where tenant_id = ${tenant}`
      expect(moved).toEqual({ n: 201, changed: '{"changed": true}' })
    } finally {
      for (const sql of shards) await sql`drop table if exists public.move_notes`
    }
  })

  it('a partitioned table verifies from its baseline too, by its key’s first column: rows inserted, moved to another month and deleted since', async ({
    directory,
  }) => {
    const shards = ['shard-1', 'shard-2'].map((id) => connect(shard(id).primary)) as [Sql, Sql]
    const months = [0, 1].map((offset) => monthStart(new Date(), offset)) as [string, string]
    for (const sql of shards) await createPartitioned(sql, 'move_visits')
    for (const month of months) await addMonth(shards[0], 'move_visits', month)
    try {
      const tenant = await seededTenant('shard-1')
      const [source, target] = shards
      await source`insert into move_visits (tenant_id, at, note)
                   select ${tenant}, ${months[0]}::timestamptz + n * interval '1 hour', 'seeded'
                   from generate_series(1, 500) n`
      const logs: string[] = []
      const deps = baselineDeps(directory, logs, async () => {
        await source`insert into move_visits (tenant_id, at, note) values (${tenant}, ${months[1]}, 'new')`
        await source`update move_visits set at = at + interval '40 days', counter = 7
                     where tenant_id = ${tenant} and id = (select id from move_visits
                       where tenant_id = ${tenant} and at < ${months[0]}::timestamptz + interval '10 hours' order by at limit 1)`
        await source`delete from move_visits where tenant_id = ${tenant} and note = 'seeded'
                     and at = ${months[0]}::timestamptz + interval '20 hours'`
      })
      const move = await startMove(deps, { tenant, target: 'shard-2' })
      expect(move.state).toBe('done')
      const [entry] = verified(logs)
      expect(entry).toMatchObject({ sidesFromBaseline: 2, equal: true })
      expect(entry.keyedTables).toBe(entry.tables)
      const [moved] = await target<{ n: number; moved: number }[]>`
        select count(*)::int as n, count(*) filter (where counter = 7 and at >= ${months[1]})::int as moved
        from move_visits where tenant_id = ${tenant}`
      expect(moved).toEqual({ n: 500, moved: 1 })
    } finally {
      for (const sql of shards) await sql`drop table if exists public.move_visits`
    }
  })

  it("a row changed on the target behind the mover's back since the baseline fails verify", async ({
    directory,
  }) => {
    const tenant = await seededTenant('shard-1')
    const target = connect(shard('shard-2').primary)
    const logs: string[] = []
    const deps = baselineDeps(
      directory,
      logs,
      () => target`
      update customers set phone = 'diverged'
      where tenant_id = ${tenant} and id = (select id from customers where tenant_id = ${tenant} order by id limit 1)`,
    )
    await expect(startMove(deps, { tenant, target: 'shard-2' })).rejects.toThrow(
      /customers: .* \(content differs\)/,
    )
    expect(verified(logs)).toMatchObject([{ sidesFromBaseline: 2, equal: false }])
    expect(logs.some((line) => line.includes('hashing in full'))).toBe(true)
    const [move] = await directory.sql<{ id: string; state: string }[]>`
      select id, state from moves where tenant_id = ${tenant}`
    expect(move?.state).toBe('catch_up')
    await abortMove(moverDeps(directory), move?.id as string)
    expect(await moveArtifacts()).toEqual([])
  })
})
