/**
 * `npm run bench:move`: moves one tenant holding about 100,000 rows twice (with `switchyard move` in
 * its own process) while clients keep writing for it through a router: shard-1 → shard-2 with the
 * example schema of before issue 16 (appointments unpartitioned), then, after `migrate` partitions
 * appointments by month on every shard (migration 0006, timed: the upgrade path of docs/PARTITIONS.md),
 * shard-2 → shard-3. For each it prints the move's total time, copy rate and cutover stall, the write
 * latency clients saw (p50 before, p99 and max during the move) and their errors, with PASS/FAIL
 * against the targets of issue 5, then both side by side. Boots the test suite's throwaway topology
 * (free ports, a temporary folder) and tears it down at the end, also on error or Ctrl-C.
 */
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import pino from 'pino'
import { z } from 'zod'
import { fillTenant } from '../examples/appointments/generate.ts'
import { clusterDown, clusterUp } from '../src/cluster/launcher.ts'
import { redisServerPath } from '../src/cluster/redis-node.ts'
import { parseTopology } from '../src/config/load.ts'
import type { Topology } from '../src/config/topology.ts'
import { openDirectory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { migrateAll } from '../src/directory/migrate.ts'
import { addTenant } from '../src/directory/tenants.ts'
import type { Move } from '../src/migrate-tenant/record.ts'
import { startRouter } from '../src/router/server.ts'
import { withAdmin } from '../src/shard/connection.ts'
import { migrationsUpTo } from '../test/setup/migrations.ts'
import { freePorts, testTopologyInput } from '../test/setup/topology.ts'
import { createCleanups } from './router.ts'

const options = z
  .object({
    rows: z.coerce.number().int().min(1000).default(100_000),
    clients: z.coerce.number().int().min(1).max(64).default(4),
    rate: z.coerce.number().int().min(1).default(100),
  })
  .parse(
    parseArgs({
      options: { rows: { type: 'string' }, clients: { type: 'string' }, rate: { type: 'string' } },
    }).values,
  )

const TARGETS = { stallMs: 200, errors: 0, totalSeconds: 30 }
const CLI = new URL('../bin/switchyard.js', import.meta.url)
const MIGRATIONS = fileURLToPath(new URL('../examples/appointments/migrations', import.meta.url))

interface Sample {
  at: number
  ms: number
  ok: boolean
}

// Teardown in reverse order, once: at the end, on error, or on Ctrl-C (bench:router's helper).
const cleanups = createCleanups()
let configFile = ''

/** The last migration of the example before appointments was partitioned. */
const UNPARTITIONED = '0005_per_day_quota_on_update'

async function boot(): Promise<{ topology: Topology; upgrade: () => Promise<Topology> }> {
  if (!redisServerPath()) throw new Error('bench:move needs redis-server on the PATH, as the tests do')
  const home = await mkdtemp(path.join(os.tmpdir(), 'switchyard-bench-move-'))
  cleanups.add(() => rm(home, { recursive: true, force: true }))
  const older = migrationsUpTo(MIGRATIONS, UNPARTITIONED)
  cleanups.add(() => rm(older, { recursive: true, force: true }))
  const base = testTopologyInput(await freePorts(9))
  const input = (migrations: string) => ({
    ...base,
    router: { ...base.router, rateLimitOverride: 2_000_000_000 },
    mover: { cleanupGraceMs: 500 },
    tenantSchema: { ...base.tenantSchema, migrations },
  })
  // The mover runs as `switchyard move` in its own process, as an operator would run it.
  configFile = path.join(home, 'topology.json')
  const configure = async (migrations: string) => {
    await writeFile(configFile, JSON.stringify(input(migrations)))
    return parseTopology(input(migrations), 'bench/move.ts', {})
  }
  const topology = await configure(older)
  cleanups.add(() => clusterDown(topology, { home }))
  await clusterUp(topology, { home, durable: false })
  await migrateAll(topology)
  const upgrade = async () => {
    const upgraded = await configure(MIGRATIONS)
    await migrateAll(upgraded)
    return upgraded
  }
  return { topology, upgrade }
}

/** appointments ≈ 70% of the rows, customers the rest (plus a few services, staff and hours). */
function volume(rows: number) {
  const customers = Math.round(rows * 0.3)
  return { services: 12, staff: 8, customers, appointments: rows - customers - 27, days: 42 }
}

interface Booking {
  tenant: string
  key: string
  business: string
  service: string
  customer: string
}

async function main() {
  const started = Date.now()
  const { topology, upgrade } = await boot()
  const directory = openDirectory(topology.directory)
  cleanups.add(() => directory.close())
  const tenant = randomUUID()
  await addTenant(directory, topology, { id: tenant, shard: 'shard-1', name: 'Bench Move' })
  // The bench books far more than the seed's 500 appointments a day for one tenant.
  await directory.sql`update tenants set limits = '{"max_appointments_per_day": 100000000}'::jsonb where id = ${tenant}`
  const { key } = await createKey(directory, { scope: 'app', tenants: [tenant], name: 'bench-move' })
  const primary = topology.shards[0]?.primary as string
  const filled = Date.now()
  const rows = await withAdmin(primary, (sql) => fillTenant(sql, tenant, 'Bench Move', volume(options.rows)))
  const ids = await withAdmin(primary, async (sql) => {
    const [row] = await sql<{ business: string; service: string; customer: string }[]>`
      select (select id from businesses where tenant_id = ${tenant}) as business,
             (select id from services where tenant_id = ${tenant} limit 1) as service,
             (select id from customers where tenant_id = ${tenant} limit 1) as customer`
    return row as { business: string; service: string; customer: string }
  })
  console.log(
    `topology up in ${((filled - started) / 1000).toFixed(1)} s; tenant filled with ${rows} rows in ${((Date.now() - filled) / 1000).toFixed(1)} s`,
  )
  const booking = { tenant, key, ...ids }
  console.log('\n== appointments unpartitioned: shard-1 → shard-2')
  const plain = await measuredMove(topology, booking, 'shard-2', 0)
  const upgrading = Date.now()
  const upgraded = await upgrade()
  const appointments = await withAdmin(topology.shards[1]?.primary as string, async (sql) => {
    const [row] = await sql<{ n: number; partitions: number }[]>`
      select count(*)::int as n,
             (select count(*)::int from pg_inherits where inhparent = 'appointments'::regclass) as partitions
      from appointments`
    return row
  })
  console.log(
    `\nmigrate partitioned appointments on every shard in ${((Date.now() - upgrading) / 1000).toFixed(2)} s (shard-2: ${appointments?.n} rows into ${appointments?.partitions} partitions)`,
  )
  console.log('\n== appointments partitioned by month: shard-2 → shard-3')
  const parted = await measuredMove(upgraded, booking, 'shard-3', 1_000_000)
  console.log('\n== side by side')
  const rowsOf = (label: string) => [label, plain.figures.get(label) ?? '', parted.figures.get(label) ?? '']
  const table = [
    ['', 'unpartitioned', 'partitioned'],
    ...[
      'rows moved',
      'total move time',
      'copy rate',
      'cutover stall (fence → routers told)',
      'write latency during the move',
      'client errors',
    ].map(rowsOf),
  ]
  const widths = [0, 1, 2].map((column) => Math.max(...table.map((line) => (line[column] as string).length)))
  for (const line of table)
    console.log(line.map((cell, column) => (cell as string).padEnd(widths[column] as number)).join('  '))
  process.exitCode = plain.pass && parted.pass ? 0 : 1
}

/**
 * One move of the tenant to `target` while 4 clients book through a fresh router (`offset`: the first
 * booking's minute after 2027-01-01, so the two runs book distinct rows); its report.
 */
async function measuredMove(topology: Topology, booking: Booking, target: string, offset: number) {
  const router = await startRouter(topology, {
    port: 0,
    // BENCH_ROUTER_LOG=<file>: the router's info log (every request, stale routes) for a closer look.
    logger: process.env.BENCH_ROUTER_LOG
      ? pino({ level: 'info' }, pino.destination(process.env.BENCH_ROUTER_LOG))
      : pino({ level: 'warn' }),
  })
  try {
    const samples: Sample[] = []
    const acknowledged: string[] = []
    let stopping = false
    const book = async (n: number) => {
      const at = performance.now()
      const start = new Date(Date.UTC(2027, 0, 1) + (offset + n) * 60_000).toISOString()
      const response = await fetch(`${router.url}/v1/query`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${booking.key}`,
          'x-tenant-id': booking.tenant,
          'content-type': 'application/json',
        },
        body: JSON.stringify({
          sql: `insert into appointments (tenant_id, business_id, service_id, customer_id, start_time, end_time)
                values ($1, $2, $3, $4, $5, $5::timestamptz + interval '30 minutes') returning id`,
          params: [booking.tenant, booking.business, booking.service, booking.customer, start],
          method: 'all',
        }),
      }).catch(() => undefined)
      const body = response?.ok ? ((await response.json()) as { rows: string[][] }) : undefined
      const ok = Boolean(body?.rows?.[0]?.[0])
      if (ok) acknowledged.push(body?.rows[0]?.[0] as string)
      else if (response) console.error(`write failed: ${response.status} ${await response.text()}`)
      samples.push({ at, ms: performance.now() - at, ok })
    }
    const interval = (1000 * options.clients) / options.rate
    const clients = Array.from({ length: options.clients }, async (_, c) => {
      for (let n = c; !stopping; n += options.clients) {
        const next = performance.now() + interval
        await book(n)
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, next - performance.now())))
      }
    })

    await new Promise((resolve) => setTimeout(resolve, 4000))
    const timeline: { at: number; state: string }[] = []
    const moveStarted = performance.now()
    const move = await moveInChild(booking.tenant, target, timeline)
    const moveEnded = performance.now()
    await new Promise((resolve) => setTimeout(resolve, 1500))
    stopping = true
    await Promise.all(clients)

    const onTarget = await withAdmin(
      topology.shards.find((shard) => shard.id === target)?.primary as string,
      async (sql) => {
        const [row] = await sql<{ n: number }[]>`
          select count(*)::int as n from appointments
          where tenant_id = ${booking.tenant} and id = any(${acknowledged}::uuid[])`
        return row?.n ?? 0
      },
    )
    const result = report(move, samples, {
      moveStarted,
      moveEnded,
      acknowledged: acknowledged.length,
      onTarget,
    })
    slowest(samples, timeline, moveStarted)
    return result
  } finally {
    await router.close()
  }
}

/**
 * `switchyard move <tenant> --to <shard> --json` in a child process: the mover gets its own event loop,
 * as in production, instead of sharing this one with the router and the clients. Its progress lines
 * (one per phase on a pipe) give the phase timeline; its stdout is the finished move.
 */
function moveInChild(
  tenant: string,
  target: string,
  timeline: { at: number; state: string }[],
): Promise<Move> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fileURLToPath(CLI), 'move', tenant, '--to', target, '--json'], {
      env: { ...process.env, SWITCHYARD_CONFIG: configFile },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    createInterface({ input: child.stderr }).on('line', (line) => {
      const state = /\s([a-z_]+) \(\d+\/\d+\)/.exec(line)?.[1]
      if (state) timeline.push({ at: performance.now(), state })
      process.stderr.write(`${line}\n`)
    })
    child.on('error', reject)
    child.on('exit', (code) => {
      if (code === 0) resolve(JSON.parse(stdout) as Move)
      else reject(new Error(`switchyard move exited with ${code}`))
    })
  })
}

function report(
  move: Move,
  samples: Sample[],
  at: { moveStarted: number; moveEnded: number; acknowledged: number; onTarget: number },
) {
  // The first second warms the router's pools up (connections to shard-1 are opened then).
  const warm = (samples[0]?.at ?? 0) + 1000
  const before = samples.filter((s) => s.at >= warm && s.at < at.moveStarted).map((s) => s.ms)
  const during = samples.filter((s) => s.at >= at.moveStarted && s.at <= at.moveEnded).map((s) => s.ms)
  const errors = samples.filter((s) => !s.ok).length
  const phases = move.progress.phases ?? {}
  const copySeconds = (phases.copy ?? 0) / 1000
  const totalSeconds = (at.moveEnded - at.moveStarted) / 1000
  const longest = Math.max(0, ...during)
  const lines = [
    ['rows moved', String(move.progress.totalRows ?? '?')],
    ['total move time', `${totalSeconds.toFixed(2)} s`],
    [
      'phases (ms)',
      Object.entries(phases)
        .map(([phase, ms]) => `${phase} ${ms}`)
        .join(', '),
    ],
    [
      'copy rate',
      `${Math.round((move.progress.totalRows ?? 0) / Math.max(copySeconds, 0.001))} rows/s (copy phase ${copySeconds.toFixed(2)} s)`,
    ],
    ['cutover stall (fence → routers told)', `${move.progress.stallMs} ms`],
    ['client writes', `${samples.length} (${before.length} before the move, ${during.length} during it)`],
    ['write latency before the move', `p50 ${pct(before, 50)} ms, p99 ${pct(before, 99)} ms`],
    [
      'write latency during the move',
      `p50 ${pct(during, 50)} ms, p99 ${pct(during, 99)} ms, max ${longest.toFixed(1)} ms`,
    ],
    ['acknowledged writes on the target', `${at.onTarget} / ${at.acknowledged}`],
    ['client errors', String(errors)],
  ]
  const width = Math.max(...lines.map(([label]) => (label as string).length))
  for (const [label, value] of lines) console.log(`${(label as string).padEnd(width)}  ${value}`)
  const figures = new Map(lines.map(([label, value]) => [label as string, value as string]))
  const verdicts = [
    [`longest write stall ≤ ${TARGETS.stallMs} ms`, longest <= TARGETS.stallMs, `${longest.toFixed(1)} ms`],
    [`client errors = ${TARGETS.errors}`, errors === TARGETS.errors, String(errors)],
    [
      `total ≤ ${TARGETS.totalSeconds} s`,
      totalSeconds <= TARGETS.totalSeconds,
      `${totalSeconds.toFixed(2)} s`,
    ],
    [
      'every acknowledged write on the target',
      at.onTarget === at.acknowledged,
      `${at.onTarget}/${at.acknowledged}`,
    ],
  ] as const
  console.log('')
  for (const [target, pass, measured] of verdicts)
    console.log(`${pass ? 'PASS' : 'FAIL'}  ${target}: ${measured}`)
  console.log(
    `load average: ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  )
  return { figures, pass: verdicts.every(([, pass]) => pass) }
}

/** The slowest writes, placed on the move's timeline: which phase each one overlapped. */
function slowest(samples: Sample[], timeline: { at: number; state: string }[], moveStarted: number) {
  const phaseAt = (at: number) =>
    at < moveStarted
      ? 'before the move'
      : ([...timeline].reverse().find((t) => t.at <= at)?.state ?? 'preflight')
  const line = (s: Sample) =>
    `  ${s.ms.toFixed(1).padStart(7)} ms at ${((s.at - moveStarted) / 1000).toFixed(3).padStart(7)} s  ${phaseAt(s.at)} → ${phaseAt(s.at + s.ms)}`
  console.log('slowest writes (start relative to the move start, and the phase then → at its end):')
  for (const s of [...samples].sort((a, b) => b.ms - a.ms).slice(0, 5)) console.log(line(s))
  // The cutover's own share: writes that ended after the fence (held by it, or the first on the target).
  const fenced = timeline.find((t) => t.state === 'fence')?.at
  const after = fenced === undefined ? [] : samples.filter((s) => s.at + s.ms >= fenced)
  console.log('slowest writes that ended after the fence:')
  for (const s of after.sort((a, b) => b.ms - a.ms).slice(0, 5)) console.log(line(s))
}

function pct(values: number[], p: number): string {
  if (values.length === 0) return '–'
  const sorted = [...values].sort((a, b) => a - b)
  return (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number).toFixed(1)
}

try {
  await main()
} finally {
  await cleanups.run()
}
