import type { Command } from 'commander'
import { startDemo } from '../cluster/demo.ts'
import { launch } from './cluster.ts'
import { action } from './output.ts'
import { untilSignal } from './router.ts'

/** `npm start`: the demo runs a router until a signal, as `switchyard router` does. */
export function register(program: Command): void {
  program
    .command('start')
    .description('npm start: boot the local topology, migrate, seed demo tenants, print how to try it')
    .action(action(async (topology) => untilSignal(await startDemo(topology, launch()))))
}
