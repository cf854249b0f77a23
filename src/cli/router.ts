import { availableParallelism } from 'node:os'
import type { Command } from 'commander'
import { z } from 'zod'
import type { Topology } from '../config/topology.ts'
import { SwitchyardError } from '../errors.ts'
import { startRouter } from '../router/server.ts'
import { isRouterWorker, runWorkers, startWorker } from '../router/workers.ts'
import { action } from './output.ts'

/** `--workers` takes 1 to 64 processes. */
const MAX_WORKERS = 64

export function register(program: Command): void {
  program
    .command('router')
    .description(
      'run a router (HTTP, and the PostgreSQL protocol) until SIGINT/SIGTERM, then shut down gracefully',
    )
    .option('--port <port>', 'HTTP port to listen on (default: router.port of the topology)')
    .option(
      '--pg-port <port|off>',
      'PostgreSQL protocol port, or off (default: router.pgPort of the topology, 6432)',
    )
    .option(
      '--workers <n>',
      `router processes sharing the port, 1 to ${MAX_WORKERS}; SIGHUP replaces them one at a time (default: the CPUs)`,
    )
    .action(
      action(async (config, options: { port?: string; pgPort?: string; workers?: string }) => {
        const port = options.port === undefined ? undefined : parsePort(options.port)
        const topology =
          options.pgPort === undefined
            ? config
            : { ...config, router: { ...config.router, pgPort: parsePgPort(options.pgPort) } }
        const workers =
          options.workers === undefined ? defaultWorkers(topology) : parseWorkers(options.workers, topology)
        // A worker runs this same command line again (node:cluster forks it), and the router is its part.
        if (isRouterWorker()) return untilSignal(await startWorker(topology, port))
        // One process needs no primary to share its port: it is the router itself.
        if (workers === 1) return untilSignal(await startRouter(topology, port === undefined ? {} : { port }))
        await runWorkers(topology, { workers, port })
        process.exit(0)
      }),
    )
}

function parsePort(value: string, flag = '--port'): number {
  const parsed = z.coerce.number().int().min(0).max(65535).safeParse(value)
  if (!parsed.success || !/^\d+$/.test(value))
    throw new SwitchyardError('invalid_input', `${flag}: ${JSON.stringify(value)} is not a port number`)
  return parsed.data
}

function parsePgPort(value: string): number | null {
  return value === 'off' ? null : parsePort(value, '--pg-port')
}

/** Digits only: `Number` would take ' 2', '0x10' and '1e1' too. */
function parseWorkers(value: string, topology: Topology): number {
  const parsed = z
    .string()
    .regex(/^\d{1,3}$/)
    .transform(Number)
    .pipe(z.number().int().min(1).max(MAX_WORKERS))
    .safeParse(value)
  if (!parsed.success)
    throw new SwitchyardError(
      'invalid_input',
      `--workers: ${JSON.stringify(value)} is not a whole number from 1 to ${MAX_WORKERS}`,
    )
  // poolSize is the total per node: a worker with a single connection of a node would let one tenant's
  // transaction hold all of it (its fair share cannot be less than one).
  const most = Math.floor(topology.router.poolSize / 2)
  if (parsed.data > 1 && parsed.data > most)
    throw new SwitchyardError(
      'invalid_input',
      `--workers: ${parsed.data} workers would leave some with fewer than 2 of poolSize's ${topology.router.poolSize} connections per node; at most ${most}`,
    )
  return parsed.data
}

/**
 * One worker per CPU this process may use, as long as each keeps at least 4 connections of a node (its
 * default fair share, a quarter, is then a part of its pool, never all of it). Without Redis, one: each
 * worker would keep its own rate-limit counts and last writes, and read-your-writes would hold per worker.
 */
function defaultWorkers(topology: Topology): number {
  if (!topology.redis) return 1
  return Math.max(1, Math.min(MAX_WORKERS, availableParallelism(), Math.floor(topology.router.poolSize / 4)))
}

/** Stops the router gracefully on the first SIGINT/SIGTERM; a second one exits at once. */
export function untilSignal(router: { close(): Promise<void> }) {
  const stop = () => {
    process.once('SIGINT', () => process.exit(130))
    process.once('SIGTERM', () => process.exit(143))
    router.close().then(() => process.exit(0))
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}
