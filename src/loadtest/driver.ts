import http from 'node:http'
import type { ProxyQuery } from './workload.ts'

/**
 * How long a kept-alive socket may stay idle in the generator's pool: under the router's keep-alive
 * timeout (Node's 5 s), so the router never closes a socket the generator is about to reuse. Without it
 * Node's agent keeps idle sockets for good, ignores the server's `Keep-Alive: timeout=5` hint, and
 * a burst after a lull (a move's cutover) reused sockets the router had just closed: `network` errors
 * (ECONNRESET) at 150 req/s in a capacity search.
 */
const IDLE_SOCKET_MS = 4000

/** One request's outcome, timed from when it was SCHEDULED, not from when it was sent. */
export interface Answer {
  /** Scheduled time, ms since the drive started. */
  at: number
  /** Scheduled time to answer (or failure), ms. */
  ms: number
  /** null when the router answered 200; otherwise its error code, `http_<status>`, `timeout` or `network`. */
  code: string | null
  shard: string | null
  node: string | null
  /** The rows of a 200 answer (the booking's new id is in them). */
  rows: unknown[] | null
}

export interface Drive {
  url: string
  key: string
  /** Requests per second, sent at fixed intervals whatever the answers do. */
  rate: number
  seconds: number
  connections: number
  timeoutMs: number
  /**
   * The next request: called once per scheduled slot. `apiRequest`: the application's API request the
   * statement serves, sent as `x-switchyard-request` (the tenant's rate limit counts those).
   */
  next(): { tenant: string; apiRequest: string; query: ProxyQuery; done(answer: Answer): void }
}

/**
 * Drives the router open loop: request i is due at start + i/rate and is sent then (or as soon as the
 * event loop gets to it), whether or not earlier requests were answered. Requests beyond `connections`
 * wait for a socket in the HTTP agent, and that wait counts in their latency, which is measured from
 * the scheduled time: a stalled router shows up as latency, not as requests never sent (no coordinated
 * omission). Resolves when every scheduled request has been answered or has failed.
 */
export async function driveOpenLoop(
  drive: Drive,
): Promise<{ sent: number; seconds: number; sendLag: { p99: number; max: number } }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: drive.connections, timeout: IDLE_SOCKET_MS })
  const endpoint = new URL('/v1/query', drive.url)
  const interval = 1000 / drive.rate
  const total = Math.round(drive.rate * drive.seconds)
  const start = performance.now()
  const inFlight = new Set<Promise<void>>()
  // How late each request left after its scheduled time: the generator's own stalls, which open-loop
  // latency would otherwise lay at the router's door.
  const lags = new Float64Array(total)
  let sent = 0
  try {
    while (sent < total) {
      const now = performance.now()
      for (; sent < total && start + sent * interval <= now; sent++) {
        // `at` from the index, not `due - start`: (start + 2000) - start can come out as 1999.9999…, and
        // the first measured request would be counted as warm-up.
        const at = sent * interval
        const due = start + at
        lags[sent] = performance.now() - due
        const request = drive.next()
        const flight = send(agent, endpoint, drive, request).then((answer) =>
          request.done({ ...answer, at, ms: performance.now() - due }),
        )
        inFlight.add(flight)
        void flight.finally(() => inFlight.delete(flight))
      }
      if (sent < total) await sleep(start + sent * interval - performance.now())
    }
    await Promise.all(inFlight)
  } finally {
    agent.destroy()
  }
  lags.sort()
  const p99 = lags[Math.max(0, Math.ceil(0.99 * total) - 1)] ?? 0
  return { sent, seconds: (performance.now() - start) / 1000, sendLag: { p99, max: lags[total - 1] ?? 0 } }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))

type Sent = Omit<Answer, 'at' | 'ms'>

/** One POST /v1/query; never rejects: failures are answers with a code. */
function send(
  agent: http.Agent,
  endpoint: URL,
  drive: Drive,
  { tenant, apiRequest, query }: { tenant: string; apiRequest: string; query: ProxyQuery },
): Promise<Sent> {
  const body = JSON.stringify(query)
  return new Promise((resolve) => {
    const failed = (code: string) => resolve({ code, shard: null, node: null, rows: null })
    const request = http.request(
      endpoint,
      {
        method: 'POST',
        agent,
        headers: {
          authorization: `Bearer ${drive.key}`,
          'x-tenant-id': tenant,
          'x-switchyard-request': apiRequest,
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
        },
      },
      (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.on('error', () => failed('network'))
        response.on('end', () => {
          const parsed = parseBody(Buffer.concat(chunks).toString('utf8'))
          const ok = response.statusCode === 200
          resolve({
            code: ok ? null : (parsed?.error?.code ?? `http_${response.statusCode}`),
            shard: header(response, 'x-switchyard-shard'),
            node: header(response, 'x-switchyard-node'),
            rows: ok ? (parsed?.rows ?? []) : null,
          })
        })
      },
    )
    request.setTimeout(drive.timeoutMs, () => {
      request.destroy()
      failed('timeout')
    })
    request.on('error', () => failed('network'))
    request.end(body)
  })
}

function header(response: http.IncomingMessage, name: string): string | null {
  const value = response.headers[name]
  return typeof value === 'string' ? value : null
}

function parseBody(text: string): { rows?: unknown[]; error?: { code?: string } } | undefined {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}
