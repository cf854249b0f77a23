import { describe, expect } from 'vitest'
import { startMove } from '../src/migrate-tenant/mover.ts'
import type { RunningRouter } from '../src/router/server.ts'
import { readOwnership } from '../src/shard/ownership.ts'
import { connect, it, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { moveArtifacts, moverDeps, rowsOn, total } from './move-support.ts'
import { query } from './router-support.ts'
import { shard } from './support.ts'

/** What one client got acknowledged: rows it inserted, and the last value acknowledged per row. */
interface Ledger {
  inserted: string[]
  lastValue: Map<string, number>
  failures: string[]
  /** When each request was sent and how long its answer took (performance.now() ms). */
  answers: { at: number; ms: number }[]
}

/**
 * One client: inserts a customer, then updates one of its own rows, over and over, one request at a
 * time, until told to stop. Every answer is checked; anything but 200 is a failure, and the slowest
 * answer overlapping a move is the longest stall this client saw.
 */
async function client(router: RunningRouter, tenant: TestTenant, label: string, stop: () => boolean) {
  const ledger: Ledger = { inserted: [], lastValue: new Map(), failures: [], answers: [] }
  const timed = async <T>(run: () => Promise<{ status: number; body: T }>) => {
    const at = performance.now()
    const answer = await run()
    ledger.answers.push({ at, ms: performance.now() - at })
    if (answer.status !== 200) ledger.failures.push(`${answer.status} ${JSON.stringify(answer.body)}`)
    return answer
  }
  for (let n = 0; !stop(); n++) {
    const inserted = await timed(() =>
      query<{ rows: { id: string }[] }>(
        router,
        tenant,
        'insert into customers (tenant_id, name, email, phone) values ($1, $2, $3, $4) returning id',
        [tenant.id, `${label}-${n}`, `${label}-${n}@example.com`, '0'],
      ),
    )
    const id = inserted.body.rows?.[0]?.id
    if (inserted.status === 200 && id) {
      ledger.inserted.push(id)
      ledger.lastValue.set(id, 0)
    }
    const own = ledger.inserted[n % Math.max(1, ledger.inserted.length)]
    if (!own) continue
    const value = n + 1
    const updated = await timed(() =>
      query<{ rows: unknown[] }>(router, tenant, 'update customers set phone = $1 where id = $2', [
        String(value),
        own,
      ]),
    )
    if (updated.status === 200) ledger.lastValue.set(own, value)
  }
  return ledger
}

describe('moving a tenant under load loses nothing', () => {
  it('clients on two routers (one cut off from Redis) write through shard-1 → shard-2 → shard-3 → shard-1', async ({
    directory,
    redis,
  }) => {
    const tenant = await tenantWithKey('shard-1')
    const fresh = await startTestRouter({ rateLimitOverride: 10_000_000 })
    // Cut off from Redis: no invalidations reach it, and its routes live a minute. Only the shard's
    // fence tells it the tenant has moved.
    const stale = await startTestRouter(
      { rateLimitOverride: 10_000_000, routeCacheTtlMs: 60_000 },
      { withoutRedis: true },
    )
    let stopping = false
    const clients = [
      ...['a1', 'a2', 'a3'].map((label) => client(fresh, tenant, label, () => stopping)),
      ...['b1', 'b2', 'b3'].map((label) => client(stale, tenant, label, () => stopping)),
    ]
    const stalls: number[] = []
    let movesStarted = 0
    try {
      await new Promise((resolve) => setTimeout(resolve, 300))
      movesStarted = performance.now()
      for (const target of ['shard-2', 'shard-3', 'shard-1']) {
        const move = await startMove(moverDeps(directory, redis), { tenant: tenant.id, target })
        expect(move.state).toBe('done')
        stalls.push(move.progress.stallMs ?? -1)
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
    } finally {
      stopping = true
    }
    const ledgers = await Promise.all(clients)
    const failures = ledgers.flatMap((l) => l.failures)
    const acknowledged = ledgers.flatMap((l) => l.inserted)
    // The first requests open the routers' connections; only requests sent after the moves began count.
    const longest = (from: Ledger[]) =>
      Math.max(
        ...from.flatMap((l) => l.answers.filter((a) => a.at >= movesStarted).map((a) => a.ms)),
      ).toFixed(1)
    console.log(
      `moves: 3, fence→flip stalls ${stalls.join(', ')} ms; ${ledgers.reduce((s, l) => s + l.answers.length, 0)} requests, ` +
        `${acknowledged.length} acknowledged inserts; longest client stall during the moves ${longest(ledgers)} ms ` +
        `(router with Redis ${longest(ledgers.slice(0, 3))} ms, cut off from Redis ${longest(ledgers.slice(3))} ms)`,
    )
    expect(failures).toEqual([])
    expect(acknowledged.length).toBeGreaterThan(30)

    // Every acknowledged insert is on shard-1 exactly once, with its last acknowledged update.
    const home = connect(shard('shard-1').primary)
    const rows = await home<{ id: string; phone: string }[]>`
      select id, phone from customers where tenant_id = ${tenant.id}`
    const found = new Map(rows.map((r) => [r.id, Number(r.phone)]))
    expect(rows.length).toBe(acknowledged.length)
    expect(new Set(acknowledged).size).toBe(acknowledged.length)
    const expected = new Map(ledgers.flatMap((l) => [...l.lastValue]))
    const wrong = [...expected].filter(([id, value]) => found.get(id) !== value)
    expect(wrong).toEqual([])

    // The router cut off from Redis learnt of every move from the shards' fence alone.
    const metrics = await (await fetch(`${stale.url}/metrics`)).text()
    expect(Number(/^switchyard_stale_routes_total (\d+)/m.exec(metrics)?.[1] ?? 0)).toBeGreaterThanOrEqual(3)

    // The other shards hold none of its rows, nor an ownership record; no move left anything behind.
    expect(total(await rowsOn('shard-2', tenant.id))).toBe(0)
    expect(total(await rowsOn('shard-3', tenant.id))).toBe(0)
    for (const away of ['shard-2', 'shard-3'])
      expect(await readOwnership(connect(shard(away).primary), tenant.id)).toBeUndefined()
    expect(await moveArtifacts()).toEqual([])
  })
})
