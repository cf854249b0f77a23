import type { CapacityReport, CapacityStep } from './capacity.ts'
import { errorCount, formatMs } from './report.ts'

/** A share of a core (or of the machine) at a glance: 27%, or ? when it could not be read. */
export const share = (value: number | null) => (value === null ? '?' : `${Math.round(value * 100)}%`)

/** One finished step, as the search prints it while it runs. */
export function stepLine(index: number, step: CapacityStep): string {
  const { usage } = step
  return `step ${index}: ${step.rate} req/s${step.retry ? ' again' : ''} ${step.pass ? 'PASS' : 'FAIL'} · p99 ${formatMs(step.p99)} ms, max ${formatMs(step.max)} ms, ${step.requests} requests, ${errorCount(step.errors)} errors · router CPU ${share(usage.routerCpu)} of a core, others ${share(usage.otherCpu)}, machine ${share(usage.machineBusy)} busy${step.missed.length ? ` · missed: ${step.missed.join('; ')}` : ''}`
}

/** The generator check at the knee in a line, or why it could not run. */
export function generatorLine(check: NonNullable<CapacityReport['generatorCheck']>): string {
  if ('error' in check) return `load generator check: not run (${check.error})`
  return `load generator at ${check.rate} req/s, no moves: standard p99 ${formatMs(check.standard.p99)} ms (${check.standard.cpuMsPerRequest} ms CPU a request, ${check.standard.errors} errors); light client p99 ${formatMs(check.light.p99)} ms (${check.light.cpuMsPerRequest} ms CPU a request, ${check.light.errors} errors)`
}

/** The search for a terminal: every step, the knee in the seed's units, where its time went, the generator. */
export function formatCapacity(report: CapacityReport): string {
  const lines = [
    `capacity: ${report.settings.tenants} tenants, ${report.settings.stepDuration} s a step after ${report.settings.warmup} s warm-up, ${report.settings.moves} moves a step, zipf ${report.settings.zipf}; targets p99 < ${report.targets.p99Ms} ms, no errors, every answer < ${report.targets.maxMs} ms`,
    '',
    'rate req/s  verdict  requests  errors      p50 ms    p99 ms    max ms  router CPU  others  machine',
    ...report.steps.map((step) =>
      [
        `${step.retry ? 'again ' : ''}${step.rate}`.padStart(11),
        (step.pass ? 'PASS' : 'FAIL').padEnd(7),
        String(step.requests).padStart(8),
        String(errorCount(step.errors)).padStart(6),
        formatMs(step.p50).padStart(8),
        formatMs(step.p99).padStart(8),
        formatMs(step.max).padStart(8),
        share(step.usage.routerCpu).padStart(10),
        share(step.usage.otherCpu).padStart(6),
        share(step.usage.machineBusy).padStart(7),
        step.missed.join('; '),
      ].join('  '),
    ),
    '',
  ]
  const { knee } = report
  if (!knee) {
    lines.push('KNEE: none: no rate tried held every target')
    return `${lines.join('\n')}\n`
  }
  const usage = knee.step.usage
  lines.push(
    `KNEE: ${knee.rate} requests/s = ${knee.tenantsAtApiLimit} tenants at ${report.nominal.apiRateLimitPerHour} API requests/hour (${knee.statementsPerApiRequest} statements per API request over the search; ${report.nominal.tenants} tenants are seeded)`,
    `  bounded by: ${knee.bound}${knee.bound === 'failure within precision' ? '' : ' (the knee is a lower bound)'}${knee.step.retry ? '; it passed on its second run' : ''}`,
    `where the time went at ${knee.rate} req/s (CPU as a share of one core):`,
    `  router      ${share(usage.routerCpu)} (${usage.routerCpuMsPerRequest ?? '?'} ms CPU a request)`,
    `  shards      ${usage.nodes.map((node) => `${node.node} ${share(node.cpu)}`).join(', ') || '? (nodes not on this machine)'}`,
    `  generator   ${share(usage.generatorCpu)} (with the mover, which runs in its process; sent each request at most ${formatMs(knee.step.sendLag.max)} ms late, p99 ${formatMs(knee.step.sendLag.p99)} ms)`,
    `  others      ${share(usage.otherCpu)} (Redis, the directory, anything else on the machine)`,
    `  machine     ${share(usage.machineBusy)} of all cores busy`,
    `  pool waits  ${usage.poolWaits.count}, mean ${usage.poolWaits.meanMs} ms, p99 ≤ ${usage.poolWaits.p99Ms ?? '?'} ms`,
    `  replica lag at most ${usage.replicaLagMaxBytes ?? '?'} bytes`,
  )
  if (report.generatorCheck) lines.push(generatorLine(report.generatorCheck))
  return `${lines.join('\n')}\n`
}
