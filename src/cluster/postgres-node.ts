import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chown, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { SwitchyardError } from '../errors.ts'
import { withAdmin } from '../shard/connection.ts'
import type { PostgresBinaries, ServerUser } from './binaries.ts'
import type { PostgresNode } from './nodes.ts'
import { portTaken, run, runChecked } from './process.ts'
import type { ServerTls } from './tls.ts'

export interface NodeContext {
  home: string
  binaries: PostgresBinaries
  user: ServerUser | undefined
  /** fsync and full_page_writes; off for throwaway test clusters. */
  durable: boolean
  /** The certificate every node presents (`ssl = on`); null: the nodes run without TLS. */
  tls: ServerTls | null
}

export const nodeDir = (ctx: NodeContext, node: { name: string }) => path.join(ctx.home, 'nodes', node.name)
/** Each node's server log, where `pg_ctl start -l` writes it. */
export const nodeLog = (home: string, node: { name: string }) =>
  path.join(home, 'nodes', node.name, 'postgres.log')
/** The nodes' log line prefix: time with milliseconds, process, then who (pgBadger is told it). */
export const LOG_LINE_PREFIX = '%m [%p] user=%u,db=%d,app=%a,client=%h '
export const dataDir = (ctx: NodeContext, node: { name: string }) => path.join(nodeDir(ctx, node), 'data')

/** Creates a folder owned by the server user, so PostgreSQL (never root) can write in it. */
export async function ownedDir(ctx: NodeContext, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  if (ctx.user) await chown(dir, ctx.user.uid, ctx.user.gid)
}

/**
 * initdb once per superuser and copy the result for each node: a copy takes milliseconds, initdb a second.
 * Built in a temporary folder and renamed, so a crash never leaves a half template behind.
 */
export async function ensureTemplate(ctx: NodeContext, user: string, password: string): Promise<string> {
  const key = createHash('sha256').update(`${user}:${password}`).digest('hex').slice(0, 12)
  const template = path.join(ctx.home, 'template', key)
  if (existsSync(path.join(template, 'PG_VERSION'))) return template
  const building = `${template}.building`
  await rm(building, { recursive: true, force: true })
  await ownedDir(ctx, path.dirname(template))
  await ownedDir(ctx, building)
  const pwfile = path.join(building, '..', `${key}.pw`)
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 })
  if (ctx.user) await chown(pwfile, ctx.user.uid, ctx.user.gid)
  try {
    await runChecked(
      'initdb_failed',
      ctx.binaries.initdb,
      ['-D', building, '-U', user, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--locale=C'],
      { user: ctx.user },
    )
  } finally {
    await rm(pwfile, { force: true })
  }
  await rename(building, template)
  return template
}

/**
 * The settings Switchyard needs, kept in their own file included from postgresql.conf. Written on every
 * `cluster up`, so existing data folders get new settings too; true when the file changed.
 */
export async function writeServerConfig(
  ctx: NodeContext,
  data: string,
  node: PostgresNode,
): Promise<boolean> {
  const settings: Record<string, string | number> = {
    port: node.port,
    listen_addresses: "'127.0.0.1'",
    unix_socket_directories: "''",
    max_connections: 200,
    wal_level: 'logical',
    max_wal_senders: 40,
    max_replication_slots: 40,
    max_logical_replication_workers: 16,
    max_worker_processes: 32,
    // A forgotten slot must not fill the disk: past this, PostgreSQL invalidates it instead.
    max_slot_wal_keep_size: "'8GB'",
    hot_standby: 'on',
    hot_standby_feedback: 'on',
    shared_preload_libraries: "'pg_stat_statements'",
    // Utility statements are kept word for word (CREATE SUBSCRIPTION's connection string, ALTER ROLE's
    // password): `shards top` must never show them.
    'pg_stat_statements.track_utility': 'off',
    fsync: ctx.durable ? 'on' : 'off',
    full_page_writes: ctx.durable ? 'on' : 'off',
    // What pgBadger reads (`switchyard logs report`): every statement over the seed's 100 ms, with who
    // ran it; lock waits past deadlock_timeout; every temporary file; in English, whatever the locale.
    log_min_duration_statement: 100,
    log_line_prefix: quote(LOG_LINE_PREFIX),
    log_lock_waits: 'on',
    log_temp_files: 0,
    log_checkpoints: 'on',
    lc_messages: "'C'",
    ssl: ctx.tls ? 'on' : 'off',
  }
  if (ctx.tls) {
    settings.ssl_cert_file = quote(ctx.tls.certFile)
    settings.ssl_key_file = quote(ctx.tls.keyFile)
  }
  if (node.role === 'replica' && node.primary) {
    const conninfo = `host=127.0.0.1 port=${node.primary.port} user=${node.primary.user} password=${node.primary.password} application_name=${node.name}`
    settings.primary_conninfo = `'${conninfo.replaceAll("'", "''")}'`
    settings.primary_slot_name = `'${replicaSlot(node)}'`
  }
  const lines = Object.entries(settings).map(([key, value]) => `${key} = ${value}`)
  const file = path.join(data, 'switchyard.conf')
  const content = `# written by switchyard cluster\n${lines.join('\n')}\n`
  const before = await readFile(file, 'utf8').catch(() => '')
  if (before !== content) await writeFile(file, content)
  const main = path.join(data, 'postgresql.conf')
  const text = await readFile(main, 'utf8')
  if (!text.includes("include = 'switchyard.conf'"))
    await writeFile(main, `${text}\ninclude = 'switchyard.conf'\n`)
  return before !== content
}

const quote = (value: string) => `'${value.replaceAll("'", "''")}'`

/** Makes a running node read its configuration files again (ssl and its files can change this way). */
export async function reloadNode(ctx: NodeContext, node: PostgresNode): Promise<void> {
  await runChecked('node_reload_failed', ctx.binaries.pgCtl, ['reload', '-D', dataDir(ctx, node)], {
    user: ctx.user,
  })
}

export const replicaSlot = (node: PostgresNode) => `switchyard_${node.name.replaceAll('-', '_')}`

export async function isRunning(ctx: NodeContext, node: PostgresNode): Promise<boolean> {
  const data = dataDir(ctx, node)
  if (!existsSync(path.join(data, 'PG_VERSION'))) return false
  return (await run(ctx.binaries.pgCtl, ['status', '-D', data], { user: ctx.user })).code === 0
}

export async function startNode(ctx: NodeContext, node: PostgresNode): Promise<'started' | 'running'> {
  if (await isRunning(ctx, node)) return 'running'
  if (await portTaken(node.port)) {
    throw new SwitchyardError(
      'port_in_use',
      `${node.name}: port ${node.port} is taken by a process that is not this cluster's`,
    )
  }
  const log = nodeLog(ctx.home, node)
  await runChecked(
    'node_start_failed',
    ctx.binaries.pgCtl,
    ['start', '-D', dataDir(ctx, node), '-l', log, '-w', '-t', '120'],
    {
      user: ctx.user,
    },
  ).catch(async (error: SwitchyardError) => {
    const tail = (await readFile(log, 'utf8').catch(() => '')).trim().split('\n').slice(-5).join(' | ')
    throw new SwitchyardError(error.code, `${node.name} did not start: ${tail || error.message}`)
  })
  return 'started'
}

export async function stopNode(ctx: NodeContext, node: PostgresNode): Promise<'stopped' | 'not running'> {
  if (!(await isRunning(ctx, node))) return 'not running'
  await runChecked(
    'node_stop_failed',
    ctx.binaries.pgCtl,
    ['stop', '-D', dataDir(ctx, node), '-m', 'fast', '-w', '-t', '120'],
    {
      user: ctx.user,
    },
  )
  return 'stopped'
}

/** The database named in the node's URL, created on first boot. */
export async function ensureDatabase(node: PostgresNode): Promise<void> {
  const url = new URL(node.url)
  url.pathname = '/postgres'
  await withAdmin(url.toString(), async (sql) => {
    const [found] = await sql`select 1 from pg_database where datname = ${node.database}`
    if (!found) await sql`create database ${sql(node.database)}`
  })
}
