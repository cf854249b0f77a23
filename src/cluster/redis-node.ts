import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readFile, rm } from 'node:fs/promises'
import { createConnection } from 'node:net'
import path from 'node:path'
import { SwitchyardError } from '../errors.ts'
import type { RedisNode } from './nodes.ts'
import { portTaken, runChecked, sleep } from './process.ts'

export const REDIS_INSTALL_HINT =
  'Redis is not installed (no redis-server on the PATH): install it with `apt-get install redis-server` (Debian/Ubuntu) or `brew install redis`, then run `switchyard cluster up` again'

export function redisServerPath(): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

const pidFile = (home: string) => path.join(home, 'nodes', 'redis', 'redis.pid')

/** Redis for caches and counters: nothing in it must survive a restart, so it keeps nothing on disk. */
export async function startRedis(home: string, node: RedisNode): Promise<'started' | 'running' | 'missing'> {
  if (await ourRedisPid(home)) return 'running'
  const server = redisServerPath()
  if (!server) return 'missing'
  if (await portTaken(node.port)) {
    throw new SwitchyardError(
      'port_in_use',
      `redis: port ${node.port} is taken by a process that is not this cluster's`,
    )
  }
  const dir = path.dirname(pidFile(home))
  await mkdir(dir, { recursive: true })
  await runChecked('redis_start_failed', server, [
    ...['--port', String(node.port), '--bind', '127.0.0.1', '--daemonize', 'yes'],
    ...['--pidfile', pidFile(home), '--logfile', path.join(dir, 'redis.log'), '--dir', dir],
    ...['--save', '', '--appendonly', 'no'],
  ])
  for (let attempt = 0; attempt < 100; attempt++) {
    if (await redisAnswers(node.url)) return 'started'
    await sleep(50)
  }
  throw new SwitchyardError('redis_start_failed', `redis did not answer on port ${node.port}`)
}

export async function stopRedis(home: string): Promise<'stopped' | 'not running'> {
  const pid = await ourRedisPid(home)
  if (!pid) return 'not running'
  process.kill(pid, 'SIGTERM')
  for (let attempt = 0; attempt < 200 && isAlive(pid); attempt++) await sleep(25)
  await rm(pidFile(home), { force: true })
  return 'stopped'
}

/** The pid in our pid file, if that process is alive and is a redis-server (never someone else's). */
async function ourRedisPid(home: string): Promise<number | undefined> {
  const file = pidFile(home)
  if (!existsSync(file)) return undefined
  const pid = Number((await readFile(file, 'utf8')).trim())
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return undefined
  const command = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => 'redis-server')
  return command.includes('redis-server') ? pid : undefined
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** PING over a raw socket: a status check must not leave a reconnecting client behind. */
export function redisAnswers(url: string, timeoutMs = 1000): Promise<boolean> {
  const parsed = new URL(url)
  return new Promise((resolve) => {
    const socket = createConnection({ host: parsed.hostname, port: Number(parsed.port || 6379) })
    const done = (answer: boolean) => {
      socket.destroy()
      resolve(answer)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.once('error', () => done(false))
    socket.once('connect', () => {
      if (parsed.password) {
        socket.write(
          `AUTH ${decodeURIComponent(parsed.username) || 'default'} ${decodeURIComponent(parsed.password)}\r\n`,
        )
      }
      socket.write('PING\r\n')
    })
    socket.on('data', (chunk) => {
      if (chunk.toString().includes('+PONG')) done(true)
      else if (chunk.toString().startsWith('-')) done(false)
    })
  })
}
