import type { CapacityReport, CapacityStep } from './capacity.ts'
import { share } from './capacity-text.ts'
import { escapeHtml, htmlTable, STYLE } from './html.ts'
import { errorCount, formatMs } from './report.ts'
import type { StepUsage } from './usage.ts'

/**
 * The capacity search as one self-contained HTML file: the verdict, a rate-vs-p99 chart with the seed's
 * 100 ms line and the knee marked (SVG written here: the page needs no script and no network), and the
 * steps with where their time went.
 */
export function capacityHtml(report: CapacityReport): string {
  const { knee } = report
  const verdict = knee
    ? `Knee: ${knee.rate} requests/s = ${knee.tenantsAtApiLimit} tenants at ${report.nominal.apiRateLimitPerHour} API requests/hour (${knee.statementsPerApiRequest} statements per API request over the search; ${report.nominal.tenants} tenants are seeded). Bounded by: ${knee.bound}${knee.step.retry ? '; it passed on its second run' : ''}.`
    : `No rate tried held every target; the lowest tried was ${Math.min(...report.steps.map((s) => s.rate))} req/s.`
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Switchyard capacity ${escapeHtml(report.createdAt)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Switchyard capacity search</h1>
<p class="meta">${escapeHtml(`${report.createdAt} · ${report.settings.tenants} tenants, steps of ${report.settings.stepDuration} s after ${report.settings.warmup} s warm-up, ${report.settings.moves} moves a step, zipf ${report.settings.zipf}, ${report.settings.connections} connections · ${report.machine.cpus} vCPU ${report.machine.cpuModel}, Node ${report.machine.node}`)}</p>
<p class="${knee ? 'pass' : 'fail'}" id="knee">${escapeHtml(verdict)}</p>
<h2>p99 by rate (targets: p99 &lt; ${report.targets.p99Ms} ms, no errors, every answer &lt; ${report.targets.maxMs} ms)</h2>
<div class="chart">${chart(report)}</div>
${kneeSection(report)}
${generatorSection(report)}
<h2>Steps, in the order run</h2>
${htmlTable(report.steps.map(stepRow), STEP_COLUMNS)}
<p>Latencies in ms from each request’s scheduled time. CPU as a share of one core over the step’s measured window (primaries, replicas: their nodes added up; machine: of all its cores). Pool wait p99: the bound of the router histogram’s bucket it falls in. A rate that failed is run again, and the second run decides.</p>
</body>
</html>
`
}

const STEP_COLUMNS = [
  'rate',
  'verdict',
  'requests',
  'errors',
  'p50',
  'p99',
  'max',
  'router',
  'primaries',
  'replicas',
  'generator',
  'others',
  'machine',
  'pool wait p99',
  'replica lag',
  'move stalls',
]

/** The CPU of a step's nodes of one role, added up (the knee's section has each node). */
const roleCpu = (usage: StepUsage, role: 'primary' | 'replica') =>
  usage.nodes.length
    ? share(usage.nodes.filter((node) => node.role === role).reduce((sum, node) => sum + node.cpu, 0))
    : '?'

function stepRow(step: CapacityStep): Record<string, unknown> {
  const { usage } = step
  return {
    rate: `${step.rate}${step.retry ? ' (again)' : ''}`,
    verdict: step.pass ? 'PASS' : `FAIL: ${step.missed.join('; ')}`,
    requests: step.requests,
    errors: errorCount(step.errors),
    p50: formatMs(step.p50),
    p99: formatMs(step.p99),
    max: formatMs(step.max),
    router: share(usage.routerCpu),
    primaries: roleCpu(usage, 'primary'),
    replicas: roleCpu(usage, 'replica'),
    generator: share(usage.generatorCpu),
    others: share(usage.otherCpu),
    machine: share(usage.machineBusy),
    'pool wait p99': usage.poolWaits.p99Ms === null ? '?' : `≤ ${usage.poolWaits.p99Ms} ms`,
    'replica lag': usage.replicaLagMaxBytes === null ? '?' : `${usage.replicaLagMaxBytes} B`,
    'move stalls': step.moves
      .map((move) => (move.state === 'done' ? `${move.stallMs} ms` : move.state))
      .join(', '),
  }
}

/** Where the knee step's time went, one row per process or node. */
function kneeSection(report: CapacityReport): string {
  if (!report.knee) return ''
  const { usage } = report.knee.step
  const rows = [
    {
      part: 'router',
      cpu: share(usage.routerCpu),
      note: `${usage.routerCpuMsPerRequest ?? '?'} ms CPU a request`,
    },
    ...usage.nodes.map((node) => ({ part: node.node, cpu: share(node.cpu), note: node.role })),
    {
      part: 'load generator',
      cpu: share(usage.generatorCpu),
      note: `with the mover, which runs in its process; requests sent at most ${formatMs(report.knee.step.sendLag.max)} ms late (p99 ${formatMs(report.knee.step.sendLag.p99)} ms)`,
    },
    {
      part: 'others',
      cpu: share(usage.otherCpu),
      note: 'Redis, the directory, anything else on the machine',
    },
    { part: 'machine', cpu: share(usage.machineBusy), note: 'of all cores' },
    {
      part: 'pool waits',
      cpu: '',
      note: `${usage.poolWaits.count}, mean ${usage.poolWaits.meanMs} ms, p99 ≤ ${usage.poolWaits.p99Ms ?? '?'} ms`,
    },
    { part: 'replica lag', cpu: '', note: `at most ${usage.replicaLagMaxBytes ?? '?'} bytes` },
  ]
  return `<h2>Where the time went at the knee (${report.knee.rate} req/s; CPU as a share of one core)</h2>
${htmlTable(rows, ['part', 'cpu', 'note'])}`
}

function generatorSection(report: CapacityReport): string {
  const check = report.generatorCheck
  if (!check) return ''
  if ('error' in check) return `<p>The load generator check did not run: ${escapeHtml(check.error)}</p>`
  const rows = [
    { client: 'standard (the search’s own)', ...check.standard },
    { client: 'light (a process of its own, requests built beforehand)', ...check.light },
  ].map(({ cpuMsPerRequest, ...row }) => ({ ...row, 'CPU ms a request': cpuMsPerRequest }))
  return `<h2>The load generator at the knee (${check.rate} req/s, no moves)</h2>
${htmlTable(rows, ['client', 'requests', 'errors', 'p50', 'p99', 'max', 'CPU ms a request'])}`
}

const WIDTH = 760
const HEIGHT = 320
const PAD = { left: 60, right: 20, top: 16, bottom: 44 }

/** Rate (linear) against p99 (log), each step a dot, green if it passed; the 100 ms line and the knee. */
function chart(report: CapacityReport): string {
  const steps = [...report.steps].sort((a, b) => a.rate - b.rate)
  if (steps.length === 0) return '<p>No steps.</p>'
  const maxRate = Math.max(...steps.map((s) => s.rate)) * 1.1
  const p99s = steps.map((s) => Math.max(s.p99, 0.1))
  const low = Math.min(1, ...p99s)
  const high = Math.max(report.targets.p99Ms * 10, ...p99s)
  const x = (rate: number) => PAD.left + (rate / maxRate) * (WIDTH - PAD.left - PAD.right)
  const y = (ms: number) =>
    PAD.top +
    (1 - (Math.log10(Math.max(ms, 0.1)) - Math.log10(low)) / (Math.log10(high) - Math.log10(low))) *
      (HEIGHT - PAD.top - PAD.bottom)
  const parts: string[] = []
  for (let decade = Math.ceil(Math.log10(low)); decade <= Math.floor(Math.log10(high)); decade++) {
    const ms = 10 ** decade
    parts.push(
      `<line x1="${PAD.left}" x2="${WIDTH - PAD.right}" y1="${y(ms)}" y2="${y(ms)}" stroke="#e4e4e4"/>`,
      `<text x="${PAD.left - 6}" y="${y(ms) + 4}" text-anchor="end" font-size="11">${ms} ms</text>`,
    )
  }
  const target = y(report.targets.p99Ms)
  parts.push(
    `<line x1="${PAD.left}" x2="${WIDTH - PAD.right}" y1="${target}" y2="${target}" stroke="#c5221f" stroke-dasharray="6 4"/>`,
    `<text x="${WIDTH - PAD.right}" y="${target - 4}" text-anchor="end" font-size="11" fill="#c5221f">p99 target ${report.targets.p99Ms} ms</text>`,
  )
  for (let i = 0; i <= 5; i++) {
    const rate = Math.round((maxRate * i) / 5)
    parts.push(
      `<text x="${x(rate)}" y="${HEIGHT - PAD.bottom + 16}" text-anchor="middle" font-size="11">${rate}</text>`,
    )
  }
  parts.push(
    `<text x="${(PAD.left + WIDTH - PAD.right) / 2}" y="${HEIGHT - 8}" text-anchor="middle" font-size="12">requests/s (open loop)</text>`,
    // The line joins the runs the search went by (a failed rate's second run); the first runs are dots only.
    `<polyline fill="none" stroke="#888" points="${steps
      .filter(
        (s, i) => !steps.some((other, j) => j !== i && other.rate === s.rate && other.retry && !s.retry),
      )
      .map((s) => `${x(s.rate)},${y(s.p99)}`)
      .join(' ')}"/>`,
  )
  for (const step of steps)
    parts.push(
      `<circle cx="${x(step.rate)}" cy="${y(step.p99)}" r="5" fill="${step.pass ? '#188038' : '#c5221f'}"><title>${step.rate} req/s: p99 ${step.p99} ms, ${step.pass ? 'PASS' : 'FAIL'}</title></circle>`,
    )
  if (report.knee) {
    const kx = x(report.knee.rate)
    parts.push(
      `<line x1="${kx}" x2="${kx}" y1="${PAD.top}" y2="${HEIGHT - PAD.bottom}" stroke="#1a73e8" stroke-width="2"/>`,
      `<text x="${kx + 6}" y="${PAD.top + 12}" font-size="12" fill="#1a73e8" id="knee-label">knee ${report.knee.rate} req/s</text>`,
    )
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" role="img" aria-label="p99 latency by request rate">${parts.join('')}</svg>`
}
