import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { TestProject } from 'vitest/node'
import { clusterDown, clusterUp } from '../../src/cluster/launcher.ts'
import { redisServerPath } from '../../src/cluster/redis-node.ts'
import { localCaFile } from '../../src/cluster/tls.ts'
import { parseTopology } from '../../src/config/load.ts'
import type { Topology } from '../../src/config/topology.ts'
import { migrateAll } from '../../src/directory/migrate.ts'

declare module 'vitest' {
  export interface ProvidedContext {
    topology: Topology
    /** A JSON copy of the topology; CLI runs in tests get it through SWITCHYARD_CONFIG. */
    configFile: string
    /** Where the launcher keeps node data: tests that stop and start nodes need it. */
    home: string
  }
}

/** Ports the kernel hands out as free right now, all distinct. */
export async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>()
  while (ports.size < count) {
    ports.add(
      await new Promise<number>((resolve, reject) => {
        const server = createServer()
        server.once('error', reject)
        server.listen(0, '127.0.0.1', () => {
          const { port } = server.address() as { port: number }
          server.close(() => resolve(port))
        })
      }),
    )
  }
  return [...ports]
}

/**
 * The test topology on `ports`. With `home` (where `cluster up` makes the local CA), routers verify every
 * shard node's certificate (verify-full against that CA), so the whole suite runs over checked TLS.
 */
export function testTopologyInput(ports: number[], home?: string) {
  const [directory, redis, router, ...shardPorts] = ports
  const url = (port: number | undefined, db: string) =>
    `postgres://switchyard:switchyard@127.0.0.1:${port}/${db}`
  return {
    directory: url(directory, 'switchyard'),
    redis: `redis://127.0.0.1:${redis}`,
    // Crash tests leave fenced moves on purpose, for `move resume` and `move abort` to find.
    router: {
      port: router,
      // Any free port: test files run side by side, each with routers of its own.
      pgPort: 0,
      moveRescueIntervalMs: 0,
      // Tests that create partitioned tables say which partitions each shard has; the keeper's own test turns it on.
      partitionKeeperIntervalMs: 0,
      // Many tests write the example's tables past the routers (an admin connection) and read them back
      // through one: test/cache.test.ts starts routers with the read cache on.
      cache: { enabled: false, tables: {} },
      ...(home ? { tls: { mode: 'verify-full' as const, rootCert: localCaFile(home) } } : {}),
    },
    // Moves clean the source up right after the cutover: test files share the shards.
    mover: { cleanupGraceMs: 200 },
    tenantSchema: { migrations: path.resolve('examples/appointments/migrations'), schemas: ['public'] },
    shards: [0, 1, 2].map((n) => ({
      id: `shard-${n + 1}`,
      primary: url(shardPorts[n], 'app'),
      replicas: [url(shardPorts[n + 3], 'app')],
      capacity: 100,
    })),
  }
}

/** Boots one topology on free ports in a temporary folder, migrated, for every test file; stops it after. */
export default async function setup(project: TestProject) {
  if (!redisServerPath())
    throw new Error('the test suite needs redis-server on the PATH (apt-get install redis-server)')
  const home = await mkdtemp(path.join(tmpdir(), 'switchyard-test-'))
  const input = testTopologyInput(await freePorts(9), home)
  const configFile = path.join(home, 'topology.json')
  await writeFile(configFile, JSON.stringify(input, null, 2))
  const topology = parseTopology(input, configFile)
  const started = Date.now()
  try {
    await clusterUp(topology, { home, durable: false })
    await migrateAll(topology)
  } catch (error) {
    await clusterDown(topology, { home }).catch(() => {})
    throw error
  }
  console.log(`test topology up and migrated in ${Date.now() - started} ms (${home})`)
  project.provide('topology', topology)
  project.provide('configFile', configFile)
  project.provide('home', home)
  return async () => {
    await clusterDown(topology, { home })
    await rm(home, { recursive: true, force: true })
  }
}
