import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, inject, onTestFinished } from 'vitest'
import { searchCapacity } from '../src/loadtest/capacity.ts'
import { formatCapacity } from '../src/loadtest/capacity-text.ts'
import { capacityFlags, capacityOptions, parseFlags, runFlags } from '../src/loadtest/options.ts'
import type { LoadtestReport } from '../src/loadtest/report.ts'
import { runLoadtest } from '../src/loadtest/run.ts'
import { findLoadtestTenants, seedLoadtest, volumeAt } from '../src/loadtest/seed.ts'
import { OPERATIONS } from '../src/loadtest/workload.ts'
import { connect, it, removeTenants } from './fixtures.ts'
import { cli, topology } from './support.ts'

// Test files share the topology: these tenants get a prefix of their own, and go again at the end.
const prefix = `lt${randomBytes(4).toString('hex')}`
let folder = ''

it.afterAll(async ({ directory }) => {
  const ids = (await findLoadtestTenants(directory, prefix)).map((tenant) => tenant.id)
  if (ids.length) await connect(topology().directory)`delete from moves where tenant_id = any(${ids}::uuid[])`
  await removeTenants(ids)
  if (folder) await rm(folder, { recursive: true, force: true })
})

describe('switchyard loadtest', () => {
  it('seeds 30 tenants, then reuses them', async ({ directory }) => {
    const first = await seedLoadtest(directory, topology(), { tenants: 30, scale: 0.1, prefix })
    expect(first).toMatchObject({ tenants: 30, added: 30, filled: 30 })
    // Per tenant: a business, its six days of hours, services, staff, customers, appointments.
    const { services, staff, customers, appointments } = volumeAt(0.1)
    expect(first.rows).toBe(30 * (1 + 6 + services + staff + customers + appointments))
    const again = await seedLoadtest(directory, topology(), { tenants: 30, scale: 0.1, prefix })
    expect(again).toMatchObject({ tenants: 30, added: 0, filled: 0, rows: 0 })
    const tenants = await findLoadtestTenants(directory, prefix)
    expect(tenants.map((tenant) => tenant.index)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
  })

  it('runs 10 s of open-loop load with one move, and no request fails', async ({ directory, redis }) => {
    folder = await mkdtemp(path.join(tmpdir(), 'switchyard-loadtest-'))
    const options = parseFlags(runFlags, {
      prefix,
      duration: '10',
      warmup: '2',
      rate: '40',
      connections: '8',
      moves: '1',
      json: path.join(folder, 'report.json'),
      html: path.join(folder, 'report.html'),
    })
    // Where the seeded tenants live: placement puts them where there is room, and the suite's other
    // files may have filled a shard (capacity 100) before this one runs.
    const placed = [...new Set((await findLoadtestTenants(directory, prefix)).map((tenant) => tenant.shard))]
    expect(placed.length).toBeGreaterThanOrEqual(2)
    const report = await runLoadtest({ topology: topology(), directory, redis }, options)

    expect(report.totals).toMatchObject({ requests: 400, errors: 0, ok: 400 })
    expect(report.errors).toEqual({})
    expect(report.operations.map((op) => op.name)).toEqual(OPERATIONS.map((op) => op.name))
    for (const op of report.operations) {
      expect(op.errors).toBe(0)
      expect(op.p50).toBeLessThanOrEqual(op.p99)
      expect(op.p99).toBeLessThanOrEqual(op.max)
    }
    const reads = report.operations.filter((op) => op.kind === 'read').reduce((sum, op) => sum + op.count, 0)
    expect(report.reads.replica + report.reads.primary).toBe(reads)
    expect(report.shards.map((s) => s.shard)).toEqual(expect.arrayContaining(placed))
    expect(report.shards.reduce((sum, s) => sum + s.requests, 0)).toBe(400)
    expect(report.timeline).toHaveLength(10)
    expect(report.targets.map((t) => typeof t.pass)).toEqual(['boolean', 'boolean', 'boolean'])

    const [move] = report.moves
    expect(report.moves).toHaveLength(1)
    expect(move).toMatchObject({ state: 'done', error: null })
    expect(move?.to).not.toBe(move?.from)
    expect(move?.stallMs).toEqual(expect.any(Number))
    const [row] = await connect(topology().directory)<{ shard_id: string }[]>`
      select shard_id from tenants where id = ${move?.tenant ?? ''}`
    expect(row?.shard_id).toBe(move?.to)

    const written = JSON.parse(await readFile(options.json, 'utf8')) as LoadtestReport
    expect(written).toEqual(JSON.parse(JSON.stringify(report)))
    const html = await readFile(options.html, 'utf8')
    expect(html).toContain('<script type="application/json" id="report-data">')
    expect(html).toContain("setAttribute('data-chart', 'rendered')")
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=/)
  })

  it('capacity: steps up from 20 req/s with a move a step; the knee, where the time went, both clients', async ({
    directory,
    redis,
  }) => {
    // The search's router is a process of its own, started as `switchyard router` with this environment.
    const config = process.env.SWITCHYARD_CONFIG
    process.env.SWITCHYARD_CONFIG = inject('configFile')
    onTestFinished(() => {
      if (config === undefined) delete process.env.SWITCHYARD_CONFIG
      else process.env.SWITCHYARD_CONFIG = config
    })
    const options = capacityOptions(
      {
        prefix,
        from: '20',
        maxRate: '40',
        maxSteps: '2',
        stepDuration: '5',
        warmup: '1',
        connections: '8',
        moves: '1',
        json: path.join(folder, 'capacity.json'),
        html: path.join(folder, 'capacity.html'),
      },
      capacityFlags,
    )
    const lines: string[] = []
    const report = await searchCapacity(
      { topology: topology(), directory, redis, report: (line) => lines.push(line) },
      options,
    )
    // 20 req/s first; 40 next if it held, 10 if it did not (a shared machine may be slow): two rates,
    // each run once more if it failed, and judged by that run.
    const [first, second] = report.rates
    expect(first?.rate).toBe(20)
    expect(second?.rate).toBe(first?.pass ? 40 : 10)
    expect(report.steps.filter((step) => !step.retry).map((step) => step.rate)).toEqual(
      report.rates.map((rate) => rate.rate),
    )
    for (const [i, step] of report.steps.entries())
      if (step.retry)
        expect(report.steps[i - 1]).toMatchObject({ rate: step.rate, pass: false, retry: false })
    for (const step of report.steps) {
      // Every request of the measured window answered, and counted once.
      expect(step.requests).toBe(step.rate * 5)
      expect(step.pass).toBe(step.missed.length === 0)
      expect(step.moves).toHaveLength(1)
      expect(step.moves[0]?.state).toBe('done')
      // The router's CPU is read from its own process (its /metrics), the shards' from /proc.
      expect(step.usage.routerCpu).toBeGreaterThan(0)
      expect(step.usage.routerCpuMsPerRequest).toBeGreaterThan(0)
      expect(step.usage.generatorCpuMsPerRequest).toBeGreaterThan(0)
      expect(step.sendLag.max).toBeGreaterThanOrEqual(step.sendLag.p99)
      expect(step.usage.nodes.map((node) => node.node)).toEqual(
        expect.arrayContaining(['shard-1-primary', 'shard-1-replica-1']),
      )
      // Every request took a pool connection; the window's edges cut a few either way.
      expect(step.usage.poolWaits.count).toBeGreaterThan(step.requests * 0.8)
    }
    expect(lines).toHaveLength(report.steps.length + (report.generatorCheck ? 1 : 0))
    const passed = report.rates.filter((rate) => rate.pass)
    if (passed.length === 0) expect(report.knee).toBeNull()
    else {
      const knee = report.knee
      expect(knee?.rate).toBe(Math.max(...passed.map((step) => step.rate)))
      // 3 statements per API request, less each tenant's last one, left open when the search ended.
      expect(knee?.statementsPerApiRequest).toBeGreaterThan(2)
      expect(knee?.statementsPerApiRequest).toBeLessThanOrEqual(3)
      expect(knee?.tenantsAtApiLimit).toBe(
        Math.floor(
          ((knee?.rate ?? 0) / (knee?.statementsPerApiRequest ?? 1)) *
            (3600 / report.nominal.apiRateLimitPerHour),
        ),
      )
      // Both generators at the knee, no moves: the light one sent the same number of requests.
      const check = report.generatorCheck
      if (!check || 'error' in check)
        throw new Error(`the generator check did not run: ${JSON.stringify(check)}`)
      expect(check.standard.requests).toBe((knee?.rate ?? 0) * 5)
      expect(check.light.requests).toBe((knee?.rate ?? 0) * 5)
      expect(check.light.cpuMsPerRequest).toBeGreaterThan(0)
      expect(knee?.bound).toEqual(expect.any(String))
    }
    expect(JSON.parse(await readFile(options.json, 'utf8'))).toEqual(JSON.parse(JSON.stringify(report)))
    const html = await readFile(options.html, 'utf8')
    expect(html).toContain('aria-label="p99 latency by request rate"')
    expect(html.match(/<circle /g)).toHaveLength(report.steps.length)
    if (report.knee) expect(html).toContain(`knee ${report.knee.rate} req/s`)
    expect(html).not.toMatch(/<script|<link[^>]+href=/)
    expect(formatCapacity(report)).toMatch(
      report.knee ? /^KNEE: \d+ requests\/s = \d+ tenants at/m : /^KNEE: none/m,
    )
  }, 240_000)

  it('refuses bad flags with invalid_input naming the flag', async () => {
    const answer = await cli(['loadtest', 'run', '--zipf', 'steep'])
    expect(answer.code).toBe(1)
    expect(answer.stderr).toContain('error [invalid_input]: --zipf "steep": must be a number')
    const capacity = await cli(['loadtest', 'capacity', '--precision', '2'])
    expect(capacity.stderr).toContain('error [invalid_input]: --precision "2": must be between 0.01 and 1')
    const seed = await cli(['loadtest', 'seed', '--tenants', '0'])
    expect(seed.stderr).toContain('error [invalid_input]: --tenants "0": must be at least 1')
  })
})
