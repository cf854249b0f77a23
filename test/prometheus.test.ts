import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { describe, expect } from 'vitest'
import { z } from 'zod'
import type { Directory } from '../src/directory/connection.ts'
import { createKey } from '../src/directory/keys.ts'
import { parseFlags, runFlags } from '../src/loadtest/options.ts'
import { type RunDeps, runLoadtest } from '../src/loadtest/run.ts'
import { findLoadtestTenants, seedLoadtest } from '../src/loadtest/seed.ts'
import type { RunningRouter } from '../src/router/server.ts'
import { connect, it, removeTenants, startTestRouter, type TestTenant, tenantWithKey } from './fixtures.ts'
import { newApiRequest, query } from './router-support.ts'
import { freePorts } from './setup/topology.ts'
import { eventually, topology } from './support.ts'

/**
 * Issue 18's acceptance: every panel of the provisioned Grafana dashboard shows data from a real
 * Prometheus (Debian's `prometheus`) that scrapes two routers with the repository's own scrape config,
 * while the load test's workload runs through both, a tenant moves through the admin API, one tenant
 * runs into its rate limit and another sends SQL that fails on its shard.
 */

const DASHBOARD = 'deploy/grafana/dashboards/switchyard.json'
const PROMETHEUS_FOLDER = 'deploy/prometheus'
/** What the test gives deploy/prometheus/prometheus.yml instead of its 5 s: Grafana's formulas below follow it. */
const SCRAPE_SECONDS = 1
const LOAD_SECONDS = 20

/**
 * Panels whose every reading may truly be 0 under this light load (connections in use at the instant of a
 * scrape, bytes a replica has not replayed when polled). Every other panel must show something above 0.
 */
const MAY_READ_ZERO = new Set(['Replica lag', 'Pool use by node'])

const execFileAsync = promisify(execFile)
const prefix = `pm${randomBytes(4).toString('hex')}`
let folder = ''
let prometheus: ChildProcess | undefined

it.afterAll(async ({ directory }) => {
  await stopPrometheus()
  const ids = (await findLoadtestTenants(directory, prefix)).map((tenant) => tenant.id)
  if (ids.length) await connect(topology().directory)`delete from moves where tenant_id = any(${ids}::uuid[])`
  await removeTenants(ids)
  if (folder) await rm(folder, { recursive: true, force: true })
})

describe('Prometheus and the Grafana dashboard', () => {
  it('every panel of the dashboard shows data from Prometheus scraping two routers under the load test', async ({
    directory,
    redis,
  }) => {
    folder = await mkdtemp(path.join(tmpdir(), 'switchyard-prometheus-'))
    await seedLoadtest(directory, topology(), { tenants: 8, scale: 0.05, prefix })
    const routers = [await startTestRouter(), await startTestRouter()] as const
    const url = await startPrometheus(routers)
    const from = Date.now() / 1000

    const [mover, other] = routers
    const stopAt = performance.now() + LOAD_SECONDS * 1000
    const [reports, misbehaved, move] = await Promise.all([
      Promise.all(routers.map((router, n) => loadThrough(router, n, { directory, redis }))),
      misbehave(other, stopAt),
      moveTenant(mover, directory),
    ])
    for (const report of reports) expect(report.totals.ok).toBeGreaterThan(0)
    expect(misbehaved.codes).toContain('rate_limited')
    expect(misbehaved.codes).toContain('sql_error')
    expect(move.state).toBe('done')
    // The last requests and the move's end reach Prometheus in its next scrapes.
    await new Promise((resolve) => setTimeout(resolve, 3 * SCRAPE_SECONDS * 1000))

    const to = Date.now() / 1000
    const panels = await readPanels()
    const variables = grafanaVariables(await readDashboard(), to - from)
    const problems: string[] = []
    for (const panel of panels) {
      const values: number[] = []
      for (const target of panel.targets) {
        const expr = concrete(target.expr, variables)
        if (expr.includes('$')) {
          problems.push(`"${panel.title}" ${target.refId}: no value for a variable in ${expr}`)
          continue
        }
        const series = target.instant
          ? await instantQuery(url, expr, to)
          : await rangeQuery(url, expr, from, to, SCRAPE_SECONDS)
        const finite = series.flatMap((s) => s.values).filter(Number.isFinite)
        if (finite.length === 0)
          problems.push(`"${panel.title}" ${target.refId}: no data (${series.length} series) for ${expr}`)
        values.push(...finite)
      }
      if (!MAY_READ_ZERO.has(panel.title) && values.length > 0 && !values.some((value) => value > 0))
        problems.push(`"${panel.title}": only zeros`)
    }
    expect(problems).toEqual([])
    expect(panels.length).toBeGreaterThanOrEqual(13)

    // Where the test's own doings show: the failing SQL under its shard (not `none`), the move as done.
    const failed = await rangeQuery(
      url,
      concrete(exprOf(panels, 'Failed requests'), variables),
      from,
      to,
      SCRAPE_SECONDS,
    )
    expect(failed.map((s) => s.metric.shard)).toContain(misbehaved.faultyShard)
    const moves = await instantQuery(url, concrete(exprOf(panels, 'Moves finished'), variables), to)
    expect(moves.find((s) => s.metric.outcome === 'done')?.values).toEqual([1])
    const top = await instantQuery(url, concrete(exprOf(panels, 'Top tenants'), variables), to)
    const ours = new Set([
      ...(await findLoadtestTenants(directory, prefix)).map((t) => t.id),
      ...misbehaved.tenants,
    ])
    expect(top.length).toBeGreaterThan(0)
    expect(top.every((s) => ours.has(s.metric.tenant ?? ''))).toBe(true)
  })
})

// --- Prometheus ---

/**
 * Starts Debian's prometheus with the repository's scrape config (scrape interval cut to SCRAPE_SECONDS)
 * and `routers` as its targets, in a temporary folder; resolves once both routers are scraped.
 */
async function startPrometheus(routers: readonly RunningRouter[]): Promise<string> {
  // The repository's files as they are: promtool reads the config and its routers file.
  await execFileAsync('promtool', ['check', 'config', path.join(PROMETHEUS_FOLDER, 'prometheus.yml')])
  const original = await readFile(path.join(PROMETHEUS_FOLDER, 'prometheus.yml'), 'utf8')
  const config = original.replaceAll(/^(\s+(?:scrape|evaluation)_interval:) 5s$/gm, `$1 ${SCRAPE_SECONDS}s`)
  expect(config.match(new RegExp(`_interval: ${SCRAPE_SECONDS}s`, 'g'))).toHaveLength(2)
  await writeFile(path.join(folder, 'prometheus.yml'), config)
  const targets = routers.map((router) => new URL(router.url).host)
  await writeFile(path.join(folder, 'routers.yml'), `- targets: ${JSON.stringify(targets)}\n`)
  const [port] = await freePorts(1)
  const url = `http://127.0.0.1:${port}`
  let log = ''
  prometheus = spawn(
    'prometheus',
    [
      `--config.file=${path.join(folder, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(folder, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  // Read, or a full pipe would stop it; the tail says why it failed, if it does.
  prometheus.stderr?.on('data', (chunk: Buffer) => {
    log = (log + chunk.toString()).slice(-4000)
  })
  const exited = new Promise<never>((_, reject) =>
    prometheus?.once('exit', (code) => reject(new Error(`prometheus exited (${code}): ${log}`))),
  )
  exited.catch(() => {})
  const up = eventually(async () => {
    const answer = await fetch(`${url}/api/v1/query?query=${encodeURIComponent('sum(up)')}`).catch(
      () => undefined,
    )
    if (!answer?.ok) return undefined
    const series = toSeries(QueryAnswer.parse(await answer.json()))
    return series[0]?.values[0] === routers.length ? true : undefined
  }, 15_000)
  await Promise.race([up, exited])
  return url
}

async function stopPrometheus(): Promise<void> {
  const child = prometheus
  prometheus = undefined
  if (!child || child.exitCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
}

const Sample = z.tuple([z.number(), z.string()])
const Labels = z.record(z.string(), z.string())
/** What /api/v1/query and /api/v1/query_range answer (the parts read here). */
const QueryAnswer = z.object({
  status: z.literal('success'),
  data: z.discriminatedUnion('resultType', [
    z.object({
      resultType: z.literal('vector'),
      result: z.array(z.object({ metric: Labels, value: Sample })),
    }),
    z.object({
      resultType: z.literal('matrix'),
      result: z.array(z.object({ metric: Labels, values: z.array(Sample) })),
    }),
  ]),
})

interface Series {
  metric: Record<string, string>
  /** Sample values as numbers: NaN where Prometheus says NaN (a quantile of no requests, 0/0). */
  values: number[]
}

function toSeries(answer: z.infer<typeof QueryAnswer>): Series[] {
  const { data } = answer
  if (data.resultType === 'vector')
    return data.result.map((s) => ({ metric: s.metric, values: [Number(s.value[1])] }))
  return data.result.map((s) => ({ metric: s.metric, values: s.values.map((v) => Number(v[1])) }))
}

async function askPrometheus(
  url: string,
  endpoint: string,
  params: Record<string, string>,
): Promise<Series[]> {
  const answer = await fetch(`${url}/api/v1/${endpoint}?${new URLSearchParams(params)}`)
  const body: unknown = await answer.json()
  if (!answer.ok) throw new Error(`${endpoint} ${params.query}: ${answer.status} ${JSON.stringify(body)}`)
  return toSeries(QueryAnswer.parse(body))
}

/** What a stat or bar gauge panel (an instant target) shows at `time`. */
const instantQuery = (url: string, expr: string, time: number) =>
  askPrometheus(url, 'query', { query: expr, time: String(time) })

/** What a time series panel shows from `start` to `end`, one point per `step` seconds (Grafana's $__interval). */
const rangeQuery = (url: string, expr: string, start: number, end: number, step: number) =>
  askPrometheus(url, 'query_range', {
    query: expr,
    start: String(start),
    end: String(end),
    step: String(step),
  })

// --- the dashboard ---

const Target = z.object({ refId: z.string(), expr: z.string(), instant: z.boolean().optional() })
interface Panel {
  title: string
  type: string
  targets?: z.infer<typeof Target>[] | undefined
  panels?: Panel[] | undefined
}
const PanelSchema: z.ZodType<Panel> = z.lazy(() =>
  z.object({
    title: z.string(),
    type: z.string(),
    targets: z.array(Target).optional(),
    panels: z.array(PanelSchema).optional(),
  }),
)
const Dashboard = z.object({
  panels: z.array(PanelSchema),
  templating: z.object({
    list: z.array(
      z.object({
        name: z.string(),
        type: z.string(),
        includeAll: z.boolean().optional(),
        allValue: z.string().optional(),
      }),
    ),
  }),
})

const readDashboard = async () => Dashboard.parse(JSON.parse(await readFile(DASHBOARD, 'utf8')))

/** Every panel that shows data, rows' own panels included; each must have a query. */
async function readPanels(): Promise<(Panel & { targets: z.infer<typeof Target>[] })[]> {
  const flat = (panels: Panel[]): Panel[] => panels.flatMap((panel) => [panel, ...flat(panel.panels ?? [])])
  const panels = flat((await readDashboard()).panels).filter((panel) => panel.type !== 'row')
  for (const panel of panels)
    expect(panel.targets?.length, `"${panel.title}" has no query`).toBeGreaterThan(0)
  return panels.map((panel) => ({ ...panel, targets: panel.targets ?? [] }))
}

/**
 * What Grafana puts for its variables, for a dashboard looked at over `rangeSeconds` with one point per
 * scrape: $__interval is the step, $__rate_interval max($__interval + scrape interval, 4 × scrape
 * interval), and each template variable that offers "All" is its `allValue` (every router).
 */
function grafanaVariables(
  dashboard: z.infer<typeof Dashboard>,
  rangeSeconds: number,
): Record<string, string> {
  const all = dashboard.templating.list.filter((variable) => variable.type === 'query' && variable.includeAll)
  return {
    __interval: `${SCRAPE_SECONDS}s`,
    __rate_interval: `${Math.max(2 * SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)}s`,
    __range: `${Math.ceil(rangeSeconds)}s`,
    ...Object.fromEntries(all.map((variable) => [variable.name, variable.allValue ?? '.*'])),
  }
}

/** `expr` with `$name` and `${name}` replaced by their values; a variable without one is left as it is. */
function concrete(expr: string, variables: Record<string, string>): string {
  return expr.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, braced?: string, bare?: string) => {
    return variables[braced ?? bare ?? ''] ?? whole
  })
}

function exprOf(panels: readonly { title: string; targets: { expr: string }[] }[], title: string): string {
  const expr = panels.find((panel) => panel.title.startsWith(title))?.targets[0]?.expr
  if (!expr) throw new Error(`no panel "${title}…" in ${DASHBOARD}`)
  return expr
}

// --- what the routers see ---

/** The load test's own run (the seed's mix, open loop) through `router`, with the default rate limits. */
function loadThrough(router: RunningRouter, n: number, deps: Omit<RunDeps, 'topology'>) {
  const options = parseFlags(runFlags, {
    url: router.url,
    prefix,
    duration: String(LOAD_SECONDS),
    warmup: '0',
    rate: '15',
    connections: '8',
    json: path.join(folder, `report-${n}.json`),
    html: path.join(folder, `report-${n}.html`),
  })
  return runLoadtest({ ...deps, topology: topology() }, options)
}

/**
 * Until `stopAt`, four times a second: a tenant limited to 5 requests an hour asks for a row (429 from
 * its 6th request on), and another sends SQL that fails on its shard (division by zero).
 */
async function misbehave(router: RunningRouter, stopAt: number) {
  const throttled = await tenantWithKey('shard-2', { api_rate_limit: 5 })
  const faulty = await tenantWithKey('shard-3')
  const codes = new Set<string>()
  const send = async (tenant: TestTenant, sql: string) => {
    // Each a new API request of the application: the sixth of the hour is refused.
    const answer = await query<{ error?: { code: string } }>(router, tenant, sql, [], {
      headers: newApiRequest(),
    })
    if (answer.body.error) codes.add(answer.body.error.code)
  }
  while (performance.now() < stopAt) {
    await Promise.all([send(throttled, 'select 1 as one'), send(faulty, 'select 1 / 0 as quotient')])
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
  return { codes: [...codes], tenants: [throttled.id, faulty.id], faultyShard: faulty.shard }
}

/** A few seconds into the load, moves the second-busiest loadtest tenant through `router`'s admin API. */
async function moveTenant(router: RunningRouter, directory: Directory) {
  await new Promise((resolve) => setTimeout(resolve, 3000))
  const { key } = await createKey(directory, { scope: 'admin', name: 'prometheus test' })
  const admin = async (method: string, url: string, body?: unknown) => {
    const answer = await fetch(`${router.url}/admin/v1${url}`, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    return MoveAnswer.parse(await answer.json())
  }
  const tenant = (await findLoadtestTenants(directory, prefix))[1]
  if (!tenant) throw new Error('no loadtest tenant to move')
  const to = await shardWithRoom(directory, tenant.shard)
  const started = await admin('POST', '/moves', { tenant: tenant.id, to })
  if (!started.id) throw new Error(`the move did not start: ${JSON.stringify(started)}`)
  return eventually(async () => {
    const move = await admin('GET', `/moves/${started.id}`)
    return move.state === 'done' || move.state === 'failed' ? move : undefined
  }, 30_000)
}

const MoveAnswer = z.looseObject({ id: z.string().optional(), state: z.string().optional() })

/** An active shard other than `from` with room for one more tenant (test files share the topology). */
async function shardWithRoom(directory: Directory, from: string): Promise<string> {
  const rows = await directory.sql<{ id: string }[]>`
    select s.id from shards s
    where s.state = 'active' and s.id <> ${from}
      and s.capacity > (select count(*) from tenants t where t.shard_id = s.id)
    order by s.id`
  const [first] = rows
  if (!first) throw new Error('no other shard has room for a move')
  return first.id
}
