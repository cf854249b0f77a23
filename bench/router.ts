/**
 * `npm run bench:router`: point reads through a minimal Hono + postgres.js passthrough and through the
 * router, at 1 and 64 connections, in one run on one throwaway topology, with the ratios the issue sets
 * as targets. `--breakdown` adds variants and in-process step timings that show where the router's
 * time goes. Figures and how to read them: docs/BENCHMARKS.md.
 *
 * The load generator is this same file in a child process (`--load-generator`): it must not share an
 * event loop with the servers it measures. It speaks HTTP/1.1 keep-alive over raw sockets, because
 * node:http's client costs more CPU per request than the servers under test and this box has 2 cores.
 */
import { type ChildProcess, fork } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import pino from 'pino'
import postgres from 'postgres'
import { z } from 'zod'
import { fillTenant } from '../examples/appointments/generate.ts'
import { clusterDown, clusterUp } from '../src/cluster/launcher.ts'
import { redisServerPath } from '../src/cluster/redis-node.ts'
import { parseTopology } from '../src/config/load.ts'
import type { Topology } from '../src/config/topology.ts'
import { readRouterCapability } from '../src/directory/capability.ts'
import { withDirectory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { migrateAll } from '../src/directory/migrate.ts'
import { addTenant, findTenant, setTenantLimits } from '../src/directory/tenants.ts'
import { LOADTEST_VOLUME } from '../src/loadtest/seed.ts'
import { loadTenantContexts, type Operation, operationPicker } from '../src/loadtest/workload.ts'
import { createApp } from '../src/router/app.ts'
import { runTransaction } from '../src/router/execute.ts'
import { createMetrics } from '../src/router/metrics.ts'
import { classify } from '../src/router/policy.ts'
import { type RunningRouter, startRouter } from '../src/router/server.ts'
import { type Sql, withAdmin } from '../src/shard/connection.ts'
import { replicaName } from '../src/shard/nodes.ts'
import { createPools } from '../src/shard/pools.ts'
import { freePorts, testTopologyInput } from '../test/setup/topology.ts'
import {
  onReserved,
  type Passthrough,
  type PassthroughOptions,
  startPassthrough,
  startPassthroughProcess,
} from './router/passthrough.ts'
import {
  findPgbench,
  findPgpool,
  type Login,
  PGBENCH_MISSING,
  PGPOOL_MISSING,
  pgbench,
  type RunningPgpool,
  type Selects,
  startPgpool,
} from './router/pgpool.ts'
import { namedUsage, selfUsage, type Usage, type UsageProbe, usageSince } from './router/proc.ts'
import { type RouterProcess, startRouterProcess } from './router/router-process.ts'

/** The read both paths serve: one customer by its primary key. */
const POINT_READ = 'select id, name, email from customers where tenant_id = $1 and id = $2'
const SHARD = 'shard-1'
const MIGRATIONS = new URL('../examples/appointments/migrations', import.meta.url)
const TARGETS = { throughputRatioAt64: 0.85, pgpoolRatioAt64: 1.0, p50DeltaAt1Ms: 0.15, mixRatioAt64: 0.85 }

// ---------------------------------------------------------------------------------------------------
// Load generator (child process)
// ---------------------------------------------------------------------------------------------------

interface LoadJob {
  port: number
  path: string
  headers: Record<string, string>
  /** Request bodies, sent in turn by each connection (from its own starting point). */
  bodies: string[]
  /** What each body is (the seed mix's operation): answers are counted by kind and status too. */
  kinds?: string[]
  connections: number
  /**
   * Open loop: this many requests per second, whatever the answers take, each sent on a free connection
   * (or queued until one is: its wait counts in its latency). Without it, closed loop: every connection
   * sends its next request as soon as its answer is complete.
   */
  rate?: number
  warmupMs: number
  measureMs: number
}

interface LoadResult {
  requests: number
  seconds: number
  errors: number
  /** Responses by status code, and failed connections as `socket`. */
  statuses: Record<string, number>
  /** Responses by their x-switchyard-node header (router only). */
  nodes: Record<string, number>
  /** Given kinds: responses by `<kind> <status>` (and `<kind> socket`). */
  byKind: Record<string, number>
  /** Latencies of the measured window as [µs, count] pairs: the parent merges the generators'. */
  latencies: [number, number][]
  /** Answers by their x-switchyard-cache header (`hit`, `miss`, `bypass`), as [µs, count] pairs. */
  cacheLatencies: Record<string, [number, number][]>
  /** Answers with an x-switchyard-cache header by `<cache> <node>`, and given kinds by `<kind> <cache>`. */
  cacheNodes: Record<string, number>
  cacheByKind: Record<string, number>
  /** CPU the load generator itself spent in the measured window. */
  clientCpuMs: number
}

type ToLoad = { type: 'run'; job: LoadJob }
type FromLoad = { type: 'measuring' } | { type: 'result'; result: LoadResult }

/** Latencies in 1 µs buckets up to 1 s (the last bucket takes everything slower): exact enough, no allocation. */
function createHistogram() {
  const buckets = new Uint32Array(1_000_000)
  let count = 0
  let maxUs = 0
  return {
    record(ms: number) {
      const us = Math.min(buckets.length - 1, Math.round(ms * 1000))
      buckets[us] = (buckets[us] ?? 0) + 1
      count++
      if (us > maxUs) maxUs = us
    },
    percentileMs(p: number) {
      const rank = Math.max(1, Math.ceil((p / 100) * count))
      let seen = 0
      for (let us = 0; us < buckets.length; us++) {
        seen += buckets[us] ?? 0
        if (seen >= rank) return us / 1000
      }
      return maxUs / 1000
    },
    get count() {
      return count
    },
    maxMs: () => maxUs / 1000,
    /** The non-empty buckets, for merging. */
    pairs(): [number, number][] {
      const pairs: [number, number][] = []
      for (let us = 0; us <= maxUs; us++) if (buckets[us]) pairs.push([us, buckets[us] as number])
      return pairs
    },
  }
}

type Histogram = ReturnType<typeof createHistogram>

/** The histogram of `key`, made on first use. */
function histogramOf(histograms: Map<string, Histogram>, key: string): Histogram {
  let histogram = histograms.get(key)
  if (!histogram) {
    histogram = createHistogram()
    histograms.set(key, histogram)
  }
  return histogram
}

const NODE_HEADER = /\r\nx-switchyard-node: *([^\r]*)/i
const CACHE_HEADER = /\r\nx-switchyard-cache: *([^\r]*)/i
const CONTENT_LENGTH = /\r\ncontent-length: *(\d+)/i
const HEADER_END = Buffer.from('\r\n\r\n')
const CHUNKED_END = '0\r\n\r\n'

/** A connection with nothing in flight, in the open loop: it sends a request that fell due, or closes. */
interface IdleConnection {
  take(dueAt: number): void
  close(): void
}

async function runLoad(job: LoadJob, onMeasuring: () => void): Promise<LoadResult> {
  const requests = job.bodies.map((body) => {
    const head = [
      `POST ${job.path} HTTP/1.1`,
      `host: 127.0.0.1:${job.port}`,
      'content-type: application/json',
      `content-length: ${Buffer.byteLength(body)}`,
      ...Object.entries(job.headers).map(([name, value]) => `${name}: ${value}`),
    ].join('\r\n')
    return Buffer.from(`${head}\r\n\r\n${body}`)
  })
  const histogram = createHistogram()
  const byCache = new Map<string, Histogram>()
  const statuses: Record<string, number> = {}
  const nodes: Record<string, number> = {}
  const byKind: Record<string, number> = {}
  const cacheNodes: Record<string, number> = {}
  const cacheByKind: Record<string, number> = {}
  const started = performance.now()
  const measureFrom = started + job.warmupMs
  const until = measureFrom + job.measureMs
  let cpuAtStart: NodeJS.CpuUsage | undefined
  let cpuAtEnd: NodeJS.CpuUsage | undefined
  const measuring = setTimeout(() => {
    cpuAtStart = process.cpuUsage()
    onMeasuring()
  }, job.warmupMs)
  const ending = setTimeout(() => {
    cpuAtEnd = process.cpuUsage(cpuAtStart)
  }, job.warmupMs + job.measureMs)

  const count = (into: Record<string, number>, key: string) => {
    into[key] = (into[key] ?? 0) + 1
  }
  /** A complete answer (its head) to body `sent`, started at `from`, at `now`: counted if in the window. */
  const answered = (head: string, sent: number, from: number, now: number) => {
    if (from < measureFrom || now > until) return
    histogram.record(now - from)
    const status = head.slice(9, 12)
    count(statuses, status)
    const kind = job.kinds?.[sent]
    if (kind !== undefined) count(byKind, `${kind} ${status}`)
    const node = NODE_HEADER.exec(head)?.[1]
    if (node) count(nodes, node)
    const cache = CACHE_HEADER.exec(head)?.[1]
    if (!cache) return
    histogramOf(byCache, cache).record(now - from)
    count(cacheNodes, `${cache} ${node ?? '?'}`)
    if (kind !== undefined) count(cacheByKind, `${kind} ${cache}`)
  }

  // Open loop: requests fall due at job.rate per second, in the bodies' order. One goes out on an idle
  // connection at once, or waits in `queue` for the next answer; its latency counts from when it fell
  // due, so a server that falls behind shows it in the figures (no coordinated omission).
  const queue: number[] = []
  const idle: IdleConnection[] = []
  let cursor = 0
  const nextBody = () => {
    const body = cursor
    cursor = (cursor + 1) % requests.length
    return body
  }
  if (job.rate !== undefined) {
    const rate = job.rate
    let due = 0
    const schedule = () => {
      const now = performance.now()
      if (now >= until) {
        for (const connection of idle.splice(0)) connection.close()
        return
      }
      for (const dueNow = Math.floor(((now - started) * rate) / 1000); due < dueNow; due++) {
        const connection = idle.pop()
        if (connection) connection.take(now)
        else queue.push(now)
      }
      setTimeout(schedule, 1)
    }
    setTimeout(schedule, 1)
  }

  // One connection: one request in flight. Closed loop: the next sent as soon as the previous answer is complete.
  const drive = (_: unknown, index: number) =>
    new Promise<void>((resolve) => {
      let socket: Socket
      let chunks: Buffer[] = []
      let from = 0
      let waiting = false
      let next = (index * 7) % requests.length
      let sent = next
      const send = (body: number, at: number) => {
        from = at
        waiting = true
        sent = body
        socket.write(requests[body] as Buffer)
      }
      const self: IdleConnection = {
        take: (dueAt) => send(nextBody(), dueAt),
        close: () => socket.end(),
      }
      const free = () => {
        const now = performance.now()
        if (now >= until) return void socket.end()
        if (job.rate === undefined) {
          send(next, now)
          next = (next + 1) % requests.length
          return
        }
        const dueAt = queue.shift()
        if (dueAt === undefined) idle.push(self)
        else send(nextBody(), dueAt)
      }
      const open = () => {
        chunks = []
        socket = connect({ host: '127.0.0.1', port: job.port, noDelay: true })
        socket.on('connect', free)
        socket.on('error', () => {})
        socket.on('close', () => {
          const at = idle.indexOf(self)
          if (at !== -1) idle.splice(at, 1)
          if (waiting && performance.now() >= measureFrom) {
            count(statuses, 'socket')
            if (job.kinds) count(byKind, `${job.kinds[sent]} socket`)
          }
          waiting = false
          if (performance.now() < until) setTimeout(open, 10)
          else resolve()
        })
        socket.on('data', (data: Buffer) => {
          chunks.push(data)
          const response = chunks.length === 1 ? data : Buffer.concat(chunks)
          const headerEnd = response.indexOf(HEADER_END)
          if (headerEnd === -1) return
          const text = response.toString('latin1', 0, headerEnd)
          const length = CONTENT_LENGTH.exec(text)
          const complete = length
            ? response.length >= headerEnd + 4 + Number(length[1])
            : response.toString('latin1', response.length - CHUNKED_END.length) === CHUNKED_END
          if (!complete) return
          chunks = []
          waiting = false
          answered(text, sent, from, performance.now())
          free()
        })
      }
      open()
    })

  await Promise.all(Array.from({ length: job.connections }, drive))
  clearTimeout(measuring)
  clearTimeout(ending)
  const cpu = cpuAtEnd ?? process.cpuUsage(cpuAtStart)
  const errors = Object.entries(statuses)
    .filter(([status]) => status !== '200')
    .reduce((sum, [, n]) => sum + n, 0)
  return {
    requests: histogram.count,
    seconds: job.measureMs / 1000,
    errors,
    statuses,
    nodes,
    byKind,
    latencies: histogram.pairs(),
    cacheLatencies: Object.fromEntries([...byCache].map(([cache, latencies]) => [cache, latencies.pairs()])),
    cacheNodes,
    cacheByKind,
    clientCpuMs: (cpu.user + cpu.system) / 1000,
  }
}

function loadGeneratorProcess() {
  const reply = (message: FromLoad) => process.send?.(message)
  process.on('message', (message: ToLoad) => {
    if (message.type !== 'run') return
    runLoad(message.job, () => reply({ type: 'measuring' })).then(
      (result) => reply({ type: 'result', result }),
      (error: Error) => {
        console.error(error)
        process.exit(1)
      },
    )
  })
  process.on('disconnect', () => process.exit(0))
}

/** Latency percentiles of a share of a run's answers. */
export interface Latency {
  requests: number
  p50Ms: number
  p99Ms: number
}

/** A run's figures once the load generators' results are merged, with the server's usage over it. */
export interface Measured extends Omit<LoadResult, 'latencies' | 'cacheLatencies'> {
  p50Ms: number
  p99Ms: number
  maxMs: number
  /** Open loop: the requests per second asked of the server. */
  offeredRps?: number
  /** Answers by their x-switchyard-cache header. */
  byCache: Record<string, Latency>
  /** The busiest load generator's share of one core over the window: near 1, it is the bottleneck. */
  clientBusiest: number
  server: Usage | undefined
  /** PostgreSQL's and Redis's CPU over the window (every node, whoever asked). */
  shards?: Usage | undefined
}

/** Every PostgreSQL node and Redis of the box: the shard side of a request's cost. */
export const shardUsage = namedUsage(['postgres', 'redis-server'])

/** One child process that speaks HTTP/1.1 over raw sockets: one job at a time. */
function startLoadChild() {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--load-generator'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  let exited: Error | undefined
  const listeners = new Set<(error: Error) => void>()
  child.on('exit', (code, signal) => {
    exited = new Error(`a load generator exited (${signal ?? code})`)
    for (const listener of listeners) listener(exited)
  })
  return {
    run(job: LoadJob, onMeasuring: () => void): Promise<LoadResult> {
      return new Promise((resolve, reject) => {
        if (exited) return reject(exited)
        const onMessage = (message: FromLoad) => {
          if (message.type === 'measuring') return onMeasuring()
          child.off('message', onMessage)
          listeners.delete(reject)
          resolve(message.result)
        }
        child.on('message', onMessage)
        listeners.add(reject)
        child.send({ type: 'run', job } satisfies ToLoad)
      })
    },
    stop() {
      if (!exited) child.kill()
    },
  }
}

/**
 * `count` load generator processes; a job's connections are split between them. The server's usage (and
 * `shards`': PostgreSQL's and Redis's) is read when the first of them starts measuring and once all are done.
 */
export function startLoadGenerators(count: number, shards: UsageProbe = shardUsage) {
  const children = Array.from({ length: count }, startLoadChild)
  return {
    count,
    async run(job: LoadJob, usage: UsageProbe, generators = count): Promise<Measured> {
      const used = children.slice(0, Math.min(generators, job.connections))
      let before: Usage | undefined
      let shardsBefore: Usage | undefined
      let started = false
      const onMeasuring = () => {
        if (started) return
        started = true
        before = usage()
        shardsBefore = shards()
      }
      const results = await Promise.all(
        used.map((child, i) =>
          child.run(
            {
              ...job,
              connections:
                Math.floor(job.connections / used.length) + (i < job.connections % used.length ? 1 : 0),
              ...(job.rate !== undefined && { rate: job.rate / used.length }),
            },
            onMeasuring,
          ),
        ),
      )
      const server = usageSince(usage, before)
      return {
        ...mergeResults(results, job.measureMs, server),
        shards: usageSince(shards, shardsBefore),
        ...(job.rate !== undefined && { offeredRps: job.rate }),
      }
    },
    stop() {
      for (const child of children) child.stop()
    },
  }
}

export type LoadGenerators = ReturnType<typeof startLoadGenerators>

function mergeResults(results: LoadResult[], measureMs: number, server: Usage | undefined): Measured {
  const histogram = createHistogram()
  const byCache = new Map<string, Histogram>()
  const statuses: Record<string, number> = {}
  const nodes: Record<string, number> = {}
  const byKind: Record<string, number> = {}
  const cacheNodes: Record<string, number> = {}
  const cacheByKind: Record<string, number> = {}
  const add = (into: Record<string, number>, from: Record<string, number>) => {
    for (const [key, n] of Object.entries(from)) into[key] = (into[key] ?? 0) + n
  }
  const merge = (into: Histogram, latencies: [number, number][]) => {
    for (const [us, n] of latencies) for (let i = 0; i < n; i++) into.record(us / 1000)
  }
  for (const result of results) {
    merge(histogram, result.latencies)
    for (const [cache, latencies] of Object.entries(result.cacheLatencies)) {
      merge(histogramOf(byCache, cache), latencies)
    }
    add(statuses, result.statuses)
    add(nodes, result.nodes)
    add(byKind, result.byKind)
    add(cacheNodes, result.cacheNodes)
    add(cacheByKind, result.cacheByKind)
  }
  return {
    requests: histogram.count,
    seconds: measureMs / 1000,
    errors: results.reduce((sum, result) => sum + result.errors, 0),
    statuses,
    nodes,
    byKind,
    cacheNodes,
    cacheByKind,
    byCache: Object.fromEntries(
      [...byCache].map(([cache, latencies]) => [
        cache,
        { requests: latencies.count, p50Ms: latencies.percentileMs(50), p99Ms: latencies.percentileMs(99) },
      ]),
    ),
    p50Ms: histogram.percentileMs(50),
    p99Ms: histogram.percentileMs(99),
    maxMs: histogram.maxMs(),
    clientCpuMs: results.reduce((sum, result) => sum + result.clientCpuMs, 0),
    clientBusiest: Math.max(...results.map((result) => result.clientCpuMs / measureMs)),
    server,
  }
}

// ---------------------------------------------------------------------------------------------------
// The benchmark (parent process): topology, servers, runs, report. The building blocks are exported
// so that a scratch script can measure a patched router against the same baseline.
// ---------------------------------------------------------------------------------------------------

const flagsSchema = z.object({
  // 3 rounds of 12 runs of 2 + 6 s, with boot and pgbench's settling: about 5.5 minutes.
  seconds: z.coerce.number().positive().default(6),
  warmup: z.coerce.number().min(0).default(2),
  // Several short rounds, interleaved, and the median of each: on a shared 2-core box a burst of
  // someone else's work then spoils one round instead of one path's only run.
  rounds: z.coerce.number().int().min(1).default(3),
  breakdown: z.boolean().default(false),
  /** A folder for the routers' V8 CPU profiles (`--cpu-prof`), written when they stop: open in Chrome's DevTools or speedscope. */
  profile: z.string().min(1).optional(),
  /** Worker counts of the router to measure (`switchyard router --workers N`), e.g. `1,2`. */
  workers: z
    .string()
    .regex(/^[1-9]\d?(,[1-9]\d?)*$/, 'a comma-separated list of worker counts, e.g. 1,2')
    .default('1,2')
    .transform((list) => [...new Set(list.split(',').map(Number))]),
  /** Load generator processes; a run's connections are split between them. */
  clients: z.coerce.number().int().min(1).max(8).default(1),
  quick: z.boolean().default(false),
})

export interface Target {
  label: string
  port: number
  path: string
  headers: Record<string, string>
  /** The bodies each connection sends in turn. */
  bodies: string[]
  /** What each body is (the seed mix's operations), to count answers by kind. */
  kinds?: string[]
  /** Open loop at this many requests per second (closed loop without it). */
  rate?: number
  /** The server's CPU and system calls (this process, or a child's process tree). */
  usage: UsageProbe
  /** Load generator processes for this target (default: all of them). */
  generators?: number
}

/** One cell of the table: a path at a number of connections (the median of the rounds). */
export interface Row {
  label: string
  connections: number
  rps: number
  p50Ms: number
  p99Ms: number
  maxMs: number
  errors: number
  statuses: Record<string, number>
  nodes: Record<string, number>
  /** The seed mix's answers by `<operation> <status>`. */
  byKind: Record<string, number>
  /** Open loop: the requests per second asked of the server. */
  offeredRps?: number
  /** Answers by their x-switchyard-cache header; counted by `<cache> <node>` and `<operation> <cache>`. */
  byCache: Record<string, Latency>
  cacheNodes: Record<string, number>
  cacheByKind: Record<string, number>
  /** What the router logged during the run (warm-up included), by message. */
  logged: Record<string, number>
  /** CPU of the server's processes, per request. */
  serverCpuUs: number | undefined
  /** Their read/write system calls per request (Linux only). */
  serverSyscalls: number | undefined
  /** PostgreSQL's and Redis's CPU per request (all nodes). */
  shardCpuUs: number | undefined
  clientCpuUs: number
  /** The busiest load generator's share of a core: past CLIENT_SATURATED the figures are the client's. */
  clientBusiest: number
  /** Through pgpool-II: the SELECTs it sent to each node during the run (warm-up included). */
  selects?: Selects
}

export interface Fixture {
  tenant: string
  customer: string
  key: string
}

/** Teardown steps, run once in reverse order: at the end, on error, or on Ctrl-C. */
export function createCleanups() {
  const steps: (() => Promise<unknown>)[] = []
  let running: Promise<void> | undefined
  const run = () => {
    running ??= (async () => {
      for (const step of steps.reverse()) await step().catch((error: unknown) => console.error(error))
    })()
    return running
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`\n${signal}: tearing the topology down`)
      void run().finally(() => process.exit(130))
    })
  }
  return { add: (step: () => Promise<unknown>) => void steps.push(step), run }
}

export type Cleanups = ReturnType<typeof createCleanups>

/**
 * The test suite's throwaway topology (free ports, a temporary folder, never the default ports),
 * migrated, with one seeded tenant and an app key for it. The rate limit is raised out of the way.
 */
export async function bootTopology(
  cleanups: Cleanups,
): Promise<{ topology: Topology; fixture: Fixture; home: string }> {
  if (!redisServerPath()) throw new Error('the benchmark needs redis-server on the PATH, as the tests do')
  const home = await mkdtemp(path.join(os.tmpdir(), 'switchyard-bench-'))
  cleanups.add(() => rm(home, { recursive: true, force: true }))
  const input = testTopologyInput(await freePorts(9))
  const topology = parseTopology(
    {
      ...input,
      router: { ...input.router, rateLimitOverride: 2_000_000_000 },
      // testTopologyInput resolves against the working folder; the bench may run from anywhere.
      tenantSchema: { ...input.tenantSchema, migrations: fileURLToPath(MIGRATIONS) },
    },
    'bench/router.ts',
    // TLS to the shards is the router's default, `prefer`: plain to these loopback nodes.
    // SWITCHYARD_SHARD_SSLMODE=require shows what TLS costs. No other variable reaches the topology.
    { SWITCHYARD_SHARD_SSLMODE: process.env.SWITCHYARD_SHARD_SSLMODE },
  )
  cleanups.add(() => clusterDown(topology, { home }))
  await clusterUp(topology, { home, durable: false })
  await migrateAll(topology)
  return { topology, fixture: await seed(topology), home }
}

/** One tenant on shard-1 with the demo rows, an app key for it, and its first customer once the replica has it. */
async function seed(topology: Topology): Promise<Fixture> {
  const tenant = randomUUID()
  const key = await withDirectory(topology, async (directory) => {
    await addTenant(directory, topology, { id: tenant, shard: SHARD })
    // The seed mix books the same days again round after round: its writes must never fail. The quota
    // trigger still runs and counts the day on every booking; only the limit is out of reach. No router
    // runs yet, so there is no cached route to invalidate.
    await setTenantLimits(directory, topology, { invalidate: async () => {} }, tenant, {
      max_appointments_per_day: 1_000_000_000,
    })
    return createKey(directory, { scope: 'app', tenants: [tenant], name: 'bench' })
  })
  const shard = topology.shards.find((s) => s.id === SHARD)
  if (!shard?.replicas[0]) throw new Error(`${SHARD} needs a replica`)
  const customer = await withAdmin(shard.primary, async (sql) => {
    // The load test's volume (customers, a fortnight of appointments each side of today): the seed mix needs future ones.
    await fillTenant(sql, tenant, 'Bench', LOADTEST_VOLUME)
    const [row] = await sql<{ id: string }[]>`
      select id from customers where tenant_id = ${tenant} order by name limit 1`
    return row?.id as string
  })
  // The reads go to the replica: wait until it has replayed the seed.
  await withAdmin(shard.replicas[0], async (sql) => {
    for (let tries = 0; ; tries++) {
      const [row] = await sql`select 1 from customers where tenant_id = ${tenant} and id = ${customer}`
      if (row) return
      if (tries > 200) throw new Error('the replica did not replay the seeded rows within 10 s')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  })
  return { tenant, customer, key: key.key }
}

export const pointReadBody = (fixture: Fixture) =>
  JSON.stringify({ sql: POINT_READ, params: [fixture.tenant, fixture.customer], method: 'all' })

export const tenantHeaders = (fixture: Fixture) => ({
  authorization: `Bearer ${fixture.key}`,
  'x-tenant-id': fixture.tenant,
})

/** One request: it must answer 200 with the customer's row. Returns x-switchyard-node. */
async function probe(target: Target, body: string, customer: string): Promise<string | null> {
  const response = await fetch(`http://127.0.0.1:${target.port}${target.path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...target.headers },
    body,
  })
  const text = await response.text()
  if (response.status !== 200 || !text.includes(customer))
    throw new Error(`${target.label} answered ${response.status} ${text}`)
  return response.headers.get('x-switchyard-node')
}

/**
 * Probes a router until its reads go to the replica: they go to the primary until the health monitor
 * has polled the replica once. Throws if they still do not after 15 s (the comparison would be unfair).
 */
export async function expectReplicaReads(target: Target, body: string, customer: string): Promise<string> {
  const replica = replicaName(SHARD, 0)
  const deadline = Date.now() + 15_000
  let node = await probe(target, body, customer)
  while (node !== replica && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    node = await probe(target, body, customer)
  }
  if (node !== replica) throw new Error(`${target.label} reads go to ${node}, not ${replica}: not comparable`)
  return node
}

/**
 * The routers' logger: pino at LOG_LEVEL (default warn), its lines counted by message instead of
 * printed, so that warnings under load (slow transactions) show up as one count per run.
 */
export const routerLog = (() => {
  let counts: Record<string, number> = {}
  const MESSAGE = /"msg":"((?:[^"\\]|\\.)*)"/
  const logger = pino(
    { level: process.env.LOG_LEVEL ?? 'warn', base: { service: 'switchyard' } },
    {
      write(line: string) {
        const message = MESSAGE.exec(line)?.[1] ?? 'log line'
        counts[message] = (counts[message] ?? 0) + 1
      },
    },
  )
  return {
    logger,
    /** Lines logged since the last call, by message. */
    take() {
      const taken = counts
      counts = {}
      return taken
    },
  }
})()

/** Runs targets through the load generator; prints each run as it finishes. */
export function createMeasure(load: LoadGenerators, timing: { warmupMs: number; measureMs: number }) {
  return async (target: Target, connections: number): Promise<Row> => {
    routerLog.take()
    const result = await load.run(
      {
        port: target.port,
        path: target.path,
        headers: target.headers,
        bodies: target.bodies,
        ...(target.kinds && { kinds: target.kinds }),
        ...(target.rate !== undefined && { rate: target.rate }),
        connections,
        ...timing,
      },
      target.usage,
      target.generators,
    )
    const row = rowOf(target.label, connections, result, routerLog.take())
    console.log(`  ${describe(row)}`)
    return row
  }
}

/** What only the HTTP load generators count (pgbench does not). */
type Counted = 'statuses' | 'nodes' | 'byKind' | 'byCache' | 'cacheNodes' | 'cacheByKind'

/** A table row from a run's merged figures. */
export function rowOf(
  label: string,
  connections: number,
  result: Omit<Measured, Counted> & Partial<Pick<Measured, Counted>>,
  logged: Record<string, number> = {},
): Row {
  const perRequest = (total: number | undefined) =>
    total !== undefined && result.requests ? total / result.requests : undefined
  return {
    label,
    connections,
    rps: result.requests / result.seconds,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    maxMs: result.maxMs,
    errors: result.errors,
    statuses: result.statuses ?? {},
    nodes: result.nodes ?? {},
    byKind: result.byKind ?? {},
    ...(result.offeredRps !== undefined && { offeredRps: result.offeredRps }),
    byCache: result.byCache ?? {},
    cacheNodes: result.cacheNodes ?? {},
    cacheByKind: result.cacheByKind ?? {},
    logged,
    serverCpuUs: perRequest(result.server?.cpuUs),
    serverSyscalls: perRequest(result.server?.syscalls),
    // A process that exits unreaped by a counted parent takes its CPU out of the sum (seen once under
    // load): a reading that went backwards is no figure at all.
    shardCpuUs: (result.shards?.cpuUs ?? -1) < 0 ? undefined : perRequest(result.shards?.cpuUs),
    clientCpuUs: perRequest(result.clientCpuMs * 1000) ?? 0,
    clientBusiest: result.clientBusiest,
  }
}

export type Measure = ReturnType<typeof createMeasure>

const ms = (value: number) => value.toFixed(3)

function describe(row: Row): string {
  const counts = (of: Record<string, number>) =>
    Object.entries(of)
      .map(([name, n]) => `${name}×${n}`)
      .join(' ')
  const nodes = counts(row.nodes)
  const logged = counts(row.logged)
  const caches = Object.entries(row.byCache)
    .map(([cache, latency]) => `${cache}×${latency.requests}`)
    .join(' ')
  const offered = row.offeredRps === undefined ? '' : ` (${row.offeredRps} offered)`
  return (
    `${row.label.padEnd(30)} c=${String(row.connections).padStart(2)}  ${row.rps.toFixed(0).padStart(6)} req/s${offered}  ` +
    `p50 ${ms(row.p50Ms)}  p99 ${ms(row.p99Ms)}  max ${ms(row.maxMs)} ms  [${counts(row.statuses)}]` +
    `${nodes ? ` ${nodes}` : ''}${caches ? `; cache: ${caches}` : ''}${logged ? `; logged: ${logged}` : ''}` +
    (row.clientBusiest > CLIENT_SATURATED
      ? `  CLIENT SATURATED (${(100 * row.clientBusiest).toFixed(0)}% of a core)`
      : '')
  )
}

export function medianOf(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** The median of each figure over the rounds (errors and counts are summed). */
export function medianRow(rounds: Row[]): Row {
  const median = (pick: (row: Row) => number) => medianOf(rounds.map(pick))
  const sum = (pick: (row: Row) => Record<string, number>) => {
    const total: Record<string, number> = {}
    for (const row of rounds)
      for (const [key, n] of Object.entries(pick(row))) total[key] = (total[key] ?? 0) + n
    return total
  }
  const first = rounds[0] as Row
  const caches = [...new Set(rounds.flatMap((row) => Object.keys(row.byCache)))]
  const byCache = caches.map((cache) => {
    const of = rounds.flatMap((row) => row.byCache[cache] ?? [])
    return [
      cache,
      {
        requests: of.reduce((total, latency) => total + latency.requests, 0),
        p50Ms: medianOf(of.map((latency) => latency.p50Ms)),
        p99Ms: medianOf(of.map((latency) => latency.p99Ms)),
      },
    ]
  })
  return {
    label: first.label,
    connections: first.connections,
    rps: median((row) => row.rps),
    p50Ms: median((row) => row.p50Ms),
    p99Ms: median((row) => row.p99Ms),
    maxMs: Math.max(...rounds.map((row) => row.maxMs)),
    errors: rounds.reduce((total, row) => total + row.errors, 0),
    statuses: sum((row) => row.statuses),
    nodes: sum((row) => row.nodes),
    byKind: sum((row) => row.byKind),
    ...(first.offeredRps !== undefined && { offeredRps: first.offeredRps }),
    byCache: Object.fromEntries(byCache),
    cacheNodes: sum((row) => row.cacheNodes),
    cacheByKind: sum((row) => row.cacheByKind),
    logged: sum((row) => row.logged),
    serverCpuUs: rounds.some((row) => row.serverCpuUs === undefined)
      ? undefined
      : median((row) => row.serverCpuUs ?? 0),
    serverSyscalls: rounds.some((row) => row.serverSyscalls === undefined)
      ? undefined
      : median((row) => row.serverSyscalls ?? 0),
    clientCpuUs: median((row) => row.clientCpuUs),
    shardCpuUs: rounds.some((row) => row.shardCpuUs === undefined)
      ? undefined
      : median((row) => row.shardCpuUs ?? 0),
    clientBusiest: Math.max(...rounds.map((row) => row.clientBusiest)),
    ...(first.selects && {
      selects: {
        primary: rounds.reduce((total, row) => total + (row.selects?.primary ?? 0), 0),
        replica: rounds.reduce((total, row) => total + (row.selects?.replica ?? 0), 0),
      },
    }),
  }
}

export function printTable(rows: Row[]) {
  console.log(
    '\n| path | connections | req/s | p50 ms | p99 ms | errors | server CPU µs/req | server syscalls/req | PostgreSQL + Redis CPU µs/req | client CPU µs/req | busiest client, % of a core |',
  )
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const row of rows) {
    console.log(
      `| ${row.label} | ${row.connections} | ${row.rps.toFixed(0)} | ${ms(row.p50Ms)} | ${ms(row.p99Ms)} | ` +
        `${row.errors} | ${row.serverCpuUs?.toFixed(0) ?? 'n/a'} | ${row.serverSyscalls?.toFixed(1) ?? 'n/a'} | ${row.shardCpuUs?.toFixed(0) ?? 'n/a'} | ` +
        `${row.clientCpuUs.toFixed(0)} | ${(100 * row.clientBusiest).toFixed(0)} |`,
    )
  }
}

/** The seed mix's answers per operation, summed over the rounds: every one but 200 is a failure. */
function printKinds(rows: Row[]) {
  console.log('\n| path | operation | 200 | other answers |')
  console.log('| --- | --- | ---: | --- |')
  for (const row of rows) {
    const byOperation = new Map<string, Record<string, number>>()
    for (const [key, n] of Object.entries(row.byKind)) {
      const [operation = '', status = ''] = key.split(' ')
      byOperation.set(operation, { ...byOperation.get(operation), [status]: n })
    }
    for (const [operation, statuses] of [...byOperation].sort(([a], [b]) => a.localeCompare(b))) {
      const { '200': ok = 0, ...other } = statuses
      const others = Object.entries(other).map(([status, n]) => `${status}×${n}`)
      console.log(`| ${row.label} | ${operation} | ${ok} | ${others.join(' ') || '—'} |`)
    }
  }
}

/** A load generator past this share of a core is (or is about to be) what limits the run. */
const CLIENT_SATURATED = 0.8

/**
 * A row through pgpool-II with more of its SELECTs on the primary than this share is not the peer of
 * the router's replica reads (pgpool-II sends a SELECT it cannot prove read-only to the primary, and the
 * rest of its transaction with it).
 */
const PGPOOL_PRIMARY_SHARE = 0.01

const misrouted = (selects: Selects) =>
  selects.replica === 0 || selects.primary > PGPOOL_PRIMARY_SHARE * (selects.primary + selects.replica)

/** Runs `run` and adds the SELECTs pgpool-II sent to each node meanwhile (select_cnt of SHOW pool_nodes). */
async function countingSelects(
  pgpool: RunningPgpool,
  login: Login,
  database: string,
  run: () => Promise<Row>,
): Promise<Row> {
  const before = await pgpool.selects(login, database)
  const row = await run()
  const after = await pgpool.selects(login, database)
  row.selects = { primary: after.primary - before.primary, replica: after.replica - before.replica }
  console.log(
    `    SELECTs pgpool-II sent: replica ${row.selects.replica}, primary ${row.selects.primary}` +
      (misrouted(row.selects) ? '  READS NOT ON THE REPLICA' : ''),
  )
  return row
}

/** Prints the ratios against the issue's targets; true when every one passes and nothing failed. */
function printTargets(point: Row[], mix: Row[], workers: number[]): boolean {
  const verdict = (pass: boolean) => (pass ? 'PASS' : 'FAIL')
  const all = [...point, ...mix]
  const router = (n: number) => `router, ${n} worker${n === 1 ? '' : 's'}`
  const checks: boolean[] = []
  const ratio = (what: string, a: Row | undefined, b: Row | undefined, target: number) => {
    if (!a || !b) return console.log(`${what}: not measured`)
    const value = a.rps / b.rps
    checks.push(value >= target)
    console.log(`${what}: ${value.toFixed(2)} (target ≥ ${target}) ${verdict(value >= target)}`)
  }
  const at = (rows: Row[], label: string, connections: number) =>
    rows.find((row) => row.label === label && row.connections === connections)
  console.log('')
  ratio(
    'point read, 64 connections: router / passthrough',
    at(point, router(1), 64),
    at(point, 'passthrough', 64),
    TARGETS.throughputRatioAt64,
  )
  if (at(point, 'pgpool-II plain', 64))
    ratio(
      'point read, 64 connections: router / pgpool-II plain',
      at(point, router(1), 64),
      at(point, 'pgpool-II plain', 64),
      TARGETS.pgpoolRatioAt64,
    )
  else console.log('point read: router / pgpool-II plain: not measured (pgpool-II missing)')
  const r1 = at(point, router(1), 1)
  const p1 = at(point, 'passthrough', 1)
  if (r1 && p1) {
    const delta = r1.p50Ms - p1.p50Ms
    checks.push(delta <= TARGETS.p50DeltaAt1Ms)
    console.log(
      `point read, 1 connection: router − passthrough p50: ${delta >= 0 ? '+' : ''}${ms(delta)} ms ` +
        `(target ≤ ${TARGETS.p50DeltaAt1Ms} ms) ${verdict(delta <= TARGETS.p50DeltaAt1Ms)}`,
    )
  }
  ratio(
    'seed mix, 64 connections: router / passthrough',
    at(mix, router(1), 64),
    at(mix, 'passthrough', 64),
    TARGETS.mixRatioAt64,
  )
  const cross = point.find((row) => row.label.startsWith(`${router(1)} (`) && row.connections === 64)
  const same = at(point, router(1), 64)
  if (cross && same)
    console.log(
      `cross-check, point read, 64 connections: ${same.label} ${same.rps.toFixed(0)} req/s, ${cross.label} ` +
        `${cross.rps.toFixed(0)} req/s: ${(cross.rps / same.rps).toFixed(2)} (near 1: the load generators do not set the figure)`,
    )
  for (const n of workers.filter((n) => n > 1)) {
    const a = at(point, router(n), 64)
    const b = at(point, router(1), 64)
    if (a && b)
      console.log(
        `point read, 64 connections: ${n} workers / 1 worker: ${(a.rps / b.rps).toFixed(2)} (no target)`,
      )
  }
  const errors = all.reduce((total, row) => total + row.errors, 0)
  console.log(
    `failed requests (non-200, dropped connections, failed transactions): ${errors} ${verdict(errors === 0)}`,
  )
  const offReplica = all.filter((row) => row.selects && misrouted(row.selects))
  for (const row of offReplica)
    console.log(
      `PGPOOL-II READS NOT ON THE REPLICA: ${row.label}: ${row.selects?.primary} SELECTs on the primary, ${row.selects?.replica} on the replica; not the router's peer (see read_only_function_list)`,
    )
  const saturated = all.filter((row) => row.clientBusiest > CLIENT_SATURATED)
  for (const row of saturated)
    console.log(
      `CLIENT SATURATED: ${row.label} at ${row.connections}: a load generator used ${(100 * row.clientBusiest).toFixed(0)}% of a core; its figures measure the client, not the server (try --clients 2)`,
    )
  return checks.every(Boolean) && errors === 0 && saturated.length === 0 && offReplica.length === 0
}

export const loadAverage = () =>
  os
    .loadavg()
    .map((n) => n.toFixed(2))
    .join(' ')

/** The box a bench runs on and its load at the start: its figures are this machine's. */
export function machineLine(): string {
  const cpus = os.cpus()
  return (
    `machine: ${cpus.length} × ${cpus[0]?.model.trim() ?? 'unknown cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ` +
    `${os.type()} ${os.release()}, node ${process.version}; load average at start ${loadAverage()}`
  )
}

const USAGE =
  'usage: npm run bench:router -- [--seconds N] [--warmup N] [--rounds N] [--workers 1,2] [--clients N] [--quick] [--breakdown] [--profile DIR]'

async function main() {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      rounds: { type: 'string' },
      workers: { type: 'string' },
      clients: { type: 'string' },
      quick: { type: 'boolean' },
      breakdown: { type: 'boolean' },
      profile: { type: 'string' },
    },
  })
  const parsedFlags = flagsSchema.safeParse(values)
  if (!parsedFlags.success) {
    console.error(
      `${parsedFlags.error.issues.map((issue) => `--${issue.path.join('.')}: ${issue.message}`).join('\n')}\n${USAGE}`,
    )
    process.exit(2)
  }
  const flags = parsedFlags.data
  if (flags.quick)
    Object.assign(flags, {
      seconds: Math.min(flags.seconds, 3),
      warmup: Math.min(flags.warmup, 1),
      rounds: 1,
    })
  const began = Date.now()
  console.log('# Switchyard router benchmark: passthrough, pgpool-II and the router, point read and seed mix')
  console.log(machineLine())
  console.log(
    `PostgreSQL, Redis, the servers under test and the load generators share these ${os.cpus().length} cores`,
  )

  const cleanups = createCleanups()
  try {
    const { topology, fixture, home } = await bootTopology(cleanups)
    console.log(`topology up, migrated and seeded in ${((Date.now() - began) / 1000).toFixed(1)} s`)
    const ports = await freePorts(flags.workers.length + 2)
    const routers = new Map<number, RouterProcess>()
    for (const [i, workers] of flags.workers.entries()) {
      const router = await startRouterProcess(topology, home, {
        port: ports[i] as number,
        workers,
        nodeArgs: flags.profile ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(flags.profile)}`] : [],
      })
      cleanups.add(() => router.stop())
      routers.set(workers, router)
    }
    const passthrough = await startPassthroughProcess(passthroughOptions(topology, shardUrls(topology)))
    cleanups.add(passthrough.close)

    const point: Workload = { bodies: [pointReadBody(fixture)] }
    const mix = await seedMix(topology, fixture.tenant)
    const routerLabel = (n: number) => `router, ${n} worker${n === 1 ? '' : 's'}`
    const targets = {
      passthrough: (workload: Workload): Target => ({
        label: 'passthrough',
        port: passthrough.port,
        path: '/v1/query',
        headers: {},
        ...workload,
        usage: passthrough.usage,
      }),
      router: (n: number, workload: Workload): Target => {
        const router = routers.get(n) as RouterProcess
        return {
          label: routerLabel(n),
          port: router.port,
          path: '/v1/query',
          headers: tenantHeaders(fixture),
          ...workload,
          usage: router.usage,
        }
      },
    }
    await probe(targets.passthrough(point), pointReadBody(fixture), fixture.customer)
    for (const n of flags.workers)
      await expectReplicaReads(targets.router(n, point), pointReadBody(fixture), fixture.customer)
    console.log(
      `the router: \`switchyard router --workers N\` (N = ${flags.workers.join(', ')}) as its own process(es), default settings otherwise ` +
        `(log level ${process.env.LOG_LEVEL ?? 'info'}, to a file; TLS ${topology.router.tls.mode} to the shards; pools of ${topology.router.poolSize} per node in total), ` +
        `as ${topology.router.role.name} (RLS, its verified tenant context); reads on ${replicaName(SHARD, 0)}`,
    )
    console.log(
      `the passthrough: Hono + postgres.js as its own process, the shard's admin (no tenant context can be set by hand), ` +
        `prepared statements, pools of ${topology.router.poolSize}, reads on ${replicaName(SHARD, 0)}, the mix's writes on the primary`,
    )
    const pgpoolBinary = findPgpool()
    const pgpool = pgpoolBinary
      ? await startPgpool({
          binary: pgpoolBinary,
          home,
          port: ports[flags.workers.length] as number,
          pcpPort: ports[flags.workers.length + 1] as number,
          primaryUrl: shardUrls(topology).primary,
          replicaUrl: shardUrls(topology).replica,
          logins: [adminLogin(topology), routerLogin(topology)],
          // pgbench's 64 clients, and the pool of the passthrough that runs through pgpool-II.
          clients: 64 + topology.router.poolSize,
        })
      : undefined
    // The deployment a team would run instead: the same minimal HTTP server, its pools on pgpool-II.
    const viaPgpool = pgpool
      ? await startPassthroughProcess(
          passthroughOptions(topology, {
            primary: pgpoolUrl(topology, pgpool.port),
            replica: pgpoolUrl(topology, pgpool.port),
          }),
        )
      : undefined
    if (viaPgpool) cleanups.add(viaPgpool.close)
    if (pgpool) {
      cleanups.add(() => pgpool.stop())
      console.log(
        `pgpool-II ${pgpoolBinary}: streaming replication, SELECTs balanced to the replica only, driven by pgbench -M prepared`,
      )
    } else console.log(PGPOOL_MISSING)
    const pgbenchFound = findPgbench() !== undefined
    if (!pgbenchFound) console.log(PGBENCH_MISSING)
    const tenantSafe = await tenantSafeScript(topology, fixture)
    const mixForPgbench = mixScripts(mix)

    const generators = Math.max(flags.clients, 2)
    const load = startLoadGenerators(generators)
    cleanups.add(async () => load.stop())
    const timing = { warmupMs: flags.warmup * 1000, measureMs: flags.seconds * 1000 }
    const measure = createMeasure(load, timing)
    const withClients = (target: Target, clients: number): Target => ({
      ...target,
      generators: clients,
      label: `${target.label} (${clients} load generator${clients === 1 ? '' : 's'})`,
    })
    const bench = createPgbench(topology, home, timing)
    console.log(
      `\nruns: ${flags.warmup} s warm-up, then ${flags.seconds} s measured, ${flags.rounds} round(s); ${flags.clients} load generator process(es)`,
    )
    const pointRuns: Row[] = []
    const mixRuns: Row[] = []
    for (let round = 0; round < flags.rounds; round++) {
      console.log(`round ${round + 1}: point read`)
      pointRuns.push(await measure({ ...targets.passthrough(point), generators: flags.clients }, 1))
      pointRuns.push(await measure({ ...targets.router(1, point), generators: flags.clients }, 1))
      pointRuns.push(await measure({ ...targets.passthrough(point), generators: flags.clients }, 64))
      for (const n of flags.workers)
        pointRuns.push(await measure({ ...targets.router(n, point), generators: flags.clients }, 64))
      // The cross-check: another number of load generators must give the same answer.
      pointRuns.push(await measure(withClients(targets.router(1, point), flags.clients === 1 ? 2 : 1), 64))
      if (pgpool && viaPgpool)
        pointRuns.push(
          await countingSelects(pgpool, adminLogin(topology), databaseOf(topology), () =>
            measure(
              {
                ...targets.passthrough(point),
                port: viaPgpool.port,
                label: 'passthrough via pgpool-II',
                usage: viaPgpool.usage,
                generators: flags.clients,
              },
              64,
            ),
          ),
        )
      if (pgpool && pgbenchFound) {
        pointRuns.push(
          await countingSelects(pgpool, adminLogin(topology), databaseOf(topology), () =>
            bench('pgpool-II plain', pgpool.port, adminLogin(topology), plainScript(fixture), pgpool.usage),
          ),
        )
        pointRuns.push(
          await countingSelects(pgpool, adminLogin(topology), databaseOf(topology), () =>
            bench('pgpool-II tenant-safe', pgpool.port, routerLogin(topology), tenantSafe, pgpool.usage),
          ),
        )
      }
      if (pgbenchFound)
        pointRuns.push(
          await bench(
            'pgbench direct to the replica',
            Number(new URL(shardUrls(topology).replica).port),
            adminLogin(topology),
            plainScript(fixture),
            undefined,
          ),
        )
      console.log(`round ${round + 1}: seed mix (20% writes)`)
      mixRuns.push(await measure({ ...targets.passthrough(mix), generators: flags.clients }, 64))
      mixRuns.push(await measure({ ...targets.router(1, mix), generators: flags.clients }, 64))
      if (pgpool && pgbenchFound)
        mixRuns.push(
          await countingSelects(pgpool, adminLogin(topology), databaseOf(topology), () =>
            bench('pgpool-II plain', pgpool.port, adminLogin(topology), mixForPgbench, pgpool.usage),
          ),
        )
    }
    const medians = (runs: Row[]) => {
      const keys = [...new Set(runs.map((run) => `${run.connections}\u0000${run.label}`))]
      return keys.map((key) =>
        medianRow(runs.filter((run) => `${run.connections}\u0000${run.label}` === key)),
      )
    }
    const pointRows = medians(pointRuns)
    const mixRows = medians(mixRuns)
    console.log('\n## Point read (one customer by primary key)')
    printTable(pointRows)
    console.log("\n## Seed mix (the load test's frequent queries, 20% writes)")
    printTable(mixRows)
    printKinds(mixRows)
    if (pgpool)
      console.log(
        `\npgpool-II's nodes over the whole run (SHOW pool_nodes):\n${await pgpool.nodes(adminLogin(topology), databaseOf(topology))}`,
      )
    const pass = printTargets(pointRows, mixRows, flags.workers)
    for (const router of routers.values())
      console.log(
        `router log: ${await countLines(router.logFile)} lines in ${router.logFile} (removed at the end)`,
      )

    if (flags.breakdown) await breakdown({ topology, fixture, measure, rows: pointRows })
    console.log(
      `\nload average at end: ${loadAverage()}; took ${((Date.now() - began) / 60_000).toFixed(1)} min`,
    )
    process.exitCode = pass ? 0 : 1
  } finally {
    await cleanups.run()
  }
}

const countLines = async (file: string) =>
  (await readFile(file, 'utf8').catch(() => '')).split('\n').length - 1

/** What a load generator sends: bodies in turn, and for the seed mix which operation each one is. */
export interface Workload {
  bodies: string[]
  kinds?: string[]
}

/** The seed mix's draw: the same requests in every run (of one day: bookings are relative to today). */
const MIX_SEED = 14

/**
 * The load test's frequent queries (src/loadtest/workload.ts) for the bench tenant: 80% reads, 20% writes,
 * 4000 of them in a fixed order, so bookings spread over the year. Every write succeeds: bookings have no
 * unique slot, status changes touch existing rows, and the tenant's per-day quota is out of reach (seed).
 */
const seedMix = (topology: Topology, tenant: string) => drawWorkload(topology, tenant, operationPicker(0.2))

/** 4000 operations drawn by `pick` for the bench tenant, with a fixed seed: the same requests every run. */
export async function drawWorkload(
  topology: Topology,
  tenant: string,
  pick: () => Operation,
): Promise<Workload> {
  const [context] = await loadTenantContexts(topology, [
    { id: tenant, name: 'Bench', shard: SHARD, index: 0 },
  ])
  if (!context) throw new Error('the bench tenant has no appointments to work on')
  // The workload draws with Math.random (the load test wants a new draw per run); the bench wants the
  // same draw every run, so Math.random is a seeded generator while the bodies are built (synchronously).
  const operations = withSeededRandom(MIX_SEED, () =>
    Array.from({ length: 4000 }, () => {
      const operation = pick()
      return { kind: operation.name, body: JSON.stringify(operation.build(context)) }
    }),
  )
  return { bodies: operations.map((op) => op.body), kinds: operations.map((op) => op.kind) }
}

/** Runs `draw` with Math.random replaced by mulberry32(seed). */
function withSeededRandom<T>(seed: number, draw: () => T): T {
  const random = Math.random
  let state = seed >>> 0
  Math.random = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32
  }
  try {
    return draw()
  } finally {
    Math.random = random
  }
}

/** The passthrough's settings: the router's pool size per node and body limit, on these nodes. */
const passthroughOptions = (
  topology: Topology,
  urls: { primary: string; replica: string },
): PassthroughOptions => ({
  urls,
  poolSize: topology.router.poolSize,
  maxBodyBytes: topology.router.maxBodyBytes,
})

function shardUrls(topology: Topology) {
  const shard = topology.shards.find((s) => s.id === SHARD)
  if (!shard?.replicas[0]) throw new Error(`${SHARD} needs a replica`)
  return { primary: shard.primary, replica: shard.replicas[0] }
}

/** The admin's URL to shard-1's database, through pgpool-II (which speaks plain TCP to its clients). */
function pgpoolUrl(topology: Topology, port: number): string {
  const url = new URL(shardUrls(topology).primary)
  url.port = String(port)
  url.searchParams.delete('sslmode')
  return url.toString()
}

const databaseOf = (topology: Topology) => new URL(shardUrls(topology).primary).pathname.slice(1)

function adminLogin(topology: Topology): Login {
  const url = new URL(shardUrls(topology).primary)
  return { user: decodeURIComponent(url.username), password: decodeURIComponent(url.password) }
}

const routerLogin = (topology: Topology): Login => ({
  user: topology.router.role.name,
  password: topology.router.role.password,
})

/** The passthrough's point read for pgbench, its values written into the SQL (the same text every time, prepared once). */
const plainScript = (fixture: Fixture) =>
  `${POINT_READ.replace('$1', `'${fixture.tenant}'`).replace('$2', `'${fixture.customer}'`)};\n`

/**
 * The seed mix for pgbench: its first 128 requests (pgbench's most scripts), one script each with the
 * parameters inlined as literals (typed by their columns, as the bound text parameters are); pgbench
 * runs a random one per transaction, as the admin, like the passthrough.
 */
function mixScripts(mix: Workload): string[] {
  const body = z.object({ sql: z.string(), params: z.array(z.string().nullable()) })
  const literal = (value: string | null) => (value === null ? 'null' : `'${value.replaceAll("'", "''")}'`)
  return mix.bodies.slice(0, 128).map((text) => {
    const { sql, params } = body.parse(JSON.parse(text))
    return `${sql.replace(/\$(\d+)/g, (_, n: string) => literal(params[Number(n) - 1] ?? null)).trim()};\n`
  })
}

/** What a client of pgpool-II must send for the router's isolation: its own transaction and enter(). */
async function tenantSafeScript(topology: Topology, fixture: Fixture): Promise<string> {
  const { capability, epoch } = await withDirectory(topology, async (directory) => ({
    capability: await readRouterCapability(directory),
    epoch: (await findTenant(directory, fixture.tenant)).epoch,
  }))
  // As src/router/execute.ts sends it for a read: BEGIN naming isolation and access, enter() without limits.
  return [
    'begin isolation level read committed read only not deferrable;',
    `select switchyard.enter('${fixture.tenant}', ${epoch}, false, null, '${capability}');`,
    plainScript(fixture).trim(),
    'commit;',
    '',
  ].join('\n')
}

/** pgbench runs as table rows: 64 clients, the same warm-up and window as the HTTP runs. */
function createPgbench(topology: Topology, home: string, timing: { warmupMs: number; measureMs: number }) {
  return async (
    label: string,
    port: number,
    login: Login,
    script: string | string[],
    usage: UsageProbe | undefined,
  ): Promise<Row> => {
    // The server's usage over pgbench's measured run only: read after its warm-up run.
    let before: Usage | undefined
    let shardsBefore: Usage | undefined
    const result = await pgbench({
      home,
      port,
      login,
      database: databaseOf(topology),
      script,
      connections: 64,
      warmupSeconds: timing.warmupMs / 1000,
      seconds: timing.measureMs / 1000,
      onMeasuring: () => {
        before = usage?.()
        shardsBefore = shardUsage()
      },
    })
    const server = usage ? usageSince(usage, before) : undefined
    const shards = usageSince(shardUsage, shardsBefore)
    const row = rowOf(
      label,
      64,
      { ...result, clientBusiest: result.clientCpuMs / 2 / (result.seconds * 1000), server, shards },
      {},
    )
    console.log(`  ${describe(row)}`)
    return row
  }
}

interface BreakdownContext {
  topology: Topology
  fixture: Fixture
  measure: Measure
  rows: Row[]
}

/** In-process steps and variants: a router and a passthrough of their own in this process. */
async function breakdown({ topology, fixture, measure, rows }: BreakdownContext) {
  const router = await startRouter(topology, { port: 0, logger: routerLog.logger })
  const passthrough = await startPassthrough(passthroughOptions(topology, shardUrls(topology)), {
    router,
    tenant: fixture.tenant,
    replica: replicaName(SHARD, 0),
  })
  try {
    await breakdownWith({ topology, fixture, router, passthrough, measure, rows })
  } finally {
    await passthrough.close()
    await router.close()
  }
}

async function breakdownWith({
  topology,
  fixture,
  router,
  passthrough,
  measure,
  rows,
}: BreakdownContext & { router: RunningRouter; passthrough: Passthrough }) {
  console.log('\n## Breakdown: in-process steps, one at a time (no HTTP socket), median of 3 rounds')
  console.log(
    'wall = elapsed per call; node CPU = this process; PG CPU = the replica backend serving the call (from /proc)',
  )
  const deps = router.app
  const node = deps.pools.node(replicaName(SHARD, 0))
  const route = await deps.routes.resolve(fixture.tenant)
  // One connection each, so the backend doing the work is known: the passthrough's pool settings, and
  // the router's own (createPools) for its transaction.
  const replicaAdminUrl = shardUrls(topology).replica
  const single = postgres(replicaAdminUrl, {
    max: 1,
    prepare: true,
    onnotice: () => {},
    connection: { search_path: 'public' },
  })
  const routerPool = createPools([node], {
    size: 1,
    statementTimeoutMs: topology.router.statementTimeoutMs,
    tls: topology.router.tls,
    searchPath: topology.tenantSchema.schemas,
  })
  const backend = async (sql: Sql) => (await sql<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]?.pid
  const singlePid = await backend(single)
  const routerPid = Number(
    await onReserved(
      routerPool.pool(node.name),
      async (connection) =>
        (await connection.run([{ sql: 'select pg_backend_pid()', params: [] }]))[0]?.rows[0]?.[0],
    ),
  )
  const params = [fixture.tenant, fixture.customer]
  const plan = {
    tenant: fixture.tenant,
    epoch: route.epoch,
    write: false,
    capability: deps.capability,
    statements: [{ sql: POINT_READ, params }],
    params: [params],
  }
  // Its own metrics registry: the admin API registers the mover's metrics on the one it is given.
  const routerHono = createApp({ ...deps, metrics: createMetrics() })
  const body = pointReadBody(fixture)
  const request = (headers: Record<string, string>) =>
    new Request('http://127.0.0.1/v1/query', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body,
    })
  const steps: [string, () => unknown, number?][] = [
    ['auth: keys.authenticate (cache hit)', () => deps.keys.authenticate(fixture.key)],
    ['policy: classify (cache hit)', () => classify(POINT_READ)],
    ['tenant: routes.resolve (local hit)', () => deps.routes.resolve(fixture.tenant)],
    [
      'rate limit: admission.admit (Redis round trip)',
      () =>
        deps.admission.admit(fixture.tenant, SHARD, {
          apiRequests: 2_000_000_000,
          statements: 2_000_000_000,
          perApiRequest: 1,
        }),
    ],
    ['shard: the statement alone (passthrough pool)', () => single.unsafe(POINT_READ, params), singlePid],
    [
      'shard: runTransaction (one pipeline: enter, statement)',
      () => onReserved(routerPool.pool(node.name), (connection) => runTransaction(connection, plan)),
      routerPid,
    ],
    ['passthrough: app.fetch, whole request', async () => (await passthrough.app.fetch(request({}))).text()],
    [
      'router: app.fetch, whole request',
      async () => (await routerHono.fetch(request(tenantHeaders(fixture)))).text(),
    ],
  ]
  const timings = new Map<string, Timing[]>()
  for (let round = 0; round < 3; round++) {
    for (const [label, step, pid] of steps)
      timings.set(label, [...(timings.get(label) ?? []), await timeSerial(step, pid)])
  }
  console.log(`  ${'step'.padEnd(56)} wall µs  node CPU µs  PG CPU µs`)
  for (const [label, runs] of timings) {
    const median = (pick: (timing: Timing) => number | undefined) => {
      const values = runs
        .map(pick)
        .filter((value) => value !== undefined)
        .sort((x, y) => x - y)
      const mid = values[Math.floor(values.length / 2)]
      return mid === undefined ? '' : mid.toFixed(1)
    }
    console.log(
      `  ${label.padEnd(56)} ${median((t) => t.wallUs).padStart(7)}  ${median((t) => t.cpuUs).padStart(11)}  ${median((t) => t.backendCpuUs).padStart(9)}`,
    )
  }
  await single.end({ timeout: 5 })
  await routerPool.close()

  console.log('\n## Breakdown: HTTP variants, same request, same load')
  const withoutRedis = await startRouter(topology, {
    port: 0,
    withoutRedis: true,
    logger: routerLog.logger,
  })
  try {
    const headers = tenantHeaders(fixture)
    const bodies = [body]
    const usage = selfUsage
    const variants: Target[] = [
      {
        label: 'passthrough + runTransaction',
        port: passthrough.port,
        path: '/v1/tx',
        headers: {},
        bodies,
        usage,
      },
      {
        label: 'passthrough + bodyLimit',
        port: passthrough.port,
        path: '/body-limit/v1/query',
        headers: {},
        bodies,
        usage,
      },
      {
        label: 'passthrough + late header',
        port: passthrough.port,
        path: '/late-header/v1/query',
        headers: {},
        bodies,
        usage,
      },
      {
        label: 'router in-process, log level warn',
        port: router.port,
        path: '/v1/query',
        headers,
        bodies,
        usage,
      },
      {
        label: 'router in-process, without Redis',
        port: withoutRedis.port,
        path: '/v1/query',
        headers,
        bodies,
        usage,
      },
      {
        label: 'router in-process, consistency eventual',
        port: router.port,
        path: '/v1/query',
        headers: { ...headers, 'x-switchyard-consistency': 'eventual' },
        bodies,
        usage,
      },
    ]
    await expectReplicaReads(variants[3] as Target, body, fixture.customer)
    await expectReplicaReads(variants[4] as Target, body, fixture.customer)
    const more: Row[] = []
    for (const connections of [1, 64])
      for (const variant of variants) more.push(await measure(variant, connections))
    printTable([...rows, ...more])
  } finally {
    await withoutRedis.close()
  }
}

interface Timing {
  wallUs: number
  cpuUs: number
  backendCpuUs?: number
}

/**
 * Per call of `step`, awaited one at a time after a warm-up: elapsed µs, this process's CPU µs and,
 * given a PostgreSQL backend's pid, that backend's CPU µs (Linux /proc, 10 ms ticks: fine over 5000 calls).
 */
async function timeSerial(step: () => unknown, backendPid?: number, iterations = 5000): Promise<Timing> {
  for (let i = 0; i < 500; i++) await step()
  const backendBefore = backendPid ? processCpuUs(backendPid) : undefined
  const cpu = process.cpuUsage()
  const started = performance.now()
  for (let i = 0; i < iterations; i++) await step()
  const wallUs = ((performance.now() - started) * 1000) / iterations
  const used = process.cpuUsage(cpu)
  const backendAfter = backendPid ? processCpuUs(backendPid) : undefined
  return {
    wallUs,
    cpuUs: (used.user + used.system) / iterations,
    backendCpuUs:
      backendBefore !== undefined && backendAfter !== undefined
        ? (backendAfter - backendBefore) / iterations
        : undefined,
  }
}

/** utime + stime of a process in µs, from /proc/<pid>/stat; undefined where there is no /proc. */
function processCpuUs(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
    const ticksPerSecond = 100
    return ((Number(fields[11]) + Number(fields[12])) * 1_000_000) / ticksPerSecond
  } catch {
    return undefined
  }
}

const isMain =
  process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (isMain && process.argv.includes('--load-generator')) loadGeneratorProcess()
else if (isMain)
  await main().catch((error: unknown) => {
    console.error(error)
    process.exitCode = 1
  })
