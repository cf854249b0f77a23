import { describe, expect } from 'vitest'
import { startMove } from '../src/migrate-tenant/mover.ts'
import type { RunningRouter } from '../src/router/server.ts'
import type { Sql } from '../src/shard/connection.ts'
import type { Finding } from '../src/shard/doctor.ts'
import { readOwnership } from '../src/shard/ownership.ts'
import { monthStart, partitionName } from '../src/shard/partitions.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { addMonth, createPartitioned, moveArtifacts, moverDeps } from './move-support.ts'
import { query } from './router-support.ts'
import { cli, shard } from './support.ts'

/**
 * The seed's monthly partitions (issue 16): a partitioned tenant table the project has never seen,
 * created here, moves with its tenant, and `partitions ensure` keeps every shard a month ahead.
 */

const SHARDS = ['shard-1', 'shard-2', 'shard-3']
const admin = (id: string): Sql => connect(shard(id).primary)

const dropEverywhere = async (table: string) => {
  for (const id of SHARDS) await admin(id).unsafe(`drop table if exists public.${table}`)
}

/** What one writer got acknowledged: rows it inserted, and the last counter acknowledged per row. */
interface Ledger {
  inserted: string[]
  counter: Map<string, number>
  failures: string[]
}

/** The first or the last millisecond of month `offset` (−1, 0, 1 from now): rows on month boundaries. */
function boundary(n: number): string {
  const offset = (n % 3) - 1
  const start = Date.parse(`${monthStart(new Date(), offset)}T00:00:00Z`)
  const end = Date.parse(`${monthStart(new Date(), offset + 1)}T00:00:00Z`) - 1
  return new Date(n % 2 === 0 ? start : end).toISOString()
}

/** Inserts rows on month boundaries and updates its own, moving them to another month (another partition). */
async function writer(router: RunningRouter, tenant: TestTenant, label: string, stop: () => boolean) {
  const ledger: Ledger = { inserted: [], counter: new Map(), failures: [] }
  for (let n = 0; !stop(); n++) {
    const inserted = await query<{ rows: { id: string }[] }>(
      router,
      tenant,
      'insert into part_visits (tenant_id, at, note) values ($1, $2, $3) returning id',
      [tenant.id, boundary(n), `${label}-${n}`],
    )
    const id = inserted.body.rows?.[0]?.id
    if (inserted.status !== 200 || !id) {
      ledger.failures.push(`${inserted.status} ${JSON.stringify(inserted.body)}`)
      continue
    }
    ledger.inserted.push(id)
    ledger.counter.set(id, 0)
    const own = ledger.inserted[(n * 7) % ledger.inserted.length] as string
    const updated = await query(
      router,
      tenant,
      'update part_visits set counter = $1, at = $2 where id = $3',
      [n + 1, boundary(n + 1), own],
    )
    if (updated.status === 200) ledger.counter.set(own, n + 1)
    else ledger.failures.push(`${updated.status} ${JSON.stringify(updated.body)}`)
  }
  return ledger
}

describe('a partitioned tenant table moves with its tenant', () => {
  it('50k rows in 3 monthly partitions move shard-1 → 2 → 3 → 1 under 8 writers on two routers: nothing lost, nothing left', async ({
    directory,
    redis,
  }) => {
    const months = [-1, 0, 1].map((offset) => monthStart(new Date(), offset))
    try {
      // Only shard-1 has the partitions: each move gives its target the source's before the copy.
      for (const id of SHARDS) await createPartitioned(admin(id), 'part_visits')
      for (const month of months) await addMonth(admin('shard-1'), 'part_visits', month)
      const tenant = await tenantWithKey('shard-1')
      await admin('shard-1').unsafe(
        `insert into part_visits (tenant_id, at, note)
         select $1, $2::timestamptz + (n % (80 * 24)) * interval '1 hour', 'seeded'
         from generate_series(1, 50000) n`,
        [tenant.id, `${months[0]}T00:00:00Z`],
      )
      const routers = [
        await startTestRouter({ rateLimitOverride: 10_000_000 }),
        await startTestRouter({ rateLimitOverride: 10_000_000 }),
      ]
      let stopping = false
      const writers = Array.from({ length: 8 }, (_, i) =>
        writer(routers[i % 2] as RunningRouter, tenant, `w${i}`, () => stopping),
      )
      const stalls: number[] = []
      try {
        await new Promise((resolve) => setTimeout(resolve, 300))
        for (const target of ['shard-2', 'shard-3', 'shard-1']) {
          const move = await startMove(moverDeps(directory, redis), { tenant: tenant.id, target })
          expect(move.state).toBe('done')
          stalls.push(move.progress.stallMs ?? -1)
        }
      } finally {
        stopping = true
      }
      const ledgers = await Promise.all(writers)
      const acknowledged = ledgers.flatMap((ledger) => ledger.inserted)
      console.log(
        `partitioned moves: stalls ${stalls.join(', ')} ms; ${acknowledged.length} acknowledged inserts by 8 writers`,
      )
      expect(ledgers.flatMap((ledger) => ledger.failures)).toEqual([])
      expect(acknowledged.length).toBeGreaterThan(30)

      // On shard-1: the seeded rows and every acknowledged insert once, with its last acknowledged counter,
      // each in the partition of its month.
      const home = admin('shard-1')
      const [seeded] = await home<{ n: number }[]>`
        select count(*)::int as n from part_visits where tenant_id = ${tenant.id} and note = 'seeded'`
      expect(seeded?.n).toBe(50_000)
      const rows = await home<{ id: string; counter: number; misplaced: boolean }[]>`
        select id, counter,
               tableoid::regclass::text <> 'part_visits_p' || to_char(at at time zone 'UTC', 'YYYY_MM') as misplaced
        from part_visits where tenant_id = ${tenant.id} and note <> 'seeded'`
      expect(rows.length).toBe(acknowledged.length)
      expect(new Set(rows.map((row) => row.id)).size).toBe(acknowledged.length)
      expect(rows.filter((row) => row.misplaced)).toEqual([])
      const found = new Map(rows.map((row) => [row.id, row.counter]))
      const expected = new Map(ledgers.flatMap((ledger) => [...ledger.counter]))
      expect([...expected].filter(([id, counter]) => found.get(id) !== counter)).toEqual([])

      // The other shards hold none of its rows and no ownership record; they got the partitions, with
      // RLS forced and the parent's policy; no move left anything behind.
      for (const away of ['shard-2', 'shard-3']) {
        const sql = admin(away)
        const [left] = await sql<{ n: number }[]>`
          select count(*)::int as n from part_visits where tenant_id = ${tenant.id}`
        expect(left?.n).toBe(0)
        expect(await readOwnership(sql, tenant.id)).toBeUndefined()
        const partitions = await sql<{ name: string; rls: boolean; forced: boolean; policies: number }[]>`
          select c.relname as name, c.relrowsecurity as rls, c.relforcerowsecurity as forced,
                 (select count(*)::int from pg_policy p where p.polrelid = c.oid) as policies
          from pg_inherits i join pg_class c on c.oid = i.inhrelid
          where i.inhparent = 'public.part_visits'::regclass order by 1`
        expect(partitions).toEqual(
          months.map((month) => ({
            name: partitionName('part_visits', month),
            rls: true,
            forced: true,
            policies: 1,
          })),
        )
      }
      expect(await moveArtifacts()).toEqual([])
    } finally {
      await dropEverywhere('part_visits')
    }
  })
})

describe('switchyard partitions ensure', () => {
  it('run twice at once on every shard, it creates each partition once; a write dated next month then succeeds everywhere', async () => {
    try {
      for (const id of SHARDS) await createPartitioned(admin(id), 'part_ensure')
      const problems = async () =>
        (JSON.parse((await cli(['doctor', '--json'])).stdout) as { findings: Finding[] }).findings
          .filter((finding) => finding.target.includes('part_ensure') && !finding.ok)
          .map((finding) => `${finding.check}: ${finding.target}`)
      expect(await problems()).toEqual(SHARDS.map((id) => `partitions kept ahead: ${id} public.part_ensure`))
      const runs = await Promise.all(
        [0, 1].map(() => cli(['partitions', 'ensure', '--months-ahead', '2', '--json'])),
      )
      for (const run of runs) expect(run.code, run.stderr).toBe(0)
      const created = runs.flatMap(
        (run) =>
          JSON.parse(run.stdout) as { shard: string; outcomes: { table: string; created: string[] }[] }[],
      )
      const wanted = [0, 1, 2].map(
        (offset) => `public.${partitionName('part_ensure', monthStart(new Date(), offset))}`,
      )
      for (const id of SHARDS) {
        const made = created
          .filter((result) => result.shard === id)
          .flatMap((result) =>
            result.outcomes.filter((o) => o.table === 'public.part_ensure').flatMap((o) => o.created),
          )
        expect(made.sort()).toEqual(wanted.sort())
      }
      // Again: nothing to do.
      const again = await cli(['partitions', 'ensure', '--months-ahead', '2', '--json'])
      expect(again.code).toBe(0)
      const outcomes = (JSON.parse(again.stdout) as { outcomes: { created: string[] }[] }[]).flatMap(
        (result) => result.outcomes,
      )
      expect(outcomes.flatMap((outcome) => outcome.created)).toEqual([])
      const nextMonth = `${monthStart(new Date(), 1)}T12:00:00Z`
      const router = await startTestRouter()
      for (const id of SHARDS) {
        const tenant = await tenantWithKey(id)
        const answer = await query<{ rows: { id: string }[] }>(
          router,
          tenant,
          'insert into part_ensure (tenant_id, at) values ($1, $2) returning id',
          [tenant.id, nextMonth],
        )
        expect(answer.status, JSON.stringify(answer.body)).toBe(200)
        const [row] = await admin(id)<{ partition: string }[]>`
          select tableoid::regclass::text as partition from part_ensure where id = ${answer.body.rows[0]?.id ?? null}`
        expect(row?.partition).toBe(partitionName('part_ensure', monthStart(new Date(), 1)))
      }
      expect(await problems()).toEqual([])
      // A DEFAULT partition on one shard: drift. It holds a row dated far ahead (what it is for) and one
      // of a month the shards keep (3 ahead) that has no partition yet: that one blocks its month.
      await admin('shard-2').unsafe(
        'create table public.part_ensure_default partition of public.part_ensure default',
      )
      const parkedMonth = monthStart(new Date(), 3)
      const [parked] = await admin('shard-2')<{ id: string; at: Date }[]>`
        insert into part_ensure (tenant_id, at) values
          (gen_random_uuid(), '2100-01-01T00:00:00Z'), (gen_random_uuid(), ${`${parkedMonth}T12:00:00Z`})
        returning id, at`.then((rows) => rows.filter((row) => row.at.getUTCFullYear() < 2100))
      // (Made by hand without RLS, it is also a tenant table that RLS does not guard.)
      expect((await problems()).sort()).toEqual([
        'RLS enabled and forced: shard-2-primary public.part_ensure_default',
        'default partition holds no rows of kept months: shard-2 public.part_ensure',
        'partitions agree across shards: public.part_ensure',
      ])
      // Retention, asked for: month partitions older than N months are detached and dropped, rows and all;
      // newer ones and the DEFAULT partition stay. The month the DEFAULT partition held a row of is made,
      // its row moved into it.
      const old = monthStart(new Date(), -5)
      await addMonth(admin('shard-1'), 'part_ensure', old)
      await admin('shard-1').unsafe(
        'insert into part_ensure (tenant_id, at) values (gen_random_uuid(), $1)',
        [`${old}T12:00:00Z`],
      )
      const retained = await cli([
        'partitions',
        'ensure',
        '--months-ahead',
        '3',
        '--retain-months',
        '2',
        '--table',
        'part_ensure',
        '--json',
      ])
      expect(retained.code, retained.stderr).toBe(0)
      const dropped = (
        JSON.parse(retained.stdout) as { shard: string; outcomes: { dropped: string[] }[] }[]
      ).map((result) => ({
        shard: result.shard,
        dropped: result.outcomes.flatMap((outcome) => outcome.dropped),
      }))
      expect(dropped).toEqual([
        { shard: 'shard-1', dropped: [`public.${partitionName('part_ensure', old)}`] },
        { shard: 'shard-2', dropped: [] },
        { shard: 'shard-3', dropped: [] },
      ])
      const [kept] = await admin('shard-2')<{ n: number }[]>`
        select count(*)::int as n from pg_inherits where inhparent = 'public.part_ensure'::regclass`
      expect(kept?.n).toBe(5)
      const rows = await admin('shard-2')<{ partition: string; at: Date }[]>`
        select tableoid::regclass::text as partition, at from part_ensure
        where id = ${parked?.id ?? null} or at >= '2100-01-01' order by at`
      expect(rows.map((row) => [row.partition, row.at.toISOString()])).toEqual([
        [partitionName('part_ensure', parkedMonth), `${parkedMonth}T12:00:00.000Z`],
        ['part_ensure_default', '2100-01-01T00:00:00.000Z'],
      ])
      expect((await problems()).sort()).toEqual([
        'RLS enabled and forced: shard-2-primary public.part_ensure_default',
        'partitions agree across shards: public.part_ensure',
      ])
      const bad = await cli(['partitions', 'ensure', '--months-ahead', 'soon'])
      expect(bad.code).toBe(1)
      expect(bad.stderr).toMatch(/error \[invalid_input\]: --months-ahead/)
      const typo = await cli(['partitions', 'ensure', '--table', 'part_ensur'])
      expect(typo.code).toBe(1)
      expect(typo.stderr).toMatch(
        /error \[invalid_input\]: --table: no table partitioned by month named "part_ensur"/,
      )
    } finally {
      await dropEverywhere('part_ensure')
    }
  })
})

describe('routers keep partitions ahead', () => {
  it('a router creates this month’s and the next months’ partitions on every shard soon after it starts', async () => {
    try {
      for (const id of SHARDS) await createPartitioned(admin(id), 'part_kept')
      await startTestRouter({ partitionKeeperIntervalMs: 3_600_000, partitionMonthsAhead: 1 })
      const wanted = [0, 1].map((offset) => partitionName('part_kept', monthStart(new Date(), offset)))
      for (const id of SHARDS)
        await expect
          .poll(
            async () =>
              (
                await admin(id)<{ name: string }[]>`
                  select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
                  where i.inhparent = 'public.part_kept'::regclass order by 1`
              ).map((row) => row.name),
            { timeout: 15_000, interval: 250 },
          )
          .toEqual(wanted)
    } finally {
      await dropEverywhere('part_kept')
    }
  })
})
