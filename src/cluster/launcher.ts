import { existsSync } from 'node:fs'
import { chmod, mkdir, rm } from 'node:fs/promises'
import path from 'node:path'
import type { Topology } from '../config/topology.ts'
import { answers, withAdmin } from '../shard/connection.ts'
import { postgresBinaries, serverUser } from './binaries.ts'
import { assertLocal, type ClusterPlan, type PostgresNode, planCluster } from './nodes.ts'
import {
  dataDir,
  ensureDatabase,
  ensureTemplate,
  type NodeContext,
  ownedDir,
  reloadNode,
  startNode,
  stopNode,
  writeServerConfig,
} from './postgres-node.ts'
import { runChecked } from './process.ts'
import { REDIS_INSTALL_HINT, redisAnswers, startRedis, stopRedis } from './redis-node.ts'
import { ensureReplicaData } from './replica.ts'
import { ensureLocalTls } from './tls.ts'

export interface LaunchOptions {
  /** Where node data lives; `.switchyard/` in the working folder by default. */
  home: string
  durable?: boolean
  /** Progress lines for the operator. */
  report?: (line: string) => void
}

export const defaultHome = (env: NodeJS.ProcessEnv = process.env) =>
  path.resolve(env.SWITCHYARD_HOME ?? '.switchyard')

function context(options: LaunchOptions): NodeContext {
  return {
    home: options.home,
    binaries: postgresBinaries(),
    user: serverUser(),
    durable: options.durable ?? true,
    tls: null,
  }
}

/** Starts whatever is not running yet: directory and primaries, then replicas from them, then Redis. */
export async function clusterUp(topology: Topology, options: LaunchOptions): Promise<void> {
  const plan = planCluster(topology)
  assertLocal(plan)
  const ctx = context(options)
  const report = options.report ?? (() => {})
  await mkdir(ctx.home, { recursive: true })
  // The server user must be able to walk into the home folder.
  await chmod(ctx.home, 0o755)
  await ownedDir(ctx, path.join(ctx.home, 'nodes'))
  await chmod(path.join(ctx.home, 'nodes'), 0o755)
  ctx.tls = await ensureLocalTls(ctx)
  report(
    ctx.tls
      ? `tls: every node serves TLS with a certificate of the local CA ${ctx.tls.caFile}`
      : 'tls: openssl not found, so the nodes run without TLS',
  )
  const writers = plan.postgres.filter((node) => node.role !== 'replica')
  // One template per superuser, built before the nodes that copy it.
  for (const node of writers) await ensureTemplate(ctx, node.user, node.password)
  await Promise.all(
    writers.map(async (node) => {
      const changed = await ensureWriterData(ctx, node)
      report(`${node.name}: ${await bootNode(ctx, node, changed)} on port ${node.port}`)
      await ensureDatabase(node)
    }),
  )
  const replicas = plan.postgres.filter((node) => node.role === 'replica')
  await Promise.all(
    replicas.map(async (node) => {
      const changed = await ensureReplicaData(ctx, node)
      report(
        `${node.name}: ${await bootNode(ctx, node, changed)} on port ${node.port}, streaming from ${node.primary?.name}`,
      )
    }),
  )
  if (plan.redis) {
    const redis = await startRedis(ctx.home, plan.redis)
    report(
      redis === 'missing'
        ? `redis: not started. ${REDIS_INSTALL_HINT}`
        : `redis: ${redis} on port ${plan.redis.port}`,
    )
  }
}

/** Starts a node; one already running reads its configuration again if `cluster up` changed it. */
async function bootNode(ctx: NodeContext, node: PostgresNode, configChanged: boolean): Promise<string> {
  const started = await startNode(ctx, node)
  if (started === 'started' || !configChanged) return started
  await reloadNode(ctx, node)
  return 'running, configuration reloaded'
}

/** A data folder for a directory or primary, from the template; true when an existing one's settings changed. */
async function ensureWriterData(ctx: NodeContext, node: PostgresNode): Promise<boolean> {
  const data = dataDir(ctx, node)
  if (existsSync(path.join(data, 'PG_VERSION'))) return writeServerConfig(ctx, data, node)
  const template = await ensureTemplate(ctx, node.user, node.password)
  await ownedDir(ctx, path.dirname(data))
  const building = `${data}.building`
  await rm(building, { recursive: true, force: true })
  await runChecked('node_create_failed', 'cp', ['-a', template, building])
  await writeServerConfig(ctx, building, node)
  await runChecked('node_create_failed', 'mv', [building, data])
  return false
}

/** Stops every node this cluster started (by its data folder and pid file) and nothing else. */
export async function clusterDown(topology: Topology, options: LaunchOptions): Promise<void> {
  const plan = planCluster(topology)
  const ctx = context(options)
  const report = options.report ?? (() => {})
  if (plan.redis) report(`redis: ${await stopRedis(ctx.home)}`)
  // Replicas first, so they do not spend the shutdown reconnecting to a stopped primary.
  for (const role of ['replica', 'primary', 'directory'] as const) {
    await Promise.all(
      plan.postgres
        .filter((node) => node.role === role)
        .map(async (node) => report(`${node.name}: ${await stopNode(ctx, node)}`)),
    )
  }
}

/** Stops the cluster and deletes its data, then starts a fresh one. */
export async function clusterReset(topology: Topology, options: LaunchOptions): Promise<void> {
  await clusterDown(topology, options)
  await rm(path.join(options.home, 'nodes'), { recursive: true, force: true })
  options.report?.(`deleted ${path.join(options.home, 'nodes')}`)
  await clusterUp(topology, options)
}

export interface NodeStatus {
  name: string
  role: 'directory' | 'primary' | 'replica' | 'redis'
  shard?: string
  url: string
  up: boolean
  lagBytes?: number | null
}

/** What answers, asked over the network, so it reports the same for a compose topology. */
export async function clusterStatus(topology: Topology): Promise<{ nodes: NodeStatus[] }> {
  const plan = planCluster(topology)
  const nodes = await Promise.all([
    ...plan.postgres.map((node) => postgresStatus(node)),
    ...(plan.redis ? [redisStatus(plan)] : []),
  ])
  return { nodes }
}

async function postgresStatus(node: PostgresNode): Promise<NodeStatus> {
  const base = {
    name: node.name,
    role: node.role,
    ...(node.shard ? { shard: node.shard } : {}),
    url: node.url,
  }
  const up = await answers(node.url)
  if (node.role !== 'replica') return { ...base, up }
  return { ...base, up, lagBytes: up ? await replicaLag(node) : null }
}

/** Bytes of WAL the primary has written that the replica has not replayed yet. */
async function replicaLag(node: PostgresNode): Promise<number | null> {
  try {
    const replayed = await withAdmin(node.url, async (sql) => {
      const [row] = await sql<{ lsn: string | null }[]>`select pg_last_wal_replay_lsn()::text as lsn`
      return row?.lsn ?? null
    })
    if (!replayed || !node.primary) return null
    return await withAdmin(node.primary.url, async (sql) => {
      const [row] = await sql<
        { lag: string }[]
      >`select pg_wal_lsn_diff(pg_current_wal_lsn(), ${replayed}::pg_lsn)::bigint::text as lag`
      return Math.max(0, Number(row?.lag ?? 0))
    })
  } catch {
    return null
  }
}

async function redisStatus(plan: ClusterPlan): Promise<NodeStatus> {
  const redis = plan.redis as NonNullable<ClusterPlan['redis']>
  return { name: redis.name, role: 'redis', url: redis.url, up: await redisAnswers(redis.url) }
}

/** Stops one node of the cluster by name (as `cluster status` names it), e.g. to rehearse a failure. */
export async function stopClusterNode(
  topology: Topology,
  options: LaunchOptions,
  name: string,
): Promise<void> {
  const plan = planCluster(topology)
  if (name === 'redis') {
    await stopRedis(options.home)
    return
  }
  await stopNode(context(options), findNode(plan, name))
}

/** Starts one stopped node again, with its data as it was. */
export async function startClusterNode(
  topology: Topology,
  options: LaunchOptions,
  name: string,
): Promise<void> {
  const plan = planCluster(topology)
  if (name === 'redis') {
    if (plan.redis) await startRedis(options.home, plan.redis)
    return
  }
  await startNode(context(options), findNode(plan, name))
}

function findNode(plan: ClusterPlan, name: string): PostgresNode {
  const node = plan.postgres.find((candidate) => candidate.name === name)
  if (!node) throw new Error(`no node named ${name}`)
  return node
}

/** A node URL fit to print: the password masked. */
export const maskPassword = (url: string) => url.replace(/:[^:@/]*@/, ':***@')
