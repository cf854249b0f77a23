import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect } from 'vitest'
import { it } from './fixtures.ts'
import { freePorts } from './setup/topology.ts'
import { cli } from './support.ts'

/**
 * Processes of this cluster: postmasters name their data folder (-D <home>/…); redis-server retitles
 * itself to `redis-server 127.0.0.1:<port>`.
 */
async function processesOf(needles: string[]): Promise<string[]> {
  const found: string[] = []
  for (const pid of (await readdir('/proc')).filter((entry) => /^\d+$/.test(entry))) {
    const command = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')
    if (needles.some((needle) => command.includes(needle)))
      found.push(`${pid} ${command.replaceAll('\0', ' ').trim()}`)
  }
  return found
}

const homes: string[] = []
it.afterAll(async () => {
  for (const home of homes) {
    await cli(['cluster', 'down'], { SWITCHYARD_HOME: home })
    await rm(home, { recursive: true, force: true })
  }
})

describe('switchyard cluster up | status | down', () => {
  it('up twice is fine, status reports every node, down stops every process it started', async () => {
    const home = await mkdtemp(path.join(tmpdir(), 'switchyard-launcher-'))
    homes.push(home)
    const [directory, primary, replica, redis] = await freePorts(4)
    const url = (port: number | undefined) => `postgres://switchyard:switchyard@127.0.0.1:${port}/app`
    const env = {
      SWITCHYARD_HOME: home,
      SWITCHYARD_DIRECTORY_URL: url(directory),
      SWITCHYARD_REDIS_URL: `redis://127.0.0.1:${redis}`,
      SWITCHYARD_SHARDS: JSON.stringify([{ id: 'solo', primary: url(primary), replicas: [url(replica)] }]),
    }
    const first = await cli(['cluster', 'up'], env)
    expect(first.code, first.stderr).toBe(0)
    expect(first.stderr).toMatch(/solo-replica-1: started/)
    const second = await cli(['cluster', 'up'], env)
    expect(second.code, second.stderr).toBe(0)
    expect(second.stderr).toMatch(/solo-primary: running/)
    expect(second.stderr).not.toMatch(/started/)

    const status = JSON.parse((await cli(['cluster', 'status', '--json'], env)).stdout) as {
      nodes: { name: string; up: boolean; lagBytes?: number }[]
    }
    expect(status.nodes.map((n) => [n.name, n.up])).toEqual([
      ['directory', true],
      ['solo-primary', true],
      ['solo-replica-1', true],
      ['redis', true],
    ])
    const ours = [home, `redis-server 127.0.0.1:${redis}`]
    expect((await processesOf(ours)).filter((p) => p.includes('redis-server'))).toHaveLength(1)
    expect((await processesOf(ours)).filter((p) => p.includes('-D'))).toHaveLength(3)

    const down = await cli(['cluster', 'down'], env)
    expect(down.code, down.stderr).toBe(0)
    expect(await processesOf(ours)).toEqual([])
    const after = JSON.parse((await cli(['cluster', 'status', '--json'], env)).stdout) as {
      nodes: { up: boolean }[]
    }
    expect(after.nodes.every((n) => !n.up)).toBe(true)
  }, 180_000) // boots a second whole topology; on a busy 2-core machine that has taken over a minute
})
