import { randomUUID } from 'node:crypto'
import pino from 'pino'
import { createKey, revokeKey } from '../directory/keys.ts'
import type { Logger } from '../log.ts'
import { capacityHtml } from './capacity-html.ts'
import { generatorLine, stepLine } from './capacity-text.ts'
import { driveLight, type LightResult } from './light-drive.ts'
import { assertRoomForMoves } from './moves.ts'
import type { CapacityOptions, ResolvedRun } from './options.ts'
import {
  buildReport,
  describeErrors,
  errorCount,
  formatMs,
  type LoadtestReport,
  machine,
  nominalRate,
  round,
  TARGETS,
} from './report.ts'
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
import type { TenantContext } from './workload.ts'

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
  /** How late the generator sent requests after their scheduled time, ms: a stalled generator shows here. */
  sendLag: { p99: number; max: number }
  moves: { tenant: string; from: string; to: string | null; state: string; stallMs: number | null }[]
  usage: StepUsage
}

export interface CapacityReport {
  version: 1
  createdAt: string
  machine: LoadtestReport['machine']
  settings: Omit<CapacityOptions, 'json' | 'html' | 'url'> & { router: string; tenants: number }
  /**
   * The load test's nominal rate: the seeded tenants × api_rate_limit an hour, in statements (what
   * `loadtest run` has always sent). The workload names an API request every three statements, so it is a
   * third of the tenants' API budgets: `knee.tenantsAtApiLimit` is the figure in the seed's units.
   */
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
     * the workload's grouping of 3, less each tenant's last API request left unfinished when it ended.
     */
    statementsPerApiRequest: number
    /**
     * What bounds it from above: a failing rate within --precision, or only --max-rate, --max-steps, or
     * rates too close to write apart (then the knee is a lower bound).
     */
    bound: Bound
    step: CapacityStep
  } | null
  /**
   * The load generator checked at the knee: its own drive and a lighter client, same rate, no moves (or
   * why the check could not run: the search's figures are kept either way).
   */
  generatorCheck: { rate: number; standard: LightResult; light: LightResult } | { error: string } | null
}

export type Bound = 'failure within precision' | 'max-rate' | 'max-steps' | 'rates too close'

export interface CapacityDeps extends RunDeps {
  /** One line per finished step (the CLI prints it). */
  report?: (line: string) => void
}

/** What every step of one search shares. */
interface Search {
  deps: CapacityDeps & { logger: Logger }
  options: CapacityOptions
  contexts: TenantContext[]
  url: string
  key: string
  router: RouterProcess | undefined
  readUsage: () => Promise<UsageSnapshot>
  /** One grouping of statements in API requests for the whole search (see CapacityReport.knee). */
  apiRequestOf: ReturnType<typeof apiRequests>
  statementsSent: number
  apiRateLimitPerHour: number
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
  // Interrupted, the search still stops its router and revokes its key (a move under way is left to
  // `moves list` / `moves resume`); a second signal exits at once.
  const interrupted = (signal: NodeJS.Signals) => {
    process.once(signal, () => process.exit(130))
    say(`${signal}: stopping the search's router and revoking its key`)
    void Promise.allSettled([router?.close(), revokeKey(deps.directory, key.id)]).then(() =>
      process.exit(130),
    )
  }
  process.once('SIGINT', interrupted)
  process.once('SIGTERM', interrupted)
  try {
    router = options.url ? undefined : await startRouterProcess()
    const url = options.url ?? (router as RouterProcess).url
    const search: Search = {
      deps: { ...deps, logger },
      options,
      contexts,
      url,
      key: key.key,
      router,
      readUsage: usageReader(deps.topology, url),
      apiRequestOf: apiRequests(randomUUID()),
      statementsSent: 0,
      apiRateLimitPerHour,
    }
    const steps: CapacityStep[] = []
    const rates: CapacityReport['rates'] = []
    const start = options.from === 'nominal' ? nominal : options.from
    for (const rate of bisection(start, options, rates)) {
      let step = await runStep(search, rate, false)
      steps.push(step)
      say(stepLine(steps.length, step))
      // One failure on a shared machine may be another program's: a rate fails only if it fails twice.
      if (!step.pass && options.retry) {
        step = await runStep(search, rate, true)
        steps.push(step)
        say(stepLine(steps.length, step))
      }
      rates.push({ rate, pass: step.pass })
    }
    const knee = kneeOf(search, steps, rates)
    const generatorCheck = knee && options.generatorCheck ? await checkGenerator(search, knee.rate) : null
    if (generatorCheck) say(generatorLine(generatorCheck))
    const { json: _json, html: _html, url: _url, ...settings } = options
    const report: CapacityReport = {
      version: 1,
      createdAt: new Date().toISOString(),
      machine: machine(),
      settings: {
        ...settings,
        router: options.url ? withoutCredentials(options.url) : 'a process of its own',
        tenants: contexts.length,
      },
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
    process.off('SIGINT', interrupted)
    process.off('SIGTERM', interrupted)
    await router?.close()
    await revokeKey(deps.directory, key.id).catch((error: unknown) =>
      logger.error({ err: error }, 'the capacity search could not revoke its key'),
    )
  }
}

/** One step at `rate`, with its moves, judged against the targets; its usage over the measured window. */
async function runStep(search: Search, rate: number, retry: boolean): Promise<CapacityStep> {
  const { options, url } = search
  const resolved = stepRun(options, rate, options.moves)
  const lags: (number | null)[] = []
  let sampler: NodeJS.Timeout | undefined
  let before: Promise<UsageSnapshot> | undefined
  let after: Promise<UsageSnapshot> | undefined
  // Usage and lag over the measured window only: not the warm-up, nor the wait for the moves' cleanup.
  const window = {
    opened() {
      before = search.readUsage()
      sampler = setInterval(() => {
        void scrapeRouter(url).then((metrics) => {
          if (after === undefined) lags.push(replicaLagOf(metrics))
        })
      }, 1000)
    },
    closed() {
      clearInterval(sampler)
      after = search.readUsage()
    },
  }
  const driven = await drive(search.deps, resolved, search.contexts, url, search.key, {
    apiRequestOf: search.apiRequestOf,
    window,
  }).finally(() => clearInterval(sampler))
  search.router?.assertRunning()
  search.statementsSent += driven.sent
  const report = buildReport({
    options: resolved,
    router: url,
    tenants: search.contexts.length,
    apiRateLimitPerHour: search.apiRateLimitPerHour,
    recorded: driven.recorded,
    moves: driven.moves,
  })
  const missed = missedTargets(report)
  const { latency } = report
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
    sendLag: driven.sendLag,
    moves: report.moves.map(({ name, from, to, state, stallMs }) => ({
      tenant: name,
      from,
      to,
      state,
      stallMs,
    })),
    usage: stepUsage(
      search.deps.topology,
      await (before ?? search.readUsage()),
      await (after ?? search.readUsage()),
      latency.count,
      lags,
    ),
  }
}

/** A step's run: the search's options at `rate`, its own length, `moves` moves; nothing written. */
const stepRun = (options: CapacityOptions, rate: number, moves: number): ResolvedRun => ({
  ...options,
  duration: options.stepDuration,
  rate,
  moves,
  json: '',
  html: '',
})

/** The targets a step missed, one phrase each; none when it passed. */
function missedTargets(report: LoadtestReport): string[] {
  const { latency, errors } = report
  const limited = errors.rate_limited ?? 0
  return [
    ...(latency.p99 < TARGETS.p99Ms ? [] : [`p99 ${formatMs(latency.p99)} ms ≥ ${TARGETS.p99Ms} ms`]),
    ...(report.totals.errors === 0 ? [] : [`${report.totals.errors} errors (${describeErrors(errors)})`]),
    // The tenants' own API limit, not the machine: say so, so nobody reads it as the knee.
    ...(limited
      ? [`${limited} refused by the tenants' api_rate_limit (429), not by the machine's load`]
      : []),
    ...(latency.max < TARGETS.maxMs ? [] : [`max ${formatMs(latency.max)} ms ≥ ${TARGETS.maxMs} ms`]),
    ...report.moves
      .filter((move) => move.state !== 'done')
      .map((move) => `move of ${move.name} ${move.state}${move.error ? ` (${move.error})` : ''}`),
  ]
}

/** The highest passing rate, in the seed's units, with what bounds it from above. */
function kneeOf(
  search: Search,
  steps: CapacityStep[],
  rates: CapacityReport['rates'],
): CapacityReport['knee'] {
  const best = steps.filter((step) => step.pass).sort((a, b) => b.rate - a.rate)[0]
  if (!best) return null
  const made = search.apiRequestOf.made()
  const ratio = made ? round(search.statementsSent / made, 3) : 1
  const above = rates.filter((rate) => !rate.pass && rate.rate > best.rate).map((rate) => rate.rate)
  const failure = above.length ? Math.min(...above) : undefined
  const { options } = search
  const bound: Bound =
    failure === undefined
      ? best.rate >= options.maxRate
        ? 'max-rate'
        : 'max-steps'
      : (failure - best.rate) / best.rate <= options.precision
        ? 'failure within precision'
        : rates.length >= options.maxSteps
          ? 'max-steps'
          : 'rates too close'
  return {
    rate: best.rate,
    statementsPerApiRequest: ratio,
    tenantsAtApiLimit: Math.floor((best.rate / ratio) * (3600 / search.apiRateLimitPerHour)),
    bound,
    step: best,
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

/**
 * The run's own drive and a lighter client at the knee, same rate and length, no moves. A failure of the
 * check is reported in its place: it must not cost the search's figures.
 */
async function checkGenerator(search: Search, rate: number): Promise<CapacityReport['generatorCheck']> {
  const { options } = search
  try {
    const cpuBefore = process.cpuUsage()
    const driven = await drive(
      search.deps,
      stepRun(options, rate, 0),
      search.contexts,
      search.url,
      search.key,
    )
    const cpu = process.cpuUsage(cpuBefore)
    const latency = driven.recorded.all
    const standard: LightResult = {
      requests: latency.count,
      errors: errorCount(driven.recorded.errors),
      p50: latency.p50,
      p99: latency.p99,
      max: latency.max,
      cpuMsPerRequest: round((cpu.user + cpu.system) / 1000 / driven.sent, 3),
    }
    const light = await driveLight({
      url: search.url,
      key: search.key,
      rate,
      options,
      contexts: search.contexts,
    })
    return { rate, standard, light }
  } catch (error) {
    return { error: (error as Error).message }
  }
}

/** A URL as it may be printed and stored: without a user or password. */
function withoutCredentials(url: string): string {
  const parsed = new URL(url)
  parsed.username = ''
  parsed.password = ''
  return parsed.href
}
