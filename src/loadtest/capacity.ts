import { randomUUID } from 'node:crypto'
import os from 'node:os'
import pino from 'pino'
import { createKey, revokeKey } from '../directory/keys.ts'
import type { Logger } from '../log.ts'
import { capacityHtml } from './capacity-html.ts'
import { driveLight, type LightResult } from './light-drive.ts'
import { assertRoomForMoves } from './moves.ts'
import type { CapacityOptions, ResolvedRun } from './options.ts'
import { buildReport, formatMs, nominalRate, TARGETS } from './report.ts'
import { type RouterProcess, startRouterProcess } from './router-process.ts'
import { apiRequests, drive, type RunDeps, workloadTenants, writeReport } from './run.ts'
import {
  replicaLagOf,
  type StepUsage,
  scrapeRouter,
  stepUsage,
  type UsageSnapshot,
  usageReader,
} from './usage.ts'

/**
 * `switchyard loadtest capacity`: how far past the nominal load the seed's targets hold. Open-loop steps
 * of the seed's workload, each with its own warm-up and two moves, on one router that stays up: the rate
 * doubles from `--from` until a step fails a target, then the interval between the highest passing rate
 * and the lowest failing one is bisected until it is within `--precision` of the former. The knee is
 * the highest passing rate. A step passes when p99 < 100 ms, no request failed, every answer came in
 * under 1 s, and its moves finished.
 */

export interface CapacityStep {
  rate: number
  pass: boolean
  /** A second run at a rate whose first run failed: the search goes by this one (a shared machine's noise). */
  retry: boolean
  /** Why it failed, one phrase per target missed. */
  missed: string[]
  requests: number
  errors: Record<string, number>
  p50: number
  p99: number
  max: number
  moves: { tenant: string; from: string; to: string | null; state: string; stallMs: number | null }[]
  usage: StepUsage
}

export interface CapacityReport {
  version: 1
  createdAt: string
  machine: { cpus: number; cpuModel: string; node: string; loadAverage: number[] }
  settings: Omit<CapacityOptions, 'json' | 'html' | 'url'> & { router: string; tenants: number }
  nominal: { tenants: number; apiRateLimitPerHour: number; requestsPerSecond: number }
  targets: { p99Ms: number; maxMs: number }
  steps: CapacityStep[]
  /** Each rate tried, in order, with the verdict the search went by (its retry's, if it had one). */
  rates: { rate: number; pass: boolean }[]
  /** The highest rate at which every target held; null when even the lowest rate tried failed. */
  knee: {
    rate: number
    /** The knee as tenants each sending the seed's api_rate_limit API requests an hour. */
    tenantsAtApiLimit: number
    /**
     * Statements over the distinct API requests (x-switchyard-request) they named, over the whole search:
     * the workload's 3, less each tenant's last API request left unfinished when the search ended.
     */
    statementsPerApiRequest: number
    step: CapacityStep
  } | null
  /** The load generator checked at the knee: its own drive and a lighter client, same rate, no moves. */
  generatorCheck: { rate: number; standard: LightResult; light: LightResult } | null
}

export interface CapacityDeps extends RunDeps {
  /** One line per finished step (the CLI prints it). */
  report?: (line: string) => void
}

export async function searchCapacity(deps: CapacityDeps, options: CapacityOptions): Promise<CapacityReport> {
  const logger = deps.logger ?? pino({ level: process.env.LOG_LEVEL ?? 'error' }, pino.destination(2))
  const say = deps.report ?? (() => {})
  const contexts = await workloadTenants(deps, options.prefix, options.tenants)
  if (options.moves > 0)
    await assertRoomForMoves(
      deps.directory,
      deps.topology.shards.map((shard) => shard.id),
    )
  const apiRateLimitPerHour = deps.topology.tenantLimits.api_rate_limit
  const nominal = nominalRate(contexts.length, apiRateLimitPerHour)
  const key = await createKey(deps.directory, {
    scope: 'app',
    tenants: contexts.map((context) => context.id),
    name: 'loadtest-capacity',
  })
  let router: RouterProcess | undefined
  try {
    router = options.url ? undefined : await startRouterProcess()
    const url = options.url ?? (router as RouterProcess).url
    const readUsage = usageReader(deps.topology, url)
    // One grouping of statements in API requests for the whole search: a step's last, unfinished API
    // request goes on in the next step, so the measured ratio is not diluted by each step's end.
    const apiRequestOf = apiRequests(randomUUID())
    let statementsSent = 0
    const runStep = async (rate: number, moves: number, retry: boolean): Promise<CapacityStep> => {
      const resolved: ResolvedRun = {
        ...options,
        duration: options.stepDuration,
        rate,
        moves,
        json: '',
        html: '',
      }
      // Usage over the measured window only: not the warm-up, nor the wait for the moves' cleanup.
      const lags: (number | null)[] = []
      const sampler = setInterval(() => {
        void scrapeRouter(url).then((metrics) => lags.push(replicaLagOf(metrics)))
      }, 1000)
      let before: Promise<UsageSnapshot> | undefined
      let after: Promise<UsageSnapshot> | undefined
      const driven = await drive({ ...deps, logger }, resolved, contexts, url, key.key, {
        apiRequestOf,
        window: {
          opened: () => {
            before = readUsage()
          },
          closed: () => {
            after = readUsage()
            clearInterval(sampler)
          },
        },
      }).finally(() => clearInterval(sampler))
      const report = buildReport({
        options: resolved,
        router: url,
        tenants: contexts.length,
        apiRateLimitPerHour,
        recorded: driven.recorded,
        moves: driven.moves,
      })
      statementsSent += driven.sent
      const { latency } = report
      const missed = [
        ...(latency.p99 < TARGETS.p99Ms ? [] : [`p99 ${formatMs(latency.p99)} ms ≥ ${TARGETS.p99Ms} ms`]),
        ...(report.totals.errors === 0
          ? []
          : [
              `${report.totals.errors} errors (${Object.entries(report.errors)
                .map(([code, n]) => `${code} ${n}`)
                .join(', ')})`,
            ]),
        ...(latency.max < TARGETS.maxMs ? [] : [`max ${formatMs(latency.max)} ms ≥ ${TARGETS.maxMs} ms`]),
        ...report.moves
          .filter((move) => move.state !== 'done')
          .map((move) => `move of ${move.name} ${move.state}${move.error ? ` (${move.error})` : ''}`),
      ]
      return {
        rate,
        pass: missed.length === 0 && latency.count > 0,
        retry,
        missed,
        requests: latency.count,
        errors: report.errors,
        p50: latency.p50,
        p99: latency.p99,
        max: latency.max,
        moves: report.moves.map(({ name, from, to, state, stallMs }) => ({
          tenant: name,
          from,
          to,
          state,
          stallMs,
        })),
        usage: stepUsage(
          deps.topology,
          await (before ?? readUsage()),
          await (after ?? readUsage()),
          latency.count,
          lags,
        ),
      }
    }

    const steps: CapacityStep[] = []
    const rates: CapacityReport['rates'] = []
    for (const rate of bisection(options.from === 'nominal' ? nominal : options.from, options, rates)) {
      let step = await runStep(rate, options.moves, false)
      steps.push(step)
      say(stepLine(steps.length, step))
      // One failure on a shared machine may be another program's: a rate fails only if it fails twice.
      if (!step.pass && options.retry) {
        step = await runStep(rate, options.moves, true)
        steps.push(step)
        say(stepLine(steps.length, step))
      }
      rates.push({ rate, pass: step.pass })
    }
    const best = steps.filter((step) => step.pass).sort((a, b) => b.rate - a.rate)[0]
    const ratio = apiRequestOf.made() ? round(statementsSent / apiRequestOf.made(), 3) : 1
    const knee = best
      ? {
          rate: best.rate,
          statementsPerApiRequest: ratio,
          tenantsAtApiLimit: Math.floor((best.rate / ratio) * (3600 / apiRateLimitPerHour)),
          step: best,
        }
      : null
    const generatorCheck =
      knee && options.generatorCheck
        ? await checkGenerator(deps, options, contexts, url, key.key, knee.rate, logger)
        : null
    if (generatorCheck)
      say(
        `load generator at ${generatorCheck.rate} req/s, no moves: standard p99 ${generatorCheck.standard.p99} ms, ${generatorCheck.standard.cpuMsPerRequest} ms CPU/request; light client p99 ${generatorCheck.light.p99} ms, ${generatorCheck.light.cpuMsPerRequest} ms CPU/request`,
      )
    const { json: _json, html: _html, url: _url, ...settings } = options
    const report: CapacityReport = {
      version: 1,
      createdAt: new Date().toISOString(),
      machine: machine(),
      settings: { ...settings, router: options.url ?? 'a process of its own', tenants: contexts.length },
      nominal: { tenants: contexts.length, apiRateLimitPerHour, requestsPerSecond: nominal },
      targets: { p99Ms: TARGETS.p99Ms, maxMs: TARGETS.maxMs },
      steps,
      rates,
      knee,
      generatorCheck,
    }
    await writeReport(options.json, `${JSON.stringify(report, null, 2)}\n`)
    await writeReport(options.html, capacityHtml(report))
    return report
  } finally {
    await router?.close()
    await revokeKey(deps.directory, key.id)
  }
}

/**
 * The rates to try, one at a time, from what the steps so far showed: doubling from `start` while steps
 * pass (halving while they fail), then bisecting between the highest pass and the lowest failure.
 */
export function* bisection(
  start: number,
  options: Pick<CapacityOptions, 'maxRate' | 'precision' | 'maxSteps'>,
  steps: readonly { rate: number; pass: boolean }[],
): Generator<number> {
  let rate = roundRate(Math.min(start, options.maxRate))
  for (let tried = 0; tried < options.maxSteps; tried++) {
    yield rate
    const passed = steps.filter((step) => step.pass).map((step) => step.rate)
    const failed = steps.filter((step) => !step.pass).map((step) => step.rate)
    const low = passed.length ? Math.max(...passed) : undefined
    const high = failed.length ? Math.min(...failed.filter((r) => low === undefined || r > low)) : undefined
    let next: number
    if (low === undefined) next = roundRate(rate / 2)
    else if (high === undefined || !Number.isFinite(high))
      next = roundRate(Math.min(low * 2, options.maxRate))
    else if ((high - low) / low <= options.precision) return
    else next = roundRate((low + high) / 2)
    // Nothing new to learn: the top was reached, or the rates are as close as they can be written.
    if (steps.some((step) => step.rate === next) || next < 0.1) return
    rate = next
  }
}

/** Whole requests per second from 10 up, one decimal below. */
const roundRate = (rate: number) => (rate >= 10 ? Math.round(rate) : Math.round(rate * 10) / 10)

/** The run's own drive and a lighter client at the knee, same rate and length, no moves. */
async function checkGenerator(
  deps: RunDeps,
  options: CapacityOptions,
  contexts: Parameters<typeof drive>[2],
  url: string,
  key: string,
  rate: number,
  logger: Logger,
): Promise<CapacityReport['generatorCheck']> {
  const resolved: ResolvedRun = {
    ...options,
    duration: options.stepDuration,
    rate,
    moves: 0,
    json: '',
    html: '',
  }
  const cpuBefore = process.cpuUsage()
  const driven = await drive({ ...deps, logger }, resolved, contexts, url, key)
  const cpu = process.cpuUsage(cpuBefore)
  const latency = driven.recorded.all
  const errors = Object.values(driven.recorded.errors).reduce((sum, n) => sum + n, 0)
  const standard: LightResult = {
    requests: latency.count,
    errors,
    p50: latency.p50,
    p99: latency.p99,
    max: latency.max,
    cpuMsPerRequest: round((cpu.user + cpu.system) / 1000 / driven.sent, 3),
  }
  const light = await driveLight({ url, key, rate, options, contexts })
  return { rate, standard, light }
}

export function stepLine(index: number, step: CapacityStep): string {
  const cores = (share: number | null) => (share === null ? '?' : `${(share * 100).toFixed(0)}%`)
  return `step ${index}: ${step.rate} req/s${step.retry ? ' again' : ''} ${step.pass ? 'PASS' : 'FAIL'} · p99 ${formatMs(step.p99)} ms, max ${formatMs(step.max)} ms, ${step.requests} requests, ${Object.values(step.errors).reduce((s, n) => s + n, 0)} errors · router CPU ${cores(step.usage.routerCpu)} of a core, others ${cores(step.usage.otherCpu)}, machine ${cores(step.usage.machineBusy)} busy${step.missed.length ? ` · missed: ${step.missed.join('; ')}` : ''}`
}

function machine(): CapacityReport['machine'] {
  const cpus = os.cpus()
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    node: process.version,
    loadAverage: os.loadavg().map((load) => round(load, 2)),
  }
}

const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits
