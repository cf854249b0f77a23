import { type ChildProcess, spawn } from 'node:child_process'
import http from 'node:http'
import { createServer } from 'node:net'
import path from 'node:path'
import { createInterface } from 'node:readline'
import postgres from 'postgres'
import { describe, expect, inject } from 'vitest'
import { it, type TestTenant, tenantWithKey } from './fixtures.ts'
import { freePorts } from './setup/topology.ts'
import { cli, eventually } from './support.ts'

// `switchyard router --workers N` as an operator runs it: the real CLI in a child process, its pino
// lines read from its stdout. The arithmetic of the pool division is test/unit/pool-division.test.ts.

/** One line the router process logged (pino JSON). */
interface LogLine {
  msg?: string
  worker?: number
  pid?: number
  pids?: number[]
  [key: string]: unknown
}

interface RouterProcess {
  child: ChildProcess
  port: number
  pgPort: number
  logs: LogLine[]
  stderr: () => string
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const WORKERS = 2
const BOOT_MS = 120_000

function startRouterProcess(port: number, pgPort: number): RouterProcess {
  const child = spawn(
    process.execPath,
    [
      path.resolve('bin/switchyard.js'),
      'router',
      '--workers',
      String(WORKERS),
      '--port',
      String(port),
      '--pg-port',
      String(pgPort),
    ],
    {
      env: {
        ...process.env,
        SWITCHYARD_CONFIG: inject('configFile'),
        LOG_LEVEL: 'info',
        // The restart test sends requests as fast as it can: no tenant limit may refuse one.
        SWITCHYARD_RATE_LIMIT: '100000000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  const logs: LogLine[] = []
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    try {
      logs.push(JSON.parse(line) as LogLine)
    } catch {}
  })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  )
  return { child, port, pgPort, logs, stderr: () => stderr, exited }
}

/** The first line logged with `msg` (after the first `from` lines), once there is one. */
const logged = (router: RouterProcess, msg: string, from = 0) =>
  eventually(async () => router.logs.slice(from).find((line) => line.msg === msg), BOOT_MS)

interface Answer {
  status: number
  body: string
}

/**
 * One request on a connection of its own (`agent: false`): the primary hands each new connection to the
 * next worker, so consecutive requests reach every worker.
 */
function request(
  router: RouterProcess,
  method: 'GET' | 'POST',
  urlPath: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const outgoing = http.request(
      { host: '127.0.0.1', port: router.port, path: urlPath, method, agent: false, headers },
      (response) => {
        let text = ''
        response.setEncoding('utf8')
        response.on('data', (chunk: string) => {
          text += chunk
        })
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }))
        response.on('error', reject)
      },
    )
    outgoing.on('error', reject)
    outgoing.end(body)
  })
}

const query = (router: RouterProcess, tenant: TestTenant, sql: string) => {
  const body = JSON.stringify({ sql, params: [], method: 'execute' })
  return request(
    router,
    'POST',
    '/v1/query',
    {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      authorization: `Bearer ${tenant.key}`,
      'x-tenant-id': tenant.id,
    },
    body,
  )
}

/** The sum of every sample of `name` in /metrics text, whatever its labels. */
function total(metrics: string, name: string): number {
  return metrics
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0)
}

/** The pid of each worker slot's latest worker, as the primary logged them. */
function currentPids(router: RouterProcess): number[] {
  const latest = new Map<number, number>()
  for (const line of router.logs)
    if (line.msg === 'worker ready' && line.worker !== undefined && line.pid !== undefined)
      latest.set(line.worker, line.pid)
  return [...latest.values()]
}

/** The pids of the workers that logged a request, among `lines`. */
const servingPids = (lines: LogLine[]) =>
  new Set(lines.filter((line) => line.msg === 'request').map((line) => line.pid))

describe('switchyard router --workers', () => {
  it('refuses a number of workers that is not a whole number from 1 to 64, with invalid_input', async () => {
    for (const workers of ['0', 'abc', '65', '1.5']) {
      const result = await cli(['router', '--workers', workers])
      expect(result.code, workers).toBe(1)
      expect(result.stderr).toBe(
        `error [invalid_input]: --workers: "${workers}" is not a whole number from 1 to 64\n`,
      )
    }
  })

  it('exits 1 with the error of a worker that cannot start, once the others are stopped', async () => {
    const [port] = await freePorts(1)
    const taken = createServer()
    await new Promise<void>((resolve) => taken.listen(port, '127.0.0.1', resolve))
    try {
      const result = await cli(['router', '--workers', String(WORKERS), '--port', String(port)])
      expect(result.code).toBe(1)
      // Reported once, by the primary: the cluster's bind of the shared port failed.
      expect(result.stderr).toBe(`error [internal]: Error: bind EADDRINUSE 127.0.0.1:${port}\n`)
    } finally {
      await new Promise((resolve) => taken.close(resolve))
    }
  })

  let router: RouterProcess
  let tenant: TestTenant
  let firstPids: number[]

  it.beforeAll(async () => {
    tenant = await tenantWithKey('shard-1')
    const [port, pgPort] = await freePorts(2)
    router = startRouterProcess(port as number, pgPort as number)
    const ready = await Promise.race([
      logged(router, 'router workers ready'),
      router.exited.then(({ code }) => {
        throw new Error(`the router exited (${code}) before it was ready: ${router.stderr()}`)
      }),
    ])
    firstPids = ready.pids ?? []
  })

  it.afterAll(async () => {
    // A test that failed may leave it running: the workers exit with their primary.
    if (router.child.exitCode === null && router.child.signalCode === null) {
      router.child.kill('SIGKILL')
      await router.exited
    }
  })

  it('serves from every worker, each with its part of the pools, and /metrics adds all of them up', async () => {
    expect(firstPids).toHaveLength(WORKERS)
    expect(new Set(firstPids).size).toBe(WORKERS)
    const starting = router.logs.find((line) => line.msg === 'router workers starting')
    // The test topology keeps the default poolSize of 20: 10 connections per node for each worker.
    expect(starting?.shares).toEqual([
      { poolSize: 10, tenantConnections: 2 },
      { poolSize: 10, tenantConnections: 2 },
    ])

    const sent = 20
    for (let i = 0; i < sent; i++) {
      const answer = await query(router, tenant, 'select 1 as one')
      expect(answer.status, answer.body).toBe(200)
      expect(JSON.parse(answer.body)).toEqual({ rows: [{ one: 1 }] })
    }
    const requests = await eventually(async () => {
      const lines = router.logs.filter((line) => line.msg === 'request')
      return lines.length === sent ? lines : undefined
    })
    expect(servingPids(requests)).toEqual(new Set(firstPids))

    // Any worker asked (each scrape is a new connection: the next worker) answers the sum over both.
    for (let i = 0; i < 2 * WORKERS; i++) {
      const metrics = await request(router, 'GET', '/metrics')
      expect(metrics.status).toBe(200)
      expect(total(metrics.body, 'switchyard_request_duration_seconds_count')).toBe(sent)
      // Process metrics stay per worker: one series each.
      for (let worker = 0; worker < WORKERS; worker++)
        expect(metrics.body).toContain(
          `switchyard_process_process_cpu_user_seconds_total{worker="${worker}"}`,
        )
    }
  })

  it("a PostgreSQL client's CancelRequest reaches its query whichever worker the cancel's connection lands on", async () => {
    // Each connection goes to the next worker: four sessions and their four cancels land on both.
    const sessions = Array.from({ length: 4 }, () =>
      postgres({
        host: '127.0.0.1',
        port: router.pgPort,
        username: tenant.id,
        password: tenant.key,
        database: 'switchyard',
        max: 1,
        onnotice: () => {},
      }),
    )
    try {
      const outcomes = await Promise.all(
        sessions.map(async (sql) => {
          await sql`select 1`
          const sleeping = sql`select pg_sleep(20)`
          // Once the query is on its way; a cancel before it runs would cancel nothing.
          setTimeout(() => sleeping.cancel(), 500)
          return sleeping.then(
            () => 'completed',
            (error: { code?: string }) => error.code,
          )
        }),
      )
      expect(outcomes).toEqual(['57014', '57014', '57014', '57014'])
    } finally {
      await Promise.all(sessions.map((sql) => sql.end({ timeout: 1 })))
    }
  })

  it('SIGHUP replaces the workers one at a time while a client keeps sending: no request fails', async () => {
    const failures: string[] = []
    let answered = 0
    let sending = true
    const client = async () => {
      while (sending) {
        try {
          const answer = await query(router, tenant, 'select 1 as one')
          if (answer.status === 200) answered += 1
          else failures.push(`${answer.status} ${answer.body}`)
        } catch (error) {
          failures.push(String(error))
        }
      }
    }
    const clients = Array.from({ length: 4 }, client)
    try {
      await eventually(async () => (answered >= 20 ? true : undefined))
      const logsBefore = router.logs.length
      const answeredBefore = answered
      router.child.kill('SIGHUP')
      const done = await logged(router, 'rolling restart done', logsBefore)
      // The restart happened under load: requests were answered while it ran.
      expect(answered).toBeGreaterThan(answeredBefore)
      const answeredAtDone = answered
      await eventually(async () => (answered >= answeredAtDone + 20 ? true : undefined))

      const newPids = done.pids ?? []
      expect(newPids).toHaveLength(WORKERS)
      expect(new Set(newPids).size).toBe(WORKERS)
      for (const pid of newPids) expect(firstPids).not.toContain(pid)
      const replaced = router.logs.slice(logsBefore).filter((line) => line.msg === 'worker replaced')
      expect(replaced.map((line) => line.worker)).toEqual([0, 1])
      // The old workers closed gracefully (startRouter's close), one after the other.
      const stopped = router.logs.slice(logsBefore).filter((line) => line.msg === 'router stopped')
      expect(new Set(stopped.map((line) => line.pid))).toEqual(new Set(firstPids))
    } finally {
      sending = false
      await Promise.all(clients)
    }
    expect(failures).toEqual([])
    const metrics = await request(router, 'GET', '/metrics')
    expect(metrics.status).toBe(200)
    for (let worker = 0; worker < WORKERS; worker++)
      expect(metrics.body).toContain(`switchyard_process_process_cpu_user_seconds_total{worker="${worker}"}`)
  })

  it('a worker that dies is forked again, and requests are served throughout', async () => {
    const [victim, survivor] = currentPids(router)
    const logsBefore = router.logs.length
    process.kill(victim as number, 'SIGKILL')
    const died = await logged(router, 'worker died', logsBefore)
    expect(died).toMatchObject({ pid: victim, signal: 'SIGKILL' })
    expect((await query(router, tenant, 'select 1 as one')).status).toBe(200)
    const reforked = await logged(router, 'worker re-forked', logsBefore)
    expect(reforked.worker).toBe(died.worker)
    expect(currentPids(router)).toEqual(expect.arrayContaining([survivor, reforked.pid]))
    const logsAfter = router.logs.length
    for (let i = 0; i < 2 * WORKERS; i++)
      expect((await query(router, tenant, 'select 1 as one')).status).toBe(200)
    const requests = await eventually(async () => {
      const lines = router.logs.slice(logsAfter).filter((line) => line.msg === 'request')
      return lines.length === 2 * WORKERS ? lines : undefined
    })
    expect(servingPids(requests)).toEqual(new Set([survivor, reforked.pid]))
  })

  it('SIGTERM closes every worker gracefully, then the primary exits 0', async () => {
    const serving = currentPids(router)
    const logsBefore = router.logs.length
    router.child.kill('SIGTERM')
    expect(await router.exited).toEqual({ code: 0, signal: null })
    const after = router.logs.slice(logsBefore)
    const stopped = after.filter((line) => line.msg === 'router stopped').map((line) => line.pid)
    expect(new Set(stopped)).toEqual(new Set(serving))
    expect(after.some((line) => line.msg === 'router workers stopped')).toBe(true)
    expect(router.stderr()).toBe('')
  })
})
