/**
 * `npm run bench:cache`: the router's read cache (issue 17, docs/CACHE.md), on and off, in one run on one
 * throwaway topology. Two routers as a user runs them, one with `router.cache.enabled` and one without,
 * take turns under the same open-loop load of a read-heavy mix (READ_HEAVY_MIX in src/loadtest/workload.ts).
 * Then, at the same rate, the booking page's reads alone through the cache-on router: once as they are
 * (cache hits) and once with `x-switchyard-cache: no-cache` (replica reads of the same statements).
 * It prints figures and asserts none; it fails on failed requests, on no hit at all with the cache on, and
 * on a cached answer that differs from the replica's. Figures and how to read them: docs/BENCHMARKS.md.
 */
import os from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { z } from 'zod'
import { parseTopology } from '../src/config/load.ts'
import type { Topology } from '../src/config/topology.ts'
import { openRedis, type Redis, redisReady } from '../src/directory/redis.ts'
import { BOOKING_PAGE, READ_HEAVY_MIX, readHeavyPicker } from '../src/loadtest/workload.ts'
import { replicaName } from '../src/shard/nodes.ts'
import { freePorts } from '../test/setup/topology.ts'
import { clusterUsage, type UsageProbe } from './router/proc.ts'
import { type RouterProcess, startRouterProcess } from './router/router-process.ts'
import {
  bootTopology,
  createCleanups,
  createMeasure,
  drawWorkload,
  expectReplicaReads,
  type Fixture,
  loadAverage,
  machineLine,
  medianOf,
  medianRow,
  pointReadBody,
  type Row,
  startLoadGenerators,
  type Target,
  tenantHeaders,
  type Workload,
} from './router.ts'

const USAGE =
  'usage: npm run bench:cache -- [--rate REQ_PER_S] [--seconds N] [--warmup N] [--rounds N] [--connections N] [--clients N]'

const flagsSchema = z.object({
  /** Requests per second offered to every run: the same for the cache on and off. */
  rate: z.coerce.number().int().min(1).max(100_000).default(400),
  seconds: z.coerce.number().positive().max(3600).default(6),
  warmup: z.coerce.number().min(0).max(600).default(2),
  /** Each round runs every target once (on first, then off first: neither always runs first). */
  rounds: z.coerce.number().int().min(1).max(20).default(3),
  /** The most requests in flight at once: past it, due requests queue in the load generator. */
  connections: z.coerce.number().int().min(1).max(1024).default(64),
  /** Load generator processes; the rate and the connections are split between them. */
  clients: z.coerce.number().int().min(1).max(8).default(1),
})
type Flags = z.infer<typeof flagsSchema>

/** A load generator past this share of a core may be what limits the run (as in bench:router). */
const CLIENT_SATURATED = 0.8
/** Achieved below this share of the offered rate: the server fell behind (the rate is past its capacity here). */
const BEHIND = 0.97
const SHARD = 'shard-1'
const NO_CACHE = { 'x-switchyard-cache': 'no-cache' }

function parseFlags(): Flags {
  const fail = (message: string): never => {
    console.error(`${message}\n${USAGE}`)
    process.exit(2)
  }
  let values: Record<string, unknown> = {}
  try {
    const string = { type: 'string' } as const
    values = parseArgs({
      options: {
        rate: string,
        seconds: string,
        warmup: string,
        rounds: string,
        connections: string,
        clients: string,
      },
    }).values
  } catch (error) {
    fail((error as Error).message)
  }
  const parsed = flagsSchema.safeParse(values)
  if (!parsed.success)
    fail(parsed.error.issues.map((issue) => `--${issue.path.join('.')}: ${issue.message}`).join('\n'))
  return parsed.data as Flags
}

/** The topology with the read cache on or off, its other settings the defaults (the seed's tables and TTLs). */
function withCache(topology: Topology, enabled: boolean): Topology {
  // The test topology has the cache off and no tables.
  const defaults = parseTopology(
    { ...topology, router: { ...topology.router, cache: {} } },
    'bench/cache.ts',
    {},
  ).router.cache
  return { ...topology, router: { ...topology.router, cache: { ...defaults, enabled } } }
}

const pageReads = new Set<string>(BOOKING_PAGE.filter((op) => op.kind === 'read').map((op) => op.name))

/** The booking page's reads of the mix (BOOKING_PAGE), each once. */
function pageReadsOf(mix: Workload): Required<Workload> {
  const page = new Map<string, string>()
  mix.bodies.forEach((body, i) => {
    const kind = mix.kinds?.[i]
    if (kind && pageReads.has(kind)) page.set(body, kind)
  })
  return { bodies: [...page.keys()], kinds: [...page.values()] }
}

/** One request to a router: its status, cache header and body. */
async function ask(
  router: RouterProcess,
  fixture: Fixture,
  body: string,
  headers: Record<string, string> = {},
) {
  const response = await fetch(`http://127.0.0.1:${router.port}/v1/query`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...tenantHeaders(fixture), ...headers },
    body,
  })
  return {
    status: response.status,
    cache: response.headers.get('x-switchyard-cache'),
    text: await response.text(),
  }
}

/**
 * After the runs: one service edit through the cache-on router (the cache-off router's edits bumped no
 * versions, so only after it is the services list's cache known to be fresh), then each page read twice
 * from the cache and once past it. Returns the reads whose cached answer is not a hit equal to the replica's.
 */
async function cachedAnswersDiffer(
  router: RouterProcess,
  fixture: Fixture,
  mix: Workload,
): Promise<string[]> {
  const edit = mix.bodies[mix.kinds?.indexOf('edit_service') ?? -1]
  if (edit) await ask(router, fixture, edit)
  const page = pageReadsOf(mix)
  const differ: string[] = []
  for (const [i, body] of page.bodies.entries()) {
    await ask(router, fixture, body)
    const cached = await ask(router, fixture, body)
    const replica = await ask(router, fixture, body, NO_CACHE)
    const same = cached.text === replica.text
    console.log(
      `  ${page.kinds[i]}: ${cached.status} ${cached.cache}, no-cache ${replica.status} ${replica.cache}: ` +
        (same ? 'the same answer' : 'DIFFERENT ANSWERS'),
    )
    if (!same || cached.status !== 200 || cached.cache !== 'hit')
      differ.push(
        `${page.kinds[i]} (${cached.status} ${cached.cache}): ${cached.text.slice(0, 300)} vs ${replica.text.slice(0, 300)}`,
      )
  }
  return differ
}

/** Commands this topology's Redis has run since it started, by name (INFO commandstats). */
async function redisCalls(redis: Redis): Promise<Record<string, number>> {
  const info = await redis.info('commandstats')
  const calls = [...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)]
  return Object.fromEntries(calls.map(([, name = '', n]) => [name, Number(n)]))
}

/** The commands Redis ran between two readings (INFO itself left out), by name. */
function callsSince(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after)
      .filter(([name]) => name !== 'info')
      .map(([name, n]) => [name, n - (before[name] ?? 0)])
      .filter(([, n]) => (n as number) > 0),
  )
}

const total = (counts: Record<string, number>) => Object.values(counts).reduce((sum, n) => sum + n, 0)

/** What the cluster does with both routers up and no request: its CPU and Redis commands per second. */
async function idleCluster(usage: UsageProbe, redis: Redis, seconds = 3) {
  const before = usage()
  const callsBefore = await redisCalls(redis)
  await sleep(seconds * 1000)
  const after = usage()
  const calls = callsSince(callsBefore, await redisCalls(redis))
  return {
    cpuUsPerSecond: before && after ? (after.cpuUs - before.cpuUs) / seconds : undefined,
    redisPerSecond: total(calls) / seconds,
  }
}

const ms = (value: number | undefined) => (value === undefined ? 'n/a' : value.toFixed(3))
const pct = (part: number, whole: number) => (whole ? `${((100 * part) / whole).toFixed(1)}%` : 'n/a')
const perRequest = (us: number | undefined) => us?.toFixed(0) ?? 'n/a'
const cacheCount = (row: Row, cache: string) => row.byCache[cache]?.requests ?? 0
/** Answers that carried an x-switchyard-cache header (none from a router with the cache off). */
const withHeader = (row: Row) =>
  Object.values(row.byCache).reduce((total, latency) => total + latency.requests, 0)

/** Redis commands per request of each run, by its label: a Row does not carry them. */
type RedisPerRequest = Map<string, number[]>
const redisPer = (redis: RedisPerRequest, row: Row) => {
  const runs = redis.get(row.label)
  return runs?.length ? medianOf(runs).toFixed(1) : 'n/a'
}

function printMixTable(rows: Row[], redis: RedisPerRequest) {
  console.log(
    '\n| router | offered req/s | achieved req/s | p50 ms | p99 ms | errors | hit ratio (hits / hits + misses) | answered from the cache | router CPU µs/req | PostgreSQL + Redis CPU µs/req | Redis commands/req | client CPU µs/req | busiest client, % of a core |',
  )
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const row of rows) {
    const hits = cacheCount(row, 'hit')
    const cached = withHeader(row) > 0
    console.log(
      `| ${row.label} | ${row.offeredRps} | ${row.rps.toFixed(0)} | ${ms(row.p50Ms)} | ${ms(row.p99Ms)} | ${row.errors} | ` +
        `${cached ? pct(hits, hits + cacheCount(row, 'miss')) : 'n/a'} | ${cached ? pct(hits, withHeader(row)) : 'n/a'} | ` +
        `${perRequest(row.serverCpuUs)} | ${perRequest(row.shardCpuUs)} | ${redisPer(redis, row)} | ${perRequest(row.clientCpuUs)} | ` +
        `${(100 * row.clientBusiest).toFixed(0)} |`,
    )
  }
}

function printPageTable(rows: Row[], redis: RedisPerRequest) {
  console.log(
    '\n| page reads, cache-on router | achieved req/s | answers | p50 ms | p99 ms | errors | router CPU µs/req | PostgreSQL + Redis CPU µs/req | Redis commands/req | client CPU µs/req |',
  )
  console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const row of rows) {
    const caches = Object.entries(row.byCache)
      .map(([cache, latency]) => `${cache} ×${latency.requests}`)
      .join(', ')
    console.log(
      `| ${row.label} | ${row.rps.toFixed(0)} | ${caches} | ${ms(row.p50Ms)} | ${ms(row.p99Ms)} | ${row.errors} | ` +
        `${perRequest(row.serverCpuUs)} | ${perRequest(row.shardCpuUs)} | ${redisPer(redis, row)} | ${perRequest(row.clientCpuUs)} |`,
    )
  }
}

/** The cache's answers per operation of the mix (summed over the rounds). */
function printByOperation(row: Row) {
  const operations = new Map<string, Record<string, number>>()
  for (const [key, n] of Object.entries(row.cacheByKind)) {
    const [operation = '', cache = ''] = key.split(' ')
    operations.set(operation, { ...operations.get(operation), [cache]: n })
  }
  const total = [...operations.values()].reduce(
    (sum, counts) => sum + Object.values(counts).reduce((a, b) => a + b, 0),
    0,
  )
  console.log(`\n${row.label}, per operation (all rounds):`)
  console.log('| operation | share of requests | hit | miss | bypass | hit ratio |')
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |')
  const sorted = [...operations].sort(([a], [b]) => a.localeCompare(b))
  for (const [operation, { hit = 0, miss = 0, bypass = 0 }] of sorted)
    console.log(
      `| ${operation} | ${pct(hit + miss + bypass, total)} | ${hit} | ${miss} | ${bypass} | ${hit + miss ? pct(hit, hit + miss) : '—'} |`,
    )
}

/**
 * Where the answers came from: the cache, or a shard node (the primary when a read waited for the tenant's
 * last write). A hit's x-switchyard-node names the node its answer was first read on: not counted as that node's.
 */
function printNodes(row: Row) {
  const fromNodes: Record<string, number> = withHeader(row) ? {} : { ...row.nodes }
  let fromCache = 0
  for (const [key, n] of Object.entries(row.cacheNodes)) {
    const [cache, node = '?'] = key.split(' ')
    if (cache === 'hit') fromCache += n
    else fromNodes[node] = (fromNodes[node] ?? 0) + n
  }
  const nodes = Object.entries(fromNodes)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([node, n]) => `${node} ×${n}`)
  console.log(
    `${row.label}: answered by ${[...nodes, ...(fromCache ? [`the cache ×${fromCache}`] : [])].join(', ')}`,
  )
}

async function main() {
  const flags = parseFlags()
  const began = Date.now()
  console.log('# Switchyard read cache benchmark: a read-heavy mix with the router cache on and off')
  console.log(machineLine())
  console.log(`PostgreSQL, Redis, both routers and the load generator share these ${os.cpus().length} cores`)

  const cleanups = createCleanups()
  try {
    const { topology, fixture, home } = await bootTopology(cleanups)
    console.log(`topology up, migrated and seeded in ${((Date.now() - began) / 1000).toFixed(1)} s`)
    const [onPort, offPort] = (await freePorts(2)) as [number, number]
    const start = async (port: number, enabled: boolean) => {
      const router = await startRouterProcess(withCache(topology, enabled), home, { port, workers: 1 })
      cleanups.add(() => router.stop())
      return router
    }
    const routers = { on: await start(onPort, true), off: await start(offPort, false) }
    console.log(
      `routers: \`switchyard router --workers 1\`, each its own process, default settings (log level ${process.env.LOG_LEVEL ?? 'info'} ` +
        `to a file, session consistency) but the cache: on (tables and TTL seconds ${JSON.stringify(withCache(topology, true).router.cache.tables)}) and off`,
    )
    const mix = await drawWorkload(topology, fixture.tenant, readHeavyPicker())
    const page = pageReadsOf(mix)
    const target = (label: string, router: RouterProcess, workload: Workload, headers = {}): Target => ({
      label,
      port: router.port,
      path: '/v1/query',
      headers: { ...tenantHeaders(fixture), ...headers },
      ...workload,
      rate: flags.rate,
      usage: router.usage,
    })
    const targets = {
      on: target('cache on', routers.on, mix),
      off: target('cache off', routers.off, mix),
      hits: target('page reads', routers.on, page),
      replica: target('page reads, no-cache', routers.on, page, NO_CACHE),
    }
    for (const t of [targets.on, targets.off])
      await expectReplicaReads(t, pointReadBody(fixture), fixture.customer)

    const redis = openRedis(topology.redis as string)
    cleanups.add(() => redis.quit())
    if (!(await redisReady(redis, 5000))) throw new Error(`Redis at ${topology.redis} did not answer`)
    // This topology's nodes only: on a shared box other clusters' PostgreSQL would count too.
    const cluster = clusterUsage(home)
    const idle = await idleCluster(cluster, redis)
    const load = startLoadGenerators(flags.clients, cluster)
    cleanups.add(async () => load.stop())
    const measure = createMeasure(load, { warmupMs: flags.warmup * 1000, measureMs: flags.seconds * 1000 })
    const redisPerRequest: RedisPerRequest = new Map()
    /** The last run's Redis commands per request by name, by its label. */
    const redisByName: Record<string, Record<string, number>> = {}
    // The open loop sends `rate` requests a second, warm-up included: Redis is read around the whole run.
    const sent = flags.rate * (flags.warmup + flags.seconds)
    const run = async (t: Target) => {
      const before = await redisCalls(redis)
      const row = await measure(t, flags.connections)
      const calls = callsSince(before, await redisCalls(redis))
      redisPerRequest.set(t.label, [...(redisPerRequest.get(t.label) ?? []), total(calls) / sent])
      redisByName[t.label] = Object.fromEntries(Object.entries(calls).map(([name, n]) => [name, n / sent]))
      return row
    }
    const drawn: Record<string, number> = {}
    for (const kind of mix.kinds ?? []) drawn[kind] = (drawn[kind] ?? 0) + 1
    const shares = Object.entries(drawn)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([kind, n]) => `${kind} ${((100 * n) / mix.bodies.length).toFixed(1)}%`)
    console.log(
      `\nthe mix (READ_HEAVY_MIX ${JSON.stringify(READ_HEAVY_MIX)}), ${mix.bodies.length} requests drawn once: ${shares.join(', ')}`,
    )
    console.log(
      `runs: open loop at ${flags.rate} req/s, at most ${flags.connections} in flight, ${flags.warmup} s warm-up then ${flags.seconds} s ` +
        `measured; ${flags.rounds} round(s) of: the mix through each router, the page reads (${page.kinds.join(', ')}) through the ` +
        `cache-on router as they are and with no-cache; ${flags.clients} load generator process(es)`,
    )
    console.log(
      `idle, both routers up: PostgreSQL + Redis ${perRequest(idle.cpuUsPerSecond)} µs of CPU a second ` +
        `(${perRequest(idle.cpuUsPerSecond && idle.cpuUsPerSecond / flags.rate)} µs per request at ${flags.rate} req/s: in every run's figure), ` +
        `Redis ${idle.redisPerSecond.toFixed(1)} commands a second`,
    )
    // JIT, the statements' parse, PostgreSQL's caches and the autovacuum the seed calls for: not in round 1.
    console.log(`warm-up, not counted: the mix through each router for ${flags.warmup + 3} s`)
    const warm = createMeasure(load, { warmupMs: flags.warmup * 1000 + 2000, measureMs: 1000 })
    for (const t of [targets.on, targets.off]) await warm(t, flags.connections)
    const runs: Row[] = []
    for (let round = 0; round < flags.rounds; round++) {
      console.log(`round ${round + 1}`)
      const order =
        round % 2 ? [targets.off, targets.on, targets.replica, targets.hits] : Object.values(targets)
      for (const t of order) runs.push(await run(t))
    }
    const [on, off, hits, replica] = Object.values(targets).map((t) =>
      medianRow(runs.filter((row) => row.label === t.label)),
    ) as [Row, Row, Row, Row]

    console.log('\ncached answers next to the replica, after one service edit through the cache-on router:')
    const differ = await cachedAnswersDiffer(routers.on, fixture, mix)

    console.log(
      `\n## Read-heavy mix, open loop at ${flags.rate} req/s (medians of ${flags.rounds} round(s) of ${flags.seconds} s)`,
    )
    printMixTable([on, off], redisPerRequest)
    for (const row of [on, off]) printNodes(row)
    printByOperation(on)
    console.log(
      `\n## A cache hit next to a replica read of the same statements (the page reads alone, ${flags.rate} req/s, medians)`,
    )
    printPageTable([hits, replica], redisPerRequest)
    for (const row of [hits, replica]) printNodes(row)
    const byName = (label: string) =>
      Object.entries(redisByName[label] ?? {})
        .map(([name, n]) => `${name} ${n.toFixed(2)}`)
        .join(', ')
    console.log(
      `Redis commands per request by name, last round (a script's calls count too; each eval or evalsha is one round trip): ` +
        `${targets.hits.label}: ${byName(targets.hits.label)}; ${targets.replica.label}: ${byName(targets.replica.label)}`,
    )
    const hit = hits.byCache.hit
    const read = replica.byCache.bypass
    if (hit && read)
      console.log(
        `cache hit p50 ${ms(hit.p50Ms)} ms vs replica read p50 ${ms(read.p50Ms)} ms of the same statements ` +
          `(${(read.p50Ms / hit.p50Ms).toFixed(2)}×); router CPU ${perRequest(hits.serverCpuUs)} vs ${perRequest(replica.serverCpuUs)} µs/req`,
      )

    // Failures are what the routers got wrong; everything else is a figure, printed.
    const failures: string[] = []
    for (const row of [on, off, hits, replica])
      if (row.errors)
        failures.push(
          `${row.label}: ${row.errors} failed requests (non-200, dropped connections): ${JSON.stringify(row.statuses)}`,
        )
    if (cacheCount(on, 'hit') === 0)
      failures.push('the cache-on router answered no request of the mix from the cache')
    if (!hit) failures.push('the cache-on router answered no page read from the cache')
    if (withHeader(off) > 0)
      failures.push(
        `the cache-off router answered with x-switchyard-cache: ${JSON.stringify(off.cacheNodes)}`,
      )
    for (const read of differ) failures.push(`a cached answer is not the replica's: ${read}`)
    console.log('')
    for (const row of runs) {
      if (row.clientBusiest > CLIENT_SATURATED)
        console.log(
          `CLIENT SATURATED: ${row.label}: a load generator used ${(100 * row.clientBusiest).toFixed(0)}% of a core (try --clients 2)`,
        )
      if (row.offeredRps && row.rps < BEHIND * row.offeredRps)
        console.log(
          `BEHIND: ${row.label}: ${row.rps.toFixed(0)} of ${row.offeredRps} req/s; its latencies include the backlog (the rate is past what it sustains here: try a lower --rate)`,
        )
    }
    if (Object.keys(replica.cacheNodes).some((key) => key !== `bypass ${replicaName(SHARD, 0)}`))
      console.log(`NOT ALL NO-CACHE READS ON THE REPLICA: ${JSON.stringify(replica.cacheNodes)}`)
    for (const failure of failures) console.log(`FAILED: ${failure}`)
    console.log(
      `load average at end: ${loadAverage()}; took ${((Date.now() - began) / 60_000).toFixed(1)} min`,
    )
    process.exitCode = failures.length ? 1 : 0
  } finally {
    await cleanups.run()
  }
}

await main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
