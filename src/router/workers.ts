import cluster, { type Worker } from 'node:cluster'
import { z } from 'zod'
import type { Topology } from '../config/topology.ts'
import { isSwitchyardError, SwitchyardError } from '../errors.ts'
import { type Logger, logger as rootLogger } from '../log.ts'
import { cancelsThroughPrimary, relayCancels } from './cluster-cancel.ts'
import { answerMetricsRequests, createMetricsGatherer, scrapeThroughPrimary } from './cluster-metrics.ts'
import { overcommitted, poolShare } from './pool-division.ts'
import { type RunningRouter, startRouter } from './server.ts'

/**
 * `switchyard router --workers N`: N router processes on one port, under one primary that only
 * supervises. Each worker is a whole router (startRouter) with its part of every node's pool
 * (pool-division.ts); GET /metrics on any of them answers the sum over all (cluster-metrics.ts).
 *
 * The port is shared with node:cluster's round robin (SCHED_RR): the primary accepts each connection and
 * hands it to the next worker over IPC. SO_REUSEPORT is not there to choose: Node 20's net has no
 * `reusePort` (it came in 22.12). Cluster's other mode (SCHED_NONE: every worker accepts on one shared
 * socket) leaves the balance to the kernel, which on Linux piles most connections on a few processes.
 * The round robin costs one IPC hop per connection and none per request of a keep-alive connection.
 *
 * The primary runs no router: `--workers 1` is one plain process, without a primary.
 */

/** The primary tells each worker which it is, and of how many, through its environment. */
const WORKER_ENV = 'SWITCHYARD_WORKER'
const WORKERS_ENV = 'SWITCHYARD_WORKERS'

const READY = 'switchyard:worker-ready'
const FAILED = 'switchyard:worker-failed'
const CLOSE = 'switchyard:worker-close'

const FromWorker = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal(READY), port: z.number().int() }),
  z.strictObject({ type: z.literal(FAILED), code: z.string(), message: z.string() }),
])
const FromPrimary = z.strictObject({ type: z.literal(CLOSE) })

/** The first re-fork of a worker that died waits this long; each death in a row doubles it, up to MAX. */
const REFORK_BACKOFF_MS = 1_000
const REFORK_BACKOFF_MAX_MS = 30_000
/** A worker that served this long before it died had no part in a crash loop: its slot backs off from the start. */
const STABLE_MS = 60_000

export interface WorkersOptions {
  workers: number
  port?: number | undefined
  logger?: Logger
}

/**
 * Runs `workers` routers until SIGINT or SIGTERM, then closes them all gracefully and resolves. SIGHUP
 * replaces them one at a time (a rolling restart: new code and config, no request refused). Rejects,
 * with the first worker's error, when they cannot all start.
 */
export async function runWorkers(topology: Topology, options: WorkersOptions): Promise<void> {
  const log = options.logger ?? rootLogger
  const { poolSize } = topology.router
  const shares = Array.from({ length: options.workers }, (_, worker) =>
    poolShare(topology.router, options.workers, worker),
  )
  log.info({ workers: options.workers, poolSize, shares }, 'router workers starting')
  if (overcommitted(topology.router, options.workers))
    log.warn(
      { workers: options.workers, poolSize },
      'more workers than router.poolSize: each worker gets 1 connection per node, more than poolSize in all',
    )
  cluster.schedulingPolicy = cluster.SCHED_RR
  // Structured clone: metric values such as NaN and Infinity cross the channel as they are.
  cluster.setupPrimary({ serialization: 'advanced' })
  const supervisor = createSupervisor(options.workers, log)
  const removeSignals = onSignals(supervisor)
  try {
    await supervisor.start()
  } catch (error) {
    removeSignals()
    await supervisor.stop()
    throw error
  }
  if (!supervisor.stopping())
    log.info({ workers: options.workers, pids: supervisor.pids() }, 'router workers ready')
  await supervisor.stopped
  removeSignals()
  log.info('router workers stopped')
}

/** SIGHUP: rolling restart. SIGINT/SIGTERM: graceful stop; a second one exits at once. */
function onSignals(supervisor: Supervisor): () => void {
  const restart = () => void supervisor.restart()
  const stop = () => {
    process.once('SIGINT', () => process.exit(130))
    process.once('SIGTERM', () => process.exit(143))
    void supervisor.stop()
  }
  process.on('SIGHUP', restart)
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  return () => {
    process.off('SIGHUP', restart)
    process.off('SIGINT', stop)
    process.off('SIGTERM', stop)
  }
}

/** One worker process, from its fork to its exit. */
interface RouterWorker {
  worker: Worker
  /** Its place among the workers (from 0): what part of the pools it gets. */
  slot: number
  pid: number | undefined
  /** Set once its router listens and has polled every node; startRouter's close() runs after this. */
  readyAt: number | undefined
  /** Asked to close: its exit is expected. */
  retiring: boolean
  /** Resolves when it is ready; rejects with its error if it exits before. */
  started: Promise<void>
  exited: Promise<void>
}

/** A place for one worker: the one serving, the one starting to take its place, its crash backoff. */
interface Slot {
  index: number
  current: RouterWorker | undefined
  incoming: RouterWorker | undefined
  /** Deaths in a row, for the backoff of the next re-fork. */
  deaths: number
  refork: NodeJS.Timeout | undefined
}

interface Supervisor {
  start(): Promise<void>
  restart(): Promise<void>
  stop(): Promise<void>
  /** Resolves once stop() has closed every worker. */
  stopped: Promise<void>
  stopping(): boolean
  pids(): (number | undefined)[]
}

function createSupervisor(count: number, log: Logger): Supervisor {
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({
    index,
    current: undefined,
    incoming: undefined,
    deaths: 0,
    refork: undefined,
  }))
  const live = new Set<RouterWorker>()
  const serving = () => [...live].filter((one) => one.readyAt !== undefined).map((one) => one.worker)
  const metrics = createMetricsGatherer(serving)
  const cancels = relayCancels(serving)
  let stopping = false
  let restarting = false
  let restartAgain = false
  let markStopped = () => {}
  const stopped = new Promise<void>((resolve) => {
    markStopped = resolve
  })

  function fork(slot: Slot): RouterWorker {
    const worker = cluster.fork({ [WORKER_ENV]: String(slot.index), [WORKERS_ENV]: String(count) })
    let ready = () => {}
    let failed = (_error: Error) => {}
    let exited = () => {}
    const one: RouterWorker = {
      worker,
      slot: slot.index,
      pid: worker.process.pid,
      readyAt: undefined,
      retiring: false,
      started: new Promise<void>((resolve, reject) => {
        ready = resolve
        failed = reject
      }),
      exited: new Promise<void>((resolve) => {
        exited = resolve
      }),
    }
    live.add(one)
    worker.on('message', (raw: unknown) => {
      metrics.onMessage(worker, raw)
      cancels.onMessage(worker, raw)
      const message = FromWorker.safeParse(raw)
      if (!message.success) return
      if (message.data.type === FAILED) failed(new SwitchyardError(message.data.code, message.data.message))
      else {
        one.readyAt = Date.now()
        log.info({ worker: slot.index, pid: one.pid, port: message.data.port }, 'worker ready')
        ready()
      }
    })
    // Sending to a worker on its way out fails; its exit is what the supervisor acts on.
    worker.on('error', () => {})
    worker.once('exit', (code, signal) => {
      live.delete(one)
      metrics.onExit(worker)
      failed(
        new SwitchyardError(
          'worker_failed',
          `worker ${slot.index} exited (${signal ?? code}) before it was ready`,
        ),
      )
      exited()
      afterExit(one, code, signal)
    })
    return one
  }

  /** Forks a worker for `slot` and makes it the slot's once it is ready. Rejects if it is not. */
  async function bringUp(slot: Slot): Promise<RouterWorker> {
    clearTimeout(slot.refork)
    slot.refork = undefined
    const incoming = fork(slot)
    slot.incoming = incoming
    try {
      await incoming.started
    } finally {
      if (slot.incoming === incoming) slot.incoming = undefined
    }
    slot.current = incoming
    return incoming
  }

  /** Asks a worker to close gracefully (startRouter's close) and waits for its exit. */
  async function retire(one: RouterWorker): Promise<void> {
    one.retiring = true
    // Still starting: it serves nothing yet, and has no handler for SIGTERM until it does.
    if (one.readyAt === undefined || !one.worker.isConnected()) one.worker.process.kill('SIGTERM')
    else one.worker.send({ type: CLOSE })
    await one.exited
  }

  function afterExit(one: RouterWorker, code: number | null, signal: string | null): void {
    const slot = slots[one.slot]
    if (!slot || one.retiring || stopping) return
    if (slot.current === one) slot.current = undefined
    // One that never got ready is its starter's to report (start, restart, re-fork).
    if (one.readyAt === undefined) return
    if (Date.now() - one.readyAt >= STABLE_MS) slot.deaths = 0
    const reforkInMs = scheduleRefork(slot)
    log.warn({ worker: slot.index, pid: one.pid, code, signal, reforkInMs }, 'worker died')
  }

  /** Re-forks the slot's worker after a backoff that doubles with each death in a row; returns it. */
  function scheduleRefork(slot: Slot): number {
    const delayMs = Math.min(REFORK_BACKOFF_MAX_MS, REFORK_BACKOFF_MS * 2 ** slot.deaths)
    slot.deaths += 1
    slot.refork = setTimeout(() => void refork(slot), delayMs)
    return delayMs
  }

  async function refork(slot: Slot): Promise<void> {
    slot.refork = undefined
    if (stopping || slot.current || slot.incoming) return
    try {
      const one = await bringUp(slot)
      log.info({ worker: slot.index, pid: one.pid }, 'worker re-forked')
    } catch (error) {
      if (stopping) return
      const reforkInMs = scheduleRefork(slot)
      log.error({ worker: slot.index, ...reason(error), reforkInMs }, 'worker did not start')
    }
  }

  /** Replaces each worker in turn: the new one ready first, then the old one closed. */
  async function replaceAll(): Promise<void> {
    log.info({ workers: count }, 'rolling restart')
    for (const slot of slots) {
      // A slot whose worker is being re-forked gets a new one already.
      if (stopping || slot.incoming) continue
      const old = slot.current
      let fresh: RouterWorker
      try {
        fresh = await bringUp(slot)
      } catch (error) {
        if (!stopping)
          log.error(
            { worker: slot.index, ...reason(error) },
            'rolling restart stopped: the old workers keep serving',
          )
        return
      }
      if (old) await retire(old)
      log.info({ worker: slot.index, pid: fresh.pid, previousPid: old?.pid }, 'worker replaced')
    }
    if (!stopping) log.info({ workers: count, pids: pids() }, 'rolling restart done')
  }

  const pids = () => slots.map((slot) => slot.current?.pid)

  return {
    stopped,
    stopping: () => stopping,
    pids,
    async start() {
      const results = await Promise.allSettled(slots.map(bringUp))
      // A signal during the start is a stop, not a failure: the workers it closed did not fail.
      const failure = results.find((result) => result.status === 'rejected')
      if (failure && !stopping) throw failure.reason
    },
    async restart() {
      if (stopping) return
      if (restarting) {
        // The SIGHUP may bring a config newer than the pass under way read: one more pass after it.
        restartAgain = true
        return
      }
      restarting = true
      try {
        do {
          restartAgain = false
          await replaceAll()
        } while (restartAgain && !stopping)
      } finally {
        restarting = false
      }
    },
    async stop() {
      if (stopping) return stopped
      stopping = true
      log.info({ workers: live.size }, 'stopping router workers')
      for (const slot of slots) clearTimeout(slot.refork)
      await Promise.all([...live].map(retire))
      markStopped()
    },
  }
}

const reason = (error: unknown) =>
  isSwitchyardError(error) ? { code: error.code, reason: error.message } : { reason: String(error) }

/** True in a process that runWorkers forked. */
export const isRouterWorker = () => cluster.isWorker && process.env[WORKER_ENV] !== undefined

const Placement = z.object({
  [WORKER_ENV]: z.string().regex(/^\d+$/).transform(Number),
  [WORKERS_ENV]: z.string().regex(/^\d+$/).transform(Number),
})

/**
 * In a worker: runs its router with its part of the pools, tells the primary once it is ready, closes
 * gracefully when the primary asks. A worker that cannot start sends its error to the primary (which
 * reports it once) and exits 1.
 */
export async function startWorker(topology: Topology, port: number | undefined): Promise<RunningRouter> {
  const placement = Placement.safeParse(process.env)
  const slot = placement.success ? placement.data[WORKER_ENV] : -1
  const count = placement.success ? placement.data[WORKERS_ENV] : 0
  const logger = rootLogger.child({ worker: slot, pid: process.pid })
  let router: RunningRouter
  try {
    if (!placement.success || slot >= count)
      throw new SwitchyardError('internal', `not a router worker: ${WORKER_ENV}`)
    router = await startRouter(topology, {
      ...(port === undefined ? {} : { port }),
      logger,
      pools: poolShare(topology.router, count, slot),
      metrics: { worker: slot, scrape: scrapeThroughPrimary() },
      cancels: cancelsThroughPrimary(),
    })
  } catch (error) {
    const known = isSwitchyardError(error) ? error : new SwitchyardError('internal', String(error))
    const send = process.send?.bind(process)
    if (!send) throw known
    // Exits once the message is out: the IPC channel would keep this process alive.
    return new Promise<never>(() => {
      send({ type: FAILED, code: known.code, message: known.message }, undefined, undefined, () =>
        process.exit(1),
      )
    })
  }
  answerMetricsRequests(router.app.metrics.registry)
  process.on('message', (raw: unknown) => {
    if (FromPrimary.safeParse(raw).success) void router.close().then(() => process.exit(0))
  })
  process.send?.({ type: READY, port: router.port })
  return router
}
