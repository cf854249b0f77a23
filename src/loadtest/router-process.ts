import { type ChildProcess, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { SwitchyardError } from '../errors.ts'

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/switchyard.js')

/** How long a router process may take to answer /readyz (it migrates nothing: it connects and listens). */
const READY_TIMEOUT_MS = 60_000

export interface RouterProcess {
  url: string
  /** Throws `router_failed` if the router has exited: every later step would fail for that reason alone. */
  assertRunning(): void
  close(): Promise<void>
}

/**
 * A router in a process of its own (`switchyard router`, one worker, no PostgreSQL port), configured as
 * this process is (same environment, same working folder). The capacity search runs it apart from the
 * load generator so that each one's CPU is its own: a router in the generator's process would share its
 * event loop and its CPU figure.
 */
export async function startRouterProcess(): Promise<RouterProcess> {
  const port = await freePort()
  const child = spawn(
    process.execPath,
    [CLI, 'router', '--port', String(port), '--pg-port', 'off', '--workers', '1'],
    {
      env: { ...process.env, LOG_LEVEL: process.env.LOG_LEVEL ?? 'error' },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  )
  // The last of what it said, to name why it stopped; nothing of it is printed otherwise.
  let said = ''
  child.on('error', (error) => {
    said = `${said}${error.message}\n`
  })
  // process.exit() (a second Ctrl-C, an interrupted search) must not leave a router holding the shards' pools.
  const killOnExit = () => child.kill('SIGKILL')
  process.once('exit', killOnExit)
  child.once('exit', () => process.off('exit', killOnExit))
  child.stderr?.on('data', (chunk: Buffer) => {
    said = `${said}${chunk.toString('utf8')}`.slice(-2000)
  })
  const url = `http://127.0.0.1:${port}`
  try {
    await untilReady(url, child, () => said)
  } catch (error) {
    child.kill('SIGKILL')
    throw error
  }
  return {
    url,
    assertRunning() {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new SwitchyardError('router_failed', `the load test's router exited: ${said.trim()}`)
    },
    close: () => stop(child),
  }
}

async function untilReady(url: string, child: ChildProcess, said: () => string) {
  const deadline = Date.now() + READY_TIMEOUT_MS
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new SwitchyardError('router_failed', `the load test's router exited at start: ${said().trim()}`)
    const ready = await fetch(`${url}/readyz`).then(
      (response) => response.ok,
      () => false,
    )
    if (ready) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new SwitchyardError(
    'router_failed',
    `the load test's router did not get ready in ${READY_TIMEOUT_MS / 1000} s: ${said().trim()}`,
  )
}

/** SIGTERM (a graceful shutdown), then SIGKILL if it is still there after 15 s. */
function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 15_000)
    child.once('exit', () => {
      clearTimeout(kill)
      resolve()
    })
    child.kill('SIGTERM')
  })
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject()))
    })
  })
}
