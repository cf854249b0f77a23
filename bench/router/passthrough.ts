/**
 * The baseline: the minimal HTTP server a team would write instead of the router. It takes /v1/query's
 * body and runs `sql.unsafe(sql, params)` on postgres.js pools (prepared statements), as the shard's
 * admin: a tenant context cannot be set by hand (the shard verifies that enter() made it), so the floor
 * skips RLS as it skips auth, policy, routing and the transaction. Reads go to the replica; statements
 * that WRITE matches go to the primary, as the router sends them.
 *
 * Measured, it runs as its own process (`startPassthroughProcess`: this file forked), so its CPU and
 * system calls are its process's, read from /proc as the router's are. The breakdown also starts one in
 * the bench process, with a variant route that needs an in-process router.
 */
import { type ChildProcess, fork } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { serve } from '@hono/node-server'
import { type Context, Hono } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import postgres from 'postgres'
import { z } from 'zod'
import { runTransaction } from '../../src/router/execute.ts'
import { toPgProxyResponse } from '../../src/router/protocols/pg-proxy.ts'
import type { RunningRouter } from '../../src/router/server.ts'
import type { WireConnection } from '../../src/shard/wire/connection.ts'
import type { WirePool } from '../../src/shard/wire/pool.ts'
import { treeUsage, type UsageProbe } from './proc.ts'

export interface PassthroughOptions {
  /** The admin's URLs of the primary (the mix's writes) and the replica (everything else). */
  urls: { primary: string; replica: string }
  /** postgres.js pool size per node: the router's poolSize. */
  poolSize: number
  /** For the breakdown's bodyLimit variant: the router's maxBodyBytes. */
  maxBodyBytes: number
}

/** Statements the passthrough sends to the primary: the seed mix's writes (`insert`, `update`, …). */
export const WRITE = /^\s*(insert|update|delete|merge|with)\b/i

export interface Passthrough {
  port: number
  app: Hono
  close(): Promise<void>
}

const bodySchema = z.object({
  sql: z.string(),
  params: z.array(z.union([z.string(), z.null()])).default([]),
})

/**
 * The passthrough in this process. Breakdown variants, each one router ingredient added to the same
 * minimal server: `/v1/tx` (given an in-process router) runs the router's own transaction
 * (`runTransaction` on the router's replica pool: enter() and the statement as one pipeline with one
 * Sync); `/body-limit/…` and `/late-header/…` add two Hono patterns the router's HTTP layer once used.
 */
export async function startPassthrough(
  options: PassthroughOptions,
  transaction?: { router: RunningRouter; tenant: string; replica: string },
): Promise<Passthrough> {
  const open = (url: string) =>
    postgres(url, {
      max: options.poolSize,
      prepare: true,
      onnotice: () => {},
      connection: { search_path: 'public' },
    })
  const replica = open(options.urls.replica)
  const primary = open(options.urls.primary)

  const app = new Hono()
  const query = async (c: Context) => {
    const body = bodySchema.parse(await c.req.json())
    const node = WRITE.test(body.sql) ? primary : replica
    return c.json({ rows: await node.unsafe(body.sql, body.params) })
  }
  app.post('/v1/query', query)
  // hono/body-limit, and a header set after `await next()` (Hono then rebuilds the finished Response).
  app.use('/body-limit/*', bodyLimit({ maxSize: options.maxBodyBytes }))
  app.post('/body-limit/v1/query', query)
  app.use('/late-header/*', async (c, next) => {
    await next()
    c.header('x-request-id', 'bench')
  })
  app.post('/late-header/v1/query', query)
  if (transaction) await mountTransaction(app, transaction)
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' })
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  return {
    port: (server.address() as AddressInfo).port,
    app,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        ;(server as { closeIdleConnections?: () => void }).closeIdleConnections?.()
      })
      await replica.end({ timeout: 5 })
      await primary.end({ timeout: 5 })
    },
  }
}

/** The breakdown's `/v1/tx`: the router's own transaction (runTransaction on its replica pool) behind the passthrough's HTTP. */
async function mountTransaction(
  app: Hono,
  { router, tenant, replica }: { router: RunningRouter; tenant: string; replica: string },
) {
  const { epoch } = await router.app.routes.resolve(tenant)
  const pool = router.app.pools.pool(router.app.pools.node(replica).name)
  app.post('/v1/tx', async (c) => {
    const body = bodySchema.parse(await c.req.json())
    const outcome = await onReserved(pool, (connection) =>
      runTransaction(connection, {
        tenant,
        epoch,
        write: false,
        capability: router.app.capability,
        statements: [{ sql: body.sql, params: body.params }],
        params: [body.params],
      }),
    )
    return c.json(toPgProxyResponse(outcome.results[0] as NonNullable<(typeof outcome.results)[0]>, 'all'))
  })
}

/** As the router does it: one reserved connection of the pool for the call. */
export async function onReserved<T>(
  pool: WirePool,
  use: (connection: WireConnection) => Promise<T>,
): Promise<T> {
  const connection = await pool.reserve()
  try {
    return await use(connection)
  } finally {
    pool.release(connection)
  }
}

// ---------------------------------------------------------------------------------------------------
// The passthrough as its own process
// ---------------------------------------------------------------------------------------------------

type ToChild = { type: 'start'; options: PassthroughOptions }
type FromChild = { type: 'listening'; port: number }

export interface PassthroughProcess {
  port: number
  /** Its process's CPU and system calls (/proc). */
  usage: UsageProbe
  close(): Promise<void>
}

/** This file forked (with the bench's `--import tsx`), serving until it is told to stop. */
export async function startPassthroughProcess(options: PassthroughOptions): Promise<PassthroughProcess> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--passthrough'], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', (message: FromChild) => resolve(message.port))
    child.once('exit', (code, signal) =>
      reject(new Error(`the passthrough exited at start (${signal ?? code})`)),
    )
    child.send({ type: 'start', options } satisfies ToChild)
  })
  return {
    port,
    usage: treeUsage(child.pid as number),
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }
}

function passthroughChild() {
  let running: Passthrough | undefined
  const stop = () => {
    void (running?.close() ?? Promise.resolve()).finally(() => process.exit(0))
  }
  process.once('SIGTERM', stop)
  process.once('disconnect', stop)
  process.once('message', (message: ToChild) => {
    startPassthrough(message.options).then(
      (passthrough) => {
        running = passthrough
        process.send?.({ type: 'listening', port: passthrough.port } satisfies FromChild)
      },
      (error: unknown) => {
        console.error(error)
        process.exit(1)
      },
    )
  })
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) passthroughChild()
