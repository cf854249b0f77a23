/**
 * The router as a user runs it: `switchyard router` (with `--workers N`), its own process(es), the
 * topology from a JSON file, the default log level (LOG_LEVEL is passed on only if it was set), its log
 * lines in a file as a service manager would keep them.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { openSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Topology } from '../../src/config/topology.ts'
import { treeUsage, type UsageProbe } from './proc.ts'

const CLI = fileURLToPath(new URL('../../bin/switchyard.js', import.meta.url))

export interface RouterProcess {
  port: number
  workers: number
  usage: UsageProbe
  logFile: string
  stop(): Promise<void>
}

export async function startRouterProcess(
  topology: Topology,
  home: string,
  /** `nodeArgs`: for node itself (`--cpu-prof`); cluster workers inherit them. */
  options: { port: number; workers: number; nodeArgs?: string[] },
): Promise<RouterProcess> {
  // One file per router: routers of one bench may run with different settings (the read cache on or off).
  const config = path.join(home, `topology-${options.port}.json`)
  await writeFile(config, JSON.stringify(topology), { mode: 0o600 })
  const logFile = path.join(home, `router-${options.port}.log`)
  const log = openSync(logFile, 'a')
  // Always named: without the flag the router runs one worker per CPU.
  const args = [
    ...(options.nodeArgs ?? []),
    CLI,
    'router',
    '--port',
    String(options.port),
    '--workers',
    String(options.workers),
  ]
  const env: NodeJS.ProcessEnv = { ...process.env, SWITCHYARD_CONFIG: config }
  const child: ChildProcess = spawn(process.execPath, args, { env, stdio: ['ignore', log, log] })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const deadline = Date.now() + 30_000
  for (;;) {
    // The log is in the bench's temporary folder, removed at the end: say what it says.
    if (child.exitCode !== null)
      throw new Error(
        `switchyard router ${args.slice(args.indexOf(CLI) + 2).join(' ')} exited with ${child.exitCode} at start:\n${await tail(logFile)}`,
      )
    const ready = await fetch(`http://127.0.0.1:${options.port}/readyz`)
      .then((response) => response.status === 200)
      .catch(() => false)
    if (ready) break
    if (Date.now() > deadline) {
      child.kill('SIGKILL')
      throw new Error(`switchyard router was not ready within 30 s:\n${await tail(logFile)}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return {
    port: options.port,
    workers: options.workers,
    usage: treeUsage(child.pid as number),
    logFile,
    async stop() {
      if (child.exitCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }
}

const tail = async (file: string) =>
  (await readFile(file, 'utf8').catch(() => '')).split('\n').slice(-20).join('\n')
