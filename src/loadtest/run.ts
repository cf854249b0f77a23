import { randomUUID } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import pino from 'pino'
import type { Topology } from '../config/topology.ts'
import type { Directory } from '../directory/connection.ts'
import { createKey, revokeKey } from '../directory/keys.ts'
import type { Redis } from '../directory/redis.ts'
import { SwitchyardError } from '../errors.ts'
import type { Logger } from '../log.ts'
import { startRouter } from '../router/server.ts'
import { type Answer, driveOpenLoop } from './driver.ts'
import { reportHtml } from './html.ts'
import { assertRoomForMoves, type MoveDuringLoad, movable, moveCandidates, moveDuringLoad } from './moves.ts'
import type { ResolvedRun, RunOptions } from './options.ts'
import type { StepProgress } from './progress.ts'
import { createRecorder, type Recorded } from './recorder.ts'
import { buildReport, type LoadtestReport, nominalRate } from './report.ts'
import { findLoadtestTenants } from './seed.ts'
import { loadTenantContexts, operationPicker, type TenantContext, zipfPicker } from './workload.ts'

export interface RunDeps {
  topology: Topology
  directory: Directory
  redis?: Redis | undefined
  /** Router and mover logs; warnings and errors only, by default, so they do not drown the progress. */
  logger?: Logger
  onProgress?: (progress: StepProgress) => void
}

/**
 * Past this, a request counts as failed (`timeout`). Far above the seed's one-second target: a slow
 * answer must show up as latency, not vanish as an error.
 */
const REQUEST_TIMEOUT_MS = 30_000

/**
 * Statements of one API request of the seed's application: a booking page reads the business, its
 * services and its working hours. The run groups each tenant's statements in API requests of this many
 * (x-switchyard-request), so the tenant's rate limit counts what the seed counts (issue 19).
 */
export const STATEMENTS_PER_API_REQUEST = 3

/**
 * `switchyard loadtest run`: drives a router (its own, in this process, or `--url`) with the seed's
 * workload over the loadtest tenants, open loop, moving `--moves` tenants meanwhile; returns the report
 * and writes it as JSON and HTML.
 */
export async function runLoadtest(deps: RunDeps, options: RunOptions): Promise<LoadtestReport> {
  const logger = deps.logger ?? pino({ level: process.env.LOG_LEVEL ?? 'error' }, pino.destination(2))
  const contexts = await workloadTenants(deps, options.prefix, options.tenants)
  if (options.moves > 0)
    await assertRoomForMoves(
      deps.directory,
      deps.topology.shards.map((shard) => shard.id),
    )
  const key = await createKey(deps.directory, {
    scope: 'app',
    tenants: contexts.map((context) => context.id),
    name: 'loadtest',
  })
  const apiRateLimitPerHour = deps.topology.tenantLimits.api_rate_limit
  const resolved: ResolvedRun = {
    ...options,
    rate: options.rate === 'nominal' ? nominalRate(contexts.length, apiRateLimitPerHour) : options.rate,
  }
  const router = options.url ? undefined : await startOwnRouter(deps.topology, logger)
  try {
    const url = options.url ?? (router?.url as string)
    const { recorded, moves } = await drive({ ...deps, logger }, resolved, contexts, url, key.key)
    const report = buildReport({
      options: resolved,
      router: options.url ?? 'in-process',
      tenants: contexts.length,
      apiRateLimitPerHour,
      recorded,
      moves,
    })
    await writeReport(options.json, `${JSON.stringify(report, null, 2)}\n`)
    await writeReport(options.html, reportHtml(report))
    return report
  } finally {
    await router?.close()
    await revokeKey(deps.directory, key.id)
  }
}

export async function writeReport(file: string, text: string) {
  await mkdir(path.dirname(path.resolve(file)), { recursive: true })
  await writeFile(file, text)
}

export async function workloadTenants(
  deps: RunDeps,
  prefix: string,
  limit?: number,
): Promise<TenantContext[]> {
  const tenants = (await findLoadtestTenants(deps.directory, prefix)).slice(0, limit)
  const contexts = tenants.length ? await loadTenantContexts(deps.topology, tenants) : []
  if (contexts.length === 0)
    throw new SwitchyardError(
      'no_tenants',
      `no loadtest tenants with data (named ${prefix}-NNN): run \`switchyard loadtest seed\` first`,
    )
  return contexts
}

/** The run's own router, with the topology's limits as they are: the load is counted as an application's. */
function startOwnRouter(topology: Topology, logger: Logger) {
  return startRouter(topology, { port: 0, pgPort: null, logger })
}

/**
 * Each tenant's statements grouped in API requests of STATEMENTS_PER_API_REQUEST, in the order they are
 * sent: the id the next statement of `tenant` names.
 */
export function apiRequests(run: string) {
  const current = new Map<string, { id: string; left: number }>()
  let made = 0
  const next = (tenant: string): string => {
    let request = current.get(tenant)
    if (!request || request.left === 0) {
      made += 1
      request = { id: `${run}-${made}`, left: STATEMENTS_PER_API_REQUEST }
      current.set(tenant, request)
    }
    request.left -= 1
    return request.id
  }
  return { next, made: () => made }
}

/** What one drive saw and sent: the recorder's figures, the moves, the requests sent (warm-up included). */
export interface Driven {
  recorded: Recorded
  moves: MoveDuringLoad[]
  /** Requests sent, warm-up included. */
  sent: number
  /** How late the generator sent them after their scheduled times, ms (warm-up included). */
  sendLag: { p99: number; max: number }
}

/** One open-loop drive of `url` with the seed's workload over `contexts`, with its moves; see runLoadtest. */
export async function drive(
  deps: RunDeps & { logger: Logger },
  options: ResolvedRun,
  contexts: TenantContext[],
  url: string,
  key: string,
  extra: {
    /** Told when the measured window opens (the warm-up is over) and when every request is answered. */
    window?: { opened(): void; closed(): void }
    /** Groups statements in API requests across drives (a capacity search's steps); else a new one. */
    apiRequestOf?: ReturnType<typeof apiRequests>
  } = {},
): Promise<Driven> {
  const warmupMs = options.warmup * 1000
  const moving = moveCandidates(await movable(deps.directory, contexts), options.moves)
  const recorder = createRecorder(warmupMs, new Set(moving.map((tenant) => tenant.id)))
  const nextTenant = zipfPicker(contexts, options.zipf)
  const nextOperation = operationPicker(options.writeShare)
  const apiRequestOf = extra.apiRequestOf ?? apiRequests(randomUUID())
  const progress = runProgress(options, deps.onProgress)
  const startedAt = performance.now()
  const sinceWindow = () => performance.now() - startedAt - warmupMs
  // Copying a tenant takes seconds before its cutover: the first move starts with the measured window,
  // the others spread over it, so the cutovers fall while the load runs.
  let movesDone = 0
  const moves: Promise<MoveDuringLoad>[] = moving.map((tenant, k) =>
    moveDuringLoad(
      { topology: deps.topology, directory: deps.directory, redis: deps.redis, logger: deps.logger },
      tenant,
      warmupMs + (k * options.duration * 1000) / (moving.length + 1),
      sinceWindow,
    ).then((outcome) => {
      movesDone += 1
      if (sinceWindow() > options.duration * 1000) progress.moves(movesDone, moving.length)
      return outcome
    }),
  )
  const ticker = setInterval(() => progress.tick(performance.now() - startedAt), 250)
  const opening = setTimeout(() => extra.window?.opened(), warmupMs)
  let sent = 0
  let sendLag = { p99: 0, max: 0 }
  try {
    ;({ sent, sendLag } = await driveOpenLoop({
      url,
      key,
      rate: options.rate,
      seconds: options.warmup + options.duration,
      connections: options.connections,
      timeoutMs: REQUEST_TIMEOUT_MS,
      next() {
        const tenant = nextTenant()
        const operation = nextOperation()
        return {
          tenant: tenant.id,
          apiRequest: apiRequestOf.next(tenant.id),
          query: operation.build(tenant),
          done(answer: Answer) {
            recorder.record(operation.name, tenant.id, answer)
            progress.answered(answer)
            if (operation.name === 'book_appointment') rememberBooking(tenant, answer)
          },
        }
      },
    }))
  } finally {
    clearInterval(ticker)
    clearTimeout(opening)
  }
  extra.window?.closed()
  progress.finishing()
  progress.moves(movesDone, moves.length)
  return {
    recorded: recorder.result(),
    moves: await Promise.all(moves),
    sent,
    sendLag,
  }
}

/** A booked appointment can have its status changed later in the run, like a confirmation. */
function rememberBooking(tenant: TenantContext, answer: Answer) {
  const id = (answer.rows?.[0] as unknown[] | undefined)?.[0]
  if (typeof id !== 'string') return
  if (tenant.appointments.length < 200) tenant.appointments.push(id)
  else tenant.appointments[Math.floor(Math.random() * tenant.appointments.length)] = id
}

/** Progress while the load runs: seconds elapsed of warm-up and load, answers and errors so far. */
function runProgress(options: ResolvedRun, onProgress: (progress: StepProgress) => void = () => {}) {
  let answers = 0
  let errors = 0
  const note = () => `${answers.toLocaleString('en-US')} answers, ${errors} errors`
  return {
    answered(answer: Answer) {
      answers += 1
      if (answer.code !== null) errors += 1
    },
    tick(elapsedMs: number) {
      const seconds = Math.floor(elapsedMs / 1000)
      if (seconds < options.warmup)
        onProgress({ step: 'warm-up', done: seconds, total: options.warmup, note: note() })
      else
        onProgress({
          step: 'load',
          done: Math.min(options.duration, seconds - options.warmup),
          total: options.duration,
          note: note(),
        })
    },
    finishing() {
      onProgress({ step: 'load', done: options.duration, total: options.duration, note: note() })
    },
    moves(done: number, total: number) {
      if (total)
        onProgress({ step: 'moves', done, total, note: 'finished (cleanup waits out the route cache TTL)' })
    },
  }
}
