import { randomInt, timingSafeEqual } from 'node:crypto'
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net'
import type { Directory } from '../../directory/connection.ts'
import { SwitchyardError } from '../../errors.ts'
import type { CancelSignal } from '../../shard/wire/cancel.ts'
import type { StatementDescription } from '../../shard/wire/connection.ts'
import type { UnreadAnswers } from '../answers.ts'
import type { RouterApp } from '../app.ts'
import type { CancelRelay } from '../cluster-cancel.ts'
import { statementFailure, waitError } from '../pinned.ts'
import type { TenantRequestDeps } from '../tenant-request.ts'
import { createLoginCandidates, type LoginCandidates } from './candidates.ts'
import { toErrorFields } from './errors.ts'
import { errorResponse, MessageWriter } from './protocol.ts'
import { type ClientStream, type SessionRegistry, serveSession } from './session.ts'
import { loadFrontTls, negotiateTls } from './tls.ts'

/** What a PostgreSQL session needs of the router, besides what every tenant request does. */
export interface WireDeps extends TenantRequestDeps {
  directory: Directory
  /** Answers built and not yet read, with HTTP's (invariant 8). */
  answers: UnreadAnswers
  /** Parse and Describe on a node of the shard (nothing runs): a client's Describe before it binds. */
  describe(
    tenant: string,
    shard: string,
    statements: { sql: string; paramTypes: number[] }[],
    signal: CancelSignal,
  ): Promise<StatementDescription[]>
  /** A request's outcome, for the router's metrics and log. */
  observe(tenant: string, outcome: string, ms: number): void
  /** The keys a login is checked against (candidates.ts). */
  loginCandidates: LoginCandidates
  /** What the shards say of themselves, told to clients at startup. */
  shardSettings: { serverVersion: string; timeZone: string }
}

export interface WireServer {
  port: number
  /** Serves a client that came another way (a WebSocket: websocket.ts), within the same bounds. */
  accept(stream: ClientStream): void
  /** Stops accepting and ends every session (each gets 57P01, as at a server shutdown). */
  close(): Promise<void>
}

/**
 * The router's PostgreSQL front end (issue 15): a TCP listener beside the HTTP one, in the same process,
 * one session per client connection (session.ts). At most `router.wireMaxClients` sessions at once: past
 * it a client is told 53300 and closed before it can hold anything.
 */
export async function startWireServer(
  app: RouterApp,
  options: { port: number; host: string; cancels?: CancelRelay | undefined },
): Promise<WireServer> {
  const config = app.topology.router
  const frontTls = await loadFrontTls(config)
  const shardSettings = await readShardSettings(app)
  const deps: WireDeps = {
    ...app,
    shardSettings,
    loginCandidates: createLoginCandidates(app.directory, app.logger),
    describe: (tenant, shard, statements, signal) => describeOn(app, tenant, shard, statements, signal),
    observe(_tenant, outcome, ms) {
      app.metrics.requestDuration.observe(
        { protocol: 'postgres', shard: 'any', role: 'any', outcome },
        ms / 1000,
      )
    },
  }
  const registry = createRegistry(options.cancels, config.wireMaxClientsPerTenant)
  const sockets = new Set<ClientStream>()
  /** TCP clients still negotiating TLS: they count against wireMaxClients too. */
  const negotiating = new Set<Socket>()
  const refuse = (socket: ClientStream, error: SwitchyardError) => {
    const writer = new MessageWriter()
    errorResponse(writer, toErrorFields(error, 'FATAL'))
    socket.end(writer.take())
    setTimeout(() => socket.destroy(), 1000).unref()
  }
  // Clients not logged in yet have proven nothing: they get a share of the slots of their own.
  const full = () =>
    sockets.size + negotiating.size >= config.wireMaxClients ||
    sockets.size - registry.size() + negotiating.size >= config.wireMaxLogins
  const busy = () =>
    new SwitchyardError(
      'tenant_busy',
      `the router already serves ${config.wireMaxClients} PostgreSQL clients, or ${config.wireMaxLogins} are logging in; retry shortly`,
    )
  const serve = (socket: ClientStream) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
    serveSession(socket, deps, registry)
    socket.resume()
  }
  const accept = (socket: ClientStream) => {
    socket.on('error', () => {})
    if (full()) return refuse(socket, busy())
    serve(socket)
  }
  const acceptTcp = (socket: Socket) => {
    if (!frontTls) return accept(socket)
    socket.on('error', () => {})
    if (full()) return refuse(socket, busy())
    negotiating.add(socket)
    // The login timeout covers the handshake too: a client that never finishes it is closed.
    const timer = setTimeout(() => socket.destroy(), config.wireLoginTimeoutMs)
    void negotiateTls(socket, frontTls).then((stream) => {
      negotiating.delete(socket)
      clearTimeout(timer)
      if (!stream || stream.destroyed) return
      if (frontTls.required && stream === socket)
        return refuse(
          socket,
          new SwitchyardError(
            'tls_required',
            'this router accepts PostgreSQL clients over TLS only (sslmode=require)',
          ),
        )
      serve(stream)
    })
  }
  const server: Server = createServer(acceptTcp)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return {
    port: (server.address() as AddressInfo).port,
    accept,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const socket of negotiating) socket.destroy()
      for (const socket of sockets) {
        // A session that already ended (Terminate, a FATAL) is only waiting for its stream to close.
        if (socket.writableEnded || socket.destroyed) continue
        const writer = new MessageWriter()
        errorResponse(writer, {
          severity: 'FATAL',
          code: '57P01',
          message: 'terminating connection: the router is shutting down',
        })
        socket.end(writer.take())
        setTimeout(() => socket.destroy(), 1000).unref()
      }
      await closed
    },
  }
}

/**
 * A Describe on the tenant's primary, within the tenant's fair share of its pool like any request, and
 * within its deadline and cancel (`signal`) from the wait for a share on.
 */
async function describeOn(
  app: RouterApp,
  tenant: string,
  shard: string,
  statements: { sql: string; paramTypes: number[] }[],
  signal: CancelSignal,
): Promise<StatementDescription[]> {
  const node = app.routing.primary(shard).name
  const pool = app.pools.pool(node)
  const done = await app.shares.acquire(tenant, node, signal).catch((error: unknown) => {
    throw waitError(error, node)
  })
  try {
    const connection = await pool
      .reserve({ signal, timeoutMs: app.limits.poolWaitMs })
      .catch((error: unknown) => {
        throw waitError(error, node)
      })
    try {
      return await connection.describe(statements, {
        signal,
        timeoutMs: app.topology.router.requestTimeoutMs,
      })
    } catch (error) {
      throw (
        statementFailure(error) ??
        new SwitchyardError('shard_unavailable', `the primary of ${shard} did not answer; retry shortly`, {
          retryAfterSeconds: 1,
          shard,
        })
      )
    } finally {
      pool.release(connection)
    }
  } finally {
    done()
  }
}

/** server_version and TimeZone of the first shard's primary: every shard runs the same schema and settings. */
async function readShardSettings(app: RouterApp): Promise<WireDeps['shardSettings']> {
  const fallback = { serverVersion: '15.0', timeZone: 'UTC' }
  const first = app.topology.shards[0]
  if (!first) return fallback
  const pool = app.pools.pool(app.routing.primary(first.id).name)
  try {
    const connection = await pool.reserve({ timeoutMs: app.limits.poolWaitMs })
    try {
      const [version, zone] = await connection.run([
        { sql: 'show server_version', params: [] },
        { sql: 'show timezone', params: [] },
      ])
      return {
        serverVersion: version?.rows[0]?.[0] ?? fallback.serverVersion,
        timeZone: zone?.rows[0]?.[0] ?? fallback.timeZone,
      }
    } finally {
      pool.release(connection)
    }
  } catch {
    return fallback
  }
}

/** Sessions by pid; a cancel for a pid this process does not serve goes to the other workers (`relay`). */
function createRegistry(relay: CancelRelay | undefined, perTenant: number): SessionRegistry {
  const sessions = new Map<number, { secret: Buffer; cancel(): void }>()
  const tenants = new Map<string, number>()
  const cancelHere = (pid: number, secret: Buffer) => {
    const session = sessions.get(pid)
    // The key is compared in constant time: a guess learns nothing from how long the refusal took.
    if (!session || session.secret.length !== secret.length) return
    if (timingSafeEqual(session.secret, secret)) session.cancel()
  }
  relay?.onForwarded(cancelHere)
  return {
    add(tenant, secret, cancel) {
      const count = tenants.get(tenant) ?? 0
      if (count >= perTenant)
        throw new SwitchyardError(
          'tenant_busy',
          `tenant ${tenant} already has ${perTenant} PostgreSQL sessions on this router (wireMaxClientsPerTenant)`,
        )
      // A pid no other session here has: a cancel must name one session only.
      let pid = randomInt(1, 2 ** 31 - 1)
      while (sessions.has(pid)) pid = randomInt(1, 2 ** 31 - 1)
      sessions.set(pid, { secret, cancel })
      tenants.set(tenant, count + 1)
      let removed = false
      const remove = () => {
        if (removed) return
        removed = true
        sessions.delete(pid)
        const left = (tenants.get(tenant) ?? 1) - 1
        if (left > 0) tenants.set(tenant, left)
        else tenants.delete(tenant)
      }
      return { pid, remove }
    },
    size: () => sessions.size,
    cancel(pid, secret) {
      if (sessions.has(pid)) cancelHere(pid, secret)
      else relay?.forward(pid, secret)
    },
  }
}
