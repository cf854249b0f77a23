import type { Server } from 'node:http'
import { type AddressInfo, Server as NetServer, type Socket } from 'node:net'
import { serve } from '@hono/node-server'
import type { Topology } from '../config/topology.ts'
import { readRouterCapability } from '../directory/capability.ts'
import { openDirectory } from '../directory/connection.ts'
import { forgetCachedReads } from '../directory/migrate.ts'
import { openRedis } from '../directory/redis.ts'
import { createRouteCache } from '../directory/routes.ts'
import { SwitchyardError } from '../errors.ts'
import { type Logger, logger as rootLogger } from '../log.ts'
import { createMoverMetrics } from '../migrate-tenant/metrics.ts'
import { startMoveRescue } from '../placement/rescue.ts'
import { withAdmin } from '../shard/connection.ts'
import { startMonitor } from '../shard/monitor.ts'
import { routerNodes } from '../shard/nodes.ts'
import { startPartitionKeeper } from '../shard/partition-keeper.ts'
import { createPools } from '../shard/pools.ts'
import { createAdmission } from './admission.ts'
import { createUnreadAnswers } from './answers.ts'
import { createApp, type RouterApp } from './app.ts'
import { createKeyCheck } from './auth.ts'
import { readRelations } from './cache/relations.ts'
import { cacheCounters, createAnswerCache } from './cache/store.ts'
import type { CancelRelay } from './cluster-cancel.ts'
import { createTenantShares } from './fairness.ts'
import { createMetrics, type MetricsOptions } from './metrics.ts'
import { loadPolicy, setTenantSchemas } from './policy.ts'
import { type PoolShare, poolShare } from './pool-division.ts'
import { createRouting } from './routing.ts'
import { createStatementStats } from './stats/recorder.ts'
import { startWireServer } from './wire/server.ts'
import { attachWebSockets } from './wire/websocket.ts'

export interface RunningRouter {
  url: string
  port: number
  /** The PostgreSQL front end's port; null when it is off. */
  pgPort: number | null
  app: RouterApp
  /** Graceful: stop accepting, let in-flight requests finish, then close pools and clients. */
  close(): Promise<void>
}

export interface RouterOptions {
  port?: number
  logger?: Logger
  /** Leave Redis out even if the topology names it (a router cut off from Redis). */
  withoutRedis?: boolean
  /**
   * This process's part of each node's pool, when it is one of several workers (src/router/workers.ts);
   * by default the whole `router.poolSize` and its fair share.
   */
  pools?: PoolShare
  /** How a worker labels its process metrics and answers GET /metrics (src/router/cluster-metrics.ts). */
  metrics?: MetricsOptions
  /** The PostgreSQL front end's port (0: any free one), null: off; by default `router.pgPort`. */
  pgPort?: number | null
  /** Where CancelRequests for sessions of other workers go (src/router/cluster-cancel.ts). */
  cancels?: CancelRelay
}

/** How long past its deadline a request's connection may sit without any traffic. */
const UNREAD_GRACE_MS = 15_000

/** How long a connection accepted just before the router stopped accepting has to send its request. */
const ACCEPTED_GRACE_MS = 1_000

/** Starts one stateless router process: run as many as you like against the same topology. */
export async function startRouter(topology: Topology, options: RouterOptions = {}): Promise<RunningRouter> {
  const config = topology.router
  const logger = options.logger ?? rootLogger
  const metrics = createMetrics(options.metrics)
  const share = options.pools ?? poolShare(config, 1, 0)
  const nodes = routerNodes(topology)
  const directory = openDirectory(topology.directory, 8)
  // Without it no shard lets this router enter a tenant: fail at start, not on every request.
  const capability = await readRouterCapability(directory).catch(async (error: unknown) => {
    await directory.close()
    throw error
  })
  const pools = createPools(nodes, {
    size: share.poolSize,
    statementTimeoutMs: config.statementTimeoutMs,
    tls: config.tls,
    searchPath: topology.tenantSchema.schemas,
  })
  const monitor = startMonitor(nodes, config.healthIntervalMs)
  metrics.readNodesFrom(pools, monitor, share.poolSize)
  const redis = topology.redis && !options.withoutRedis ? openRedis(topology.redis) : undefined
  redis?.on('error', () => {})
  // Admission sends one command per request: auto-pipelining would wrap each in its own ioredis
  // Pipeline (measured: a visible share of the router's CPU per request at low concurrency).
  const admissionRedis = redis?.duplicate({ enableAutoPipelining: false })
  admissionRedis?.on('error', () => {})
  const routes = createRouteCache(
    {
      directory: directory.sql,
      redis,
      ttlMs: config.routeCacheTtlMs,
      negativeTtlMs: config.negativeCacheTtlMs,
    },
    { hit: (layer) => metrics.routeLookups.inc({ layer }) },
  )
  // Every tenant request, by any protocol, is admitted once (its rate-limit point), refused or not: the
  // count behind switchyard_top_tenant_requests.
  const admission = createAdmission(admissionRedis, {
    onAdmit: (tenant) => metrics.countTenantRequest(tenant),
  })
  let ready = false
  const app: RouterApp = {
    topology,
    capability,
    keys: createKeyCheck(directory),
    directory,
    redis,
    routes,
    routing: createRouting(nodes, monitor, config.maxReplicaLagBytes),
    pools,
    monitor,
    admission,
    metrics,
    logger,
    bufferWindowMs: config.bufferWindowMs,
    slowStatementMs: config.slowStatementMs,
    shares: createTenantShares(share.tenantConnections, config.tenantQueue),
    limits: {
      poolWaitMs: config.poolWaitMs,
      maxResultRows: config.maxResultRows,
      maxResultBytes: config.maxResultBytes,
    },
    answers: createUnreadAnswers(config.maxUnreadBytes),
    readCache:
      redis && config.cache.enabled
        ? createAnswerCache(
            redis,
            config.cache,
            cacheCounters(metrics, config.cache.tables),
            (shard) => readShardRelations(topology, shard),
            {
              shards: topology.shards.map((shard) => shard.id),
              warn: (message) => logger.warn(message),
            },
          )
        : undefined,
    statementStats:
      redis && config.statementStats.enabled
        ? createStatementStats(redis, config.statementStats, config.slowStatementMs, logger)
        : undefined,
    ready: () => ready,
  }
  await loadPolicy()
  setTenantSchemas(topology.tenantSchema.schemas)
  const pgPort = options.pgPort === undefined ? config.pgPort : options.pgPort
  // Before the HTTP port: a PostgreSQL port already taken fails the start with nothing left listening.
  const wire =
    pgPort === null
      ? undefined
      : await startWireServer(app, { port: pgPort, host: config.host, cancels: options.cancels }).catch(
          async (error: unknown) => {
            await Promise.all([monitor.stop(), pools.close(), routes.close(), directory.close()])
            await app.statementStats?.close()
            redis?.disconnect()
            admissionRedis?.disconnect()
            // pgTls's files: its own error; anything else is the port.
            if (error instanceof SwitchyardError) throw error
            throw new SwitchyardError(
              'invalid_input',
              `cannot listen for PostgreSQL clients on ${config.host}:${pgPort}: ${(error as Error).message} (router.pgPort, --pg-port N|off)`,
            )
          },
        )
  const hono = createApp(app)
  // Without a createServer option, serve() makes an http.Server.
  const server = serve({
    fetch: hono.fetch,
    port: options.port ?? config.port,
    hostname: config.host,
  }) as Server
  const connections = trackConnections(server)
  // Neon's serverless driver speaks the PostgreSQL protocol over a WebSocket on the HTTP port.
  const webSockets = wire ? attachWebSockets(server, wire, config.maxBodyBytes) : undefined
  // A client that takes nothing from its socket (sends nothing, reads nothing) this long past the
  // request deadline is dropped: the answers it left unread are freed.
  server.setTimeout(config.requestTimeoutMs + UNREAD_GRACE_MS)
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  const port = (server.address() as AddressInfo).port
  await monitor.ready
  ready = true
  logger.info(
    { port, pgPort: wire?.port ?? null, host: config.host, nodes: nodes.length, redis: Boolean(redis) },
    'router listening',
  )
  const rescue = startMoveRescue(
    { topology, directory, redis, logger, metrics: createMoverMetrics(metrics.registry) },
    config.moveRescueIntervalMs,
  )
  const partitions = startPartitionKeeper(topology, logger, async () =>
    config.cache.enabled ? forgetCachedReads(topology) : true,
  )

  let closing: Promise<void> | undefined
  return {
    url: `http://${config.host}:${port}`,
    port,
    pgPort: wire?.port ?? null,
    app,
    close() {
      closing ??= (async () => {
        ready = false
        await Promise.all([rescue.stop(), partitions.stop()])
        // Sessions are told the router is going (57P01), then any WebSocket left is cut.
        await Promise.all([stopServing(server, connections), wire?.close().then(() => webSockets?.close())])
        await monitor.stop()
        await pools.close()
        await routes.close()
        // After the last request: what it counted goes to Redis before the client does.
        await app.statementStats?.close()
        redis?.disconnect()
        admissionRedis?.disconnect()
        await directory.close()
        logger.info({ port }, 'router stopped')
      })()
      return closing
    },
  }
}

/** The server's open connections, so that close can tell which have not sent a request yet. */
function trackConnections(server: Server): ReadonlySet<Socket> {
  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  return sockets
}

/**
 * Stops accepting, then waits for every connection to end: requests in flight are answered (with
 * `connection: close`), idle keep-alive connections are closed. A connection accepted just before that
 * whose request has not been read yet gets up to ACCEPTED_GRACE_MS to send it. http.Server's close (Node
 * 19+) would drop it at once as idle, and a worker of `router --workers` is handed connections by the
 * primary until the primary learns it left: a rolling restart under load would now and then reset a
 * request that no router had read yet.
 */
async function stopServing(server: Server, connections: ReadonlySet<Socket>): Promise<void> {
  const drained = new Promise<void>((resolve) => server.once('close', () => resolve()))
  // net.Server's close: the listener only, connections stay open.
  NetServer.prototype.close.call(server)
  const deadline = performance.now() + ACCEPTED_GRACE_MS
  const unread = () => [...connections].some((socket) => socket.bytesRead === 0)
  while (unread() && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
  // Idle keep-alive connections would hold the close open; busy ones finish their request first.
  server.closeIdleConnections()
  await drained
}

/** The read cache's view of a shard's tables, from its primary's catalog (src/router/cache/relations.ts). */
function readShardRelations(topology: Topology, shard: string) {
  const primary = topology.shards.find((candidate) => candidate.id === shard)?.primary
  if (!primary) return Promise.reject(new Error(`shard ${shard} is not in the topology`))
  return withAdmin(primary, (sql) => readRelations(sql, topology.tenantSchema.schemas))
}
