import { readFileSync } from 'node:fs'
import http from 'node:http'

/**
 * The lighter client of the capacity search's generator check, run as a process of its own: it sends
 * requests built beforehand (one JSON line each: tenant, API request, body) open loop, reads only each
 * answer's status, and keeps only latencies. No workload is built, no answer parsed, no histogram or
 * mover shares its event loop. If it measures what the standard generator measured at the same rate, the
 * generator was not what limited the figures.
 *
 * Arguments: <requests file> <url> <rate> <warm-up s> <connections>; the app key comes in
 * SWITCHYARD_LOADTEST_KEY (never on the command line, where `ps` shows it). Prints one JSON line.
 */

interface Planned {
  tenant: string
  apiRequest: string
  body: string
}

const [file, url, rateText, warmupText, connectionsText] = process.argv.slice(2)
const key = process.env.SWITCHYARD_LOADTEST_KEY ?? ''
const planned = readFileSync(file as string, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((line) => JSON.parse(line) as Planned)
const rate = Number(rateText)
const warmupMs = Number(warmupText) * 1000
// Idle sockets close before the router's 5 s keep-alive does (see src/loadtest/driver.ts).
const agent = new http.Agent({ keepAlive: true, maxSockets: Number(connectionsText), timeout: 4000 })
const endpoint = new URL('/v1/query', url)
const interval = 1000 / rate
const latencies: number[] = []
let errors = 0

function send(request: Planned, at: number, due: number): Promise<void> {
  return new Promise((resolve) => {
    // A response that fails after it began can report twice (its 'error' and the request's): count once.
    let counted = false
    const done = (ok: boolean) => {
      if (counted) return
      counted = true
      if (at >= warmupMs) {
        latencies.push(performance.now() - due)
        if (!ok) errors += 1
      }
      resolve()
    }
    const outgoing = http.request(
      endpoint,
      {
        method: 'POST',
        agent,
        headers: {
          authorization: `Bearer ${key}`,
          'x-tenant-id': request.tenant,
          'x-switchyard-request': request.apiRequest,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(request.body),
        },
      },
      (response) => {
        response.resume()
        response.on('end', () => done(response.statusCode === 200))
        response.on('error', () => done(false))
      },
    )
    outgoing.setTimeout(30_000, () => outgoing.destroy())
    outgoing.on('error', () => done(false))
    outgoing.end(request.body)
  })
}

const cpuBefore = process.cpuUsage()
const start = performance.now()
const inFlight: Promise<void>[] = []
for (let sent = 0; sent < planned.length; ) {
  const now = performance.now()
  for (; sent < planned.length && start + sent * interval <= now; sent++)
    inFlight.push(send(planned[sent] as Planned, sent * interval, start + sent * interval))
  if (sent < planned.length)
    await new Promise((resolve) =>
      setTimeout(resolve, Math.max(0, start + sent * interval - performance.now())),
    )
}
await Promise.all(inFlight)
agent.destroy()
const cpu = process.cpuUsage(cpuBefore)
latencies.sort((a, b) => a - b)
const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)] ?? 0
const round = (ms: number) => Math.round(ms * 100) / 100
process.stdout.write(
  `${JSON.stringify({
    requests: latencies.length,
    errors,
    p50: round(at(0.5)),
    p99: round(at(0.99)),
    max: round(latencies[latencies.length - 1] ?? 0),
    cpuMsPerRequest: Math.round(((cpu.user + cpu.system) / 1000 / planned.length) * 1000) / 1000,
  })}\n`,
)
