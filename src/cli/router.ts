import type { Command } from 'commander'
import { z } from 'zod'
import { SwitchyardError } from '../errors.ts'
import { startRouter } from '../router/server.ts'
import { action } from './output.ts'

export function register(program: Command): void {
  program
    .command('router')
    .description('run a router (Hono over HTTP) until SIGINT/SIGTERM, then shut down gracefully')
    .option('--port <port>', 'port to listen on (default: router.port of the topology)')
    .action(
      action(async (topology, options: { port?: string }) => {
        const port = options.port === undefined ? undefined : parsePort(options.port)
        untilSignal(await startRouter(topology, port === undefined ? {} : { port }))
      }),
    )
}

function parsePort(value: string): number {
  const parsed = z.coerce.number().int().min(0).max(65535).safeParse(value)
  if (!parsed.success)
    throw new SwitchyardError('invalid_input', `--port: ${JSON.stringify(value)} is not a port number`)
  return parsed.data
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
