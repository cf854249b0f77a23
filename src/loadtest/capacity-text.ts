import type { CapacityReport } from './capacity.ts'

const share = (value: number | null) => (value === null ? '?' : `${Math.round(value * 100)}%`)

/** The search for a terminal: every step, the knee in the seed's units, where its time went, the generator. */
export function formatCapacity(report: CapacityReport): string {
  const lines = [
    `capacity: ${report.settings.tenants} tenants, ${report.settings.stepDuration} s a step after ${report.settings.warmup} s warm-up, ${report.settings.moves} moves a step, zipf ${report.settings.zipf}; targets p99 < ${report.targets.p99Ms} ms, no errors, every answer < ${report.targets.maxMs} ms`,
    '',
    'rate req/s  verdict  requests  errors      p50 ms    p99 ms    max ms  router CPU  others  machine',
    ...report.steps.map(
      (step) =>
        `${`${step.retry ? 'again ' : ''}${step.rate}`.padStart(11)}  ${(step.pass ? 'PASS' : 'FAIL').padEnd(7)}  ${String(step.requests).padStart(8)}  ${String(
          Object.values(step.errors).reduce((sum, n) => sum + n, 0),
        ).padStart(
          6,
        )}  ${String(step.p50).padStart(8)}  ${String(step.p99).padStart(8)}  ${String(step.max).padStart(8)}  ${share(step.usage.routerCpu).padStart(10)}  ${share(step.usage.otherCpu).padStart(6)}  ${share(step.usage.machineBusy).padStart(7)}${step.missed.length ? `  ${step.missed.join('; ')}` : ''}`,
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
    `KNEE: ${knee.rate} requests/s = ${knee.tenantsAtApiLimit} tenants at ${report.nominal.apiRateLimitPerHour} API requests/hour (${knee.statementsPerApiRequest} statements per API request, measured; nominal ${report.nominal.requestsPerSecond} req/s for ${report.nominal.tenants} tenants: ${(knee.rate / report.nominal.requestsPerSecond).toFixed(1)}×)`,
    `where the time went at ${knee.rate} req/s (CPU as a share of one core):`,
    `  router      ${share(usage.routerCpu)} (${usage.routerCpuMsPerRequest ?? '?'} ms CPU a request)`,
    `  shards      ${usage.nodes.map((node) => `${node.node} ${share(node.cpu)}`).join(', ') || '? (nodes not on this machine)'}`,
    `  generator   ${share(usage.generatorCpu)} (${usage.generatorCpuMsPerRequest} ms CPU a request; the mover runs in its process too)`,
    `  others      ${share(usage.otherCpu)} (Redis, the directory, anything else on the machine)`,
    `  machine     ${share(usage.machineBusy)} of all cores busy`,
    `  pool waits  ${usage.poolWaits.count}, mean ${usage.poolWaits.meanMs} ms, p99 ≤ ${usage.poolWaits.p99Ms ?? '?'} ms`,
    `  replica lag at most ${usage.replicaLagMaxBytes ?? '?'} bytes`,
  )
  const check = report.generatorCheck
  if (check)
    lines.push(
      `load generator at ${check.rate} req/s, no moves: standard p99 ${check.standard.p99} ms (${check.standard.cpuMsPerRequest} ms CPU a request, ${check.standard.errors} errors); light client p99 ${check.light.p99} ms (${check.light.cpuMsPerRequest} ms CPU a request, ${check.light.errors} errors)`,
    )
  return `${lines.join('\n')}\n`
}
