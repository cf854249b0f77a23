import { describe, expect } from 'vitest'
import { seedDemoTenant } from '../examples/appointments/demo.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { addTenant } from '../src/directory/tenants.ts'
import { startMove } from '../src/migrate-tenant/mover.ts'
import { cutShortLine } from '../src/migrate-tenant/progress.ts'
import type { RunningRouter } from '../src/router/server.ts'
import type { Queries } from '../src/shard/connection.ts'
import { connect, it, removeTenants, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { contentOn, moverDeps, rowsOn, seededTenant } from './move-support.ts'
import { query } from './router-support.ts'
import { eventually, newTenantId, shard, topology } from './support.ts'

// A tenant's long transaction holds its fence lock (shared, as enter() takes it for every write): the
// move must still complete, by cutting that transaction short after `mover.cancelBlockersAfterMs`
// (the default here), and lose nothing acknowledged. Another tenant's long transaction on the same
// shard is never touched. A transaction that has written (it has an xid) is opened once the move has
// reached the fence: creating the move's replication slot waits for every such transaction on the
// source (docs/MOVES.md), which is not what this file tests.

/** Tenants that no move took (moved ones stay: their moves refer to them). */
const bystanders: string[] = []
it.afterAll(async () => {
  await removeTenants(bystanders)
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Another tenant on shard-1, in the directory and owned by the shard, that no move takes. */
async function bystanderTenant(): Promise<string> {
  const id = newTenantId()
  bystanders.push(id)
  await withDirectory(topology(), (d) => addTenant(d, topology(), { id, shard: 'shard-1' }))
  return id
}

/** The test's own advisory key: a transaction waiting for it is busy until the test lets it go. */
const GATE = 7_310_012

/**
 * An admin session on shard-1 in a transaction opened the way a router's write is (the tenant's fence
 * lock, shared). It inserts a customer named `before` (if given), then stays in its transaction: `busy`
 * waits for the test's gate (state `active`), otherwise it sends nothing (`idle in transaction`). On
 * `finish()` it inserts a customer named `after` (if given) and commits; `outcome` says how it ended.
 */
function openTransaction(tenant: string, options: { before?: string; after?: string; busy: boolean }) {
  const sql = connect(shard('shard-1').primary, 1)
  const insert = (tx: Queries, name: string) =>
    tx`insert into customers (tenant_id, name, email, phone) values (${tenant}, ${name}, 'held@example.com', '0')`
  let finish: () => void = () => {}
  const finished = new Promise<void>((resolve) => {
    finish = resolve
  })
  let ready: () => void = () => {}
  const inTransaction = new Promise<void>((resolve) => {
    ready = resolve
  })
  let pid = 0
  const outcome = sql
    .begin(async (tx) => {
      const [me] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`
      pid = me?.pid ?? 0
      await tx`select pg_advisory_xact_lock_shared(switchyard.tenant_lock_key(${tenant}::uuid))`
      if (options.before) await insert(tx, options.before)
      ready()
      if (options.busy) await Promise.all([tx`select pg_advisory_xact_lock(${GATE}::bigint)`, finished])
      else await finished
      // Only bystanders, which must live, have an `after`: postgres.js throws outside any promise when a
      // terminated session is written to.
      if (options.after) await insert(tx, options.after)
    })
    .then(
      () => 'committed',
      (error: { code?: string; message: string }) => `${error.code}: ${error.message}`,
    )
  return { outcome, finish, ready: inTransaction, pid: () => pid }
}

/** Holds the gate until `open()`: a transaction waiting for it stays `active`. */
async function closedGate() {
  const sql = connect(shard('shard-1').primary, 1)
  const reserved = await sql.reserve()
  await reserved`select pg_advisory_lock(${GATE}::bigint)`
  return {
    async open() {
      await reserved`select pg_advisory_unlock(${GATE}::bigint)`
      reserved.release()
    },
  }
}

/** Backends on shard-1's primary holding the tenant's fence lock (as the fence's blocker search reads it). */
async function lockHolders(tenant: string): Promise<number[]> {
  const rows = await connect(shard('shard-1').primary)<{ pid: number }[]>`
    select l.pid from (select switchyard.tenant_lock_key(${tenant}::uuid) as k) key, pg_locks l
    where l.locktype = 'advisory' and l.granted and l.objsubid = 1
      and l.classid = (key.k >> 32 & 4294967295)::oid and l.objid = (key.k & 4294967295)::oid`
  return rows.map((r) => r.pid)
}

const customersNamed = async (on: string, tenant: string, name: string) => {
  const [row] = await connect(shard(on).primary)<{ n: number }[]>`
    select count(*)::int as n from customers where tenant_id = ${tenant} and name = ${name}`
  return row?.n ?? -1
}

/** One writer through the router: inserts customers one at a time until told to stop. */
async function writer(router: RunningRouter, tenant: TestTenant, label: string, stop: () => boolean) {
  const acknowledged: string[] = []
  const failures: string[] = []
  for (let n = 0; !stop(); n++) {
    const answer = await query<{ rows: { id: string }[] }>(
      router,
      tenant,
      'insert into customers (tenant_id, name, email, phone) values ($1, $2, $3, $4) returning id',
      [tenant.id, `${label}-${n}`, `${label}-${n}@example.com`, '0'],
    )
    const id = answer.body.rows?.[0]?.id
    if (answer.status === 200 && id) acknowledged.push(id)
    else failures.push(`${answer.status} ${JSON.stringify(answer.body)}`)
  }
  return { acknowledged, failures }
}

describe("a tenant's long transaction does not keep its move from fencing", () => {
  it('60-second writes through the router are cancelled; writers lose nothing; another tenant is untouched', async ({
    directory,
    redis,
  }) => {
    const tenant = await tenantWithKey('shard-1')
    await seedDemoTenant(connect(shard('shard-1').primary), tenant.id, 'Blocker')
    const seeded = (await rowsOn('shard-1', tenant.id)).customers ?? 0
    const router = await startTestRouter({ rateLimitOverride: 10_000_000 })
    const sleepers = async () => {
      const [row] = await connect(shard('shard-1').primary)<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity where wait_event = 'PgSleep' and query like '%pg_sleep(60)%'`
      return row?.n ?? 0
    }

    // Open before the move starts: a write (the router enters the tenant for writing, taking its fence
    // lock shared) that sleeps for a minute before it inserts anything (so it has no xid yet).
    const sleeper = query(
      router,
      tenant,
      `insert into customers (tenant_id, name, email, phone)
       select $1, 'slow', 'slow@example.com', '0' from pg_sleep(60)`,
      [tenant.id],
    )
    await eventually(async () => ((await sleepers()) === 1 ? true : undefined))

    // Another tenant on the same shard, in a long transaction of its own (its own fence lock).
    const other = await bystanderTenant()
    const gate = await closedGate()
    const bystander = openTransaction(other, { after: 'bystander', busy: true })
    await bystander.ready

    let stopping = false
    const writers = ['w1', 'w2', 'w3'].map((label) => writer(router, tenant, label, () => stopping))
    // At the fence's doorstep: a long write that has inserted a row, then sleeps for a minute.
    let longWrite: ReturnType<typeof query> | undefined
    const deps = {
      ...moverDeps(directory, redis),
      failpoint: async (state: string, when: string) => {
        if (state !== 'fence' || when !== 'before' || longWrite) return
        longWrite = query(
          router,
          tenant,
          `with added as (insert into customers (tenant_id, name, email, phone) values ($1, 'long', 'long@example.com', '0') returning id)
           select id, pg_sleep(60)::text as slept from added`,
          [tenant.id],
        )
        await eventually(async () => ((await sleepers()) === 2 ? true : undefined))
      },
    }
    let move: Awaited<ReturnType<typeof startMove>>
    const started = performance.now()
    try {
      await sleep(200)
      move = await startMove(deps, { tenant: tenant.id, target: 'shard-2' })
    } finally {
      stopping = true
    }
    const moveMs = performance.now() - started
    const ledgers = await Promise.all(writers)
    const answers = await Promise.all([sleeper, longWrite])
    console.log(
      `move with two 60 s writes open: ${(moveMs / 1000).toFixed(1)} s (fence ${move.progress.phases?.fence} ms, ` +
        `${move.progress.fenceAttempts} attempts, stall ${move.progress.stallMs} ms); ${cutShortLine(move)}; ` +
        `the long writes got ${answers.map((a) => `${a?.status} ${JSON.stringify(a?.body)}`).join(' and ')}; ` +
        `writers: ${ledgers.reduce((n, l) => n + l.acknowledged.length, 0)} acknowledged`,
    )

    expect(move.state).toBe('done')
    expect(move.progress.cutShort).toMatchObject({ transactions: 2, terminated: 0 })
    // Both long writes were cut short: their clients got an error, and their rows are nowhere.
    expect(answers.map((a) => a?.status === 200)).toEqual([false, false])
    for (const name of ['slow', 'long'])
      for (const on of ['shard-1', 'shard-2']) expect(await customersNamed(on, tenant.id, name)).toBe(0)

    // Every acknowledged insert is on the target exactly once, with the seeded rows and nothing else.
    expect(ledgers.flatMap((l) => l.failures)).toEqual([])
    const acknowledged = ledgers.flatMap((l) => l.acknowledged)
    expect(acknowledged.length).toBeGreaterThan(0)
    const rows = await connect(shard('shard-2').primary)<{ id: string }[]>`
      select id from customers where tenant_id = ${tenant.id} and id = any(${acknowledged}::uuid[])`
    expect(rows.length).toBe(acknowledged.length)
    expect((await rowsOn('shard-2', tenant.id)).customers).toBe(seeded + acknowledged.length)

    // The other tenant's transaction was never signalled: the same backend is still in it, and it commits.
    expect(await lockHolders(other)).toEqual([bystander.pid()])
    await gate.open()
    bystander.finish()
    expect(await bystander.outcome).toBe('committed')
    expect(await customersNamed('shard-1', other, 'bystander')).toBe(1)
  })

  it('a transaction left idle holding the lock has its session ended; another idle tenant keeps its own', async ({
    directory,
    redis,
  }) => {
    const tenant = await seededTenant('shard-1')
    const before = await contentOn('shard-1', tenant)
    // Idle in transaction (as an interactive client between statements): a cancel does nothing to it.
    const other = await bystanderTenant()
    const bystander = openTransaction(other, { after: 'idle bystander', busy: false })
    await bystander.ready
    let idle: ReturnType<typeof openTransaction> | undefined
    const deps = {
      ...moverDeps(directory, redis),
      failpoint: async (state: string, when: string) => {
        if (state !== 'fence' || when !== 'before' || idle) return
        idle = openTransaction(tenant, { before: 'idle', busy: false })
        await idle.ready
      },
    }

    const started = performance.now()
    const move = await startMove(deps, { tenant, target: 'shard-3' })
    const moveMs = performance.now() - started
    // Not finished: a session the mover ended makes postgres.js reject its transaction by itself (and
    // throw outside any promise if it were written to again). Bounded: one it did not end stays open.
    const idleOutcome = await Promise.race([idle?.outcome, sleep(5_000).then(() => 'still open')])
    console.log(
      `move with an idle transaction open: ${(moveMs / 1000).toFixed(1)} s (fence ${move.progress.phases?.fence} ms, ` +
        `${move.progress.fenceAttempts} attempts); ${cutShortLine(move)}; the idle transaction ended with ${idleOutcome}`,
    )

    expect(move.state).toBe('done')
    expect(move.progress.cutShort).toMatchObject({ transactions: 1, terminated: 1 })
    expect(idleOutcome).toMatch(/^\w+: /)
    // Its insert is nowhere; the tenant's rows are on the target as they were before the move.
    expect(await customersNamed('shard-3', tenant, 'idle')).toBe(0)
    expect(await contentOn('shard-3', tenant)).toEqual(before)

    expect(await lockHolders(other)).toEqual([bystander.pid()])
    bystander.finish()
    expect(await bystander.outcome).toBe('committed')
    expect(await customersNamed('shard-1', other, 'idle bystander')).toBe(1)
  })
})
