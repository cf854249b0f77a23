/**
 * pgpool-II in front of shard-1's primary and replica, and pgbench (C, the lightest PostgreSQL client
 * there is) to drive it: the peer a team would pick instead of the router. Streaming-replication mode,
 * reads balanced to the replica only (weight 0 on the primary), one pgpool child per client connection.
 * pgpool-II speaks to the nodes with SCRAM: it needs the logins' passwords in its pool_passwd (TEXT),
 * in a mode-0600 file of a temporary folder removed at the end.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { reapedChildrenUs, treeUsage, type UsageProbe } from './proc.ts'

const run = promisify(execFile)

/** A program on the PATH or in the sbin folders Debian installs daemons to (not on every user's PATH). */
function findProgram(name: string): string | undefined {
  const folders = [...(process.env.PATH ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin']
  return folders
    .filter((folder) => path.isAbsolute(folder))
    .map((folder) => path.join(folder, name))
    .find((candidate) => existsSync(candidate))
}

/** The pgpool binary, or undefined: PGPOOL_MISSING says how to get it. */
export const findPgpool = () => findProgram('pgpool')
export const PGPOOL_MISSING = 'pgpool-II not found: apt-get install -y pgpool2 (its rows are left out)'

/** pgbench drives pgpool-II and the replica directly; without it those rows are left out. */
export const findPgbench = () => findProgram('pgbench')
export const PGBENCH_MISSING =
  'pgbench not found: apt-get install -y postgresql (Debian ships pgbench with the server); the pgbench rows are left out'

export interface Login {
  user: string
  password: string
}

export interface Selects {
  primary: number
  replica: number
}

export interface RunningPgpool {
  port: number
  pid: number
  /** pgpool-II's processes: the parent and its children. */
  usage: UsageProbe
  /** `SHOW pool_nodes`: which node served how many SELECTs, as psql prints it. */
  nodes(login: Login, database: string): Promise<string>
  /** SELECTs pgpool-II has sent to each node so far (select_cnt of `SHOW pool_nodes`). */
  selects(login: Login, database: string): Promise<Selects>
  stop(): Promise<void>
}

const node = (url: string) => {
  const parsed = new URL(url)
  return { host: parsed.hostname, port: Number(parsed.port), database: parsed.pathname.slice(1) }
}

export async function startPgpool(options: {
  binary: string
  home: string
  port: number
  pcpPort: number
  primaryUrl: string
  replicaUrl: string
  logins: Login[]
  /** Client connections it must take at once (num_init_children). */
  clients: number
}): Promise<RunningPgpool> {
  const dir = path.join(options.home, 'pgpool')
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const primary = node(options.primaryUrl)
  const replica = node(options.replicaUrl)
  const conf = [
    `listen_addresses = '127.0.0.1'`,
    `port = ${options.port}`,
    `pcp_listen_addresses = '127.0.0.1'`,
    `pcp_port = ${options.pcpPort}`,
    `unix_socket_directories = '${dir}'`,
    `pcp_socket_dir = '${dir}'`,
    `pid_file_name = '${dir}/pgpool.pid'`,
    `logdir = '${dir}'`,
    `log_destination = 'stderr'`,
    `backend_clustering_mode = 'streaming_replication'`,
    `backend_hostname0 = '${primary.host}'`,
    `backend_port0 = ${primary.port}`,
    `backend_weight0 = 0`,
    `backend_flag0 = 'DISALLOW_TO_FAILOVER'`,
    `backend_hostname1 = '${replica.host}'`,
    `backend_port1 = ${replica.port}`,
    `backend_weight1 = 1`,
    `backend_flag1 = 'DISALLOW_TO_FAILOVER'`,
    `num_init_children = ${options.clients + 4}`,
    `max_pool = 1`,
    `child_life_time = 0`,
    `connection_life_time = 0`,
    `client_idle_limit = 0`,
    `load_balance_mode = on`,
    // A SELECT calling a function not in this list goes to the primary, and the rest of its transaction
    // with it: the tenant-safe script's switchyard.enter() would take its point read there. pgpool-II
    // matches the name as written, so the schema-qualified one is needed (its docs: list both forms).
    `read_only_function_list = 'enter,current_tenant,switchyard.enter,switchyard.current_tenant'`,
    // At start pgpool-II asks each node pg_is_in_recovery() as this login (its password from pool_passwd)
    // to know which is the primary; no periodic checks after that.
    `sr_check_user = '${(options.logins[0] as Login).user}'`,
    `sr_check_password = ''`,
    `sr_check_period = 0`,
    `health_check_period = 0`,
    `failover_on_backend_error = off`,
    `enable_pool_hba = on`,
    `pool_passwd = '${dir}/pool_passwd'`,
    `memory_cache_enabled = off`,
  ].join('\n')
  await writeFile(path.join(dir, 'pgpool.conf'), `${conf}\n`)
  await writeFile(path.join(dir, 'pcp.conf'), '')
  await writeFile(
    path.join(dir, 'pool_hba.conf'),
    'host all all 127.0.0.1/32 scram-sha-256\nlocal all all scram-sha-256\n',
  )
  const passwd = path.join(dir, 'pool_passwd')
  await writeFile(passwd, options.logins.map((login) => `${login.user}:TEXT${login.password}\n`).join(''), {
    mode: 0o600,
  })
  await chmod(passwd, 0o600)
  const child: ChildProcess = spawn(
    options.binary,
    [
      '-n',
      '-f',
      path.join(dir, 'pgpool.conf'),
      '-F',
      path.join(dir, 'pcp.conf'),
      '-a',
      path.join(dir, 'pool_hba.conf'),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  )
  let log = ''
  child.stderr?.on('data', (chunk: Buffer) => {
    log = (log + chunk.toString()).slice(-20_000)
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const login = options.logins[0] as Login
  // Ready once it answers a query (its children start with it).
  for (let tries = 0; ; tries++) {
    try {
      await psql(options.port, login, primary.database, 'select 1')
      break
    } catch (error) {
      if (child.exitCode !== null || tries > 100)
        throw new Error(`pgpool-II did not start: ${(error as Error).message}\n${log.slice(-3000)}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  return {
    port: options.port,
    pid: child.pid as number,
    usage: treeUsage(child.pid as number),
    nodes: (who, database) => psql(options.port, who, database, 'show pool_nodes'),
    selects: async (who, database) =>
      selectCounts(await psql(options.port, who, database, 'show pool_nodes')),
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGINT')
        await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 5000))])
        if (child.exitCode === null) child.kill('SIGKILL')
      }
    },
  }
}

/** select_cnt by role from psql's unaligned `SHOW pool_nodes` (header: node_id|hostname|…|role|…|select_cnt|…). */
function selectCounts(table: string): Selects {
  const [header = '', ...lines] = table.trim().split('\n')
  const columns = header.split('|')
  const role = columns.indexOf('role')
  const count = columns.indexOf('select_cnt')
  if (role === -1 || count === -1) throw new Error(`SHOW pool_nodes without role/select_cnt:\n${table}`)
  const selects: Selects = { primary: 0, replica: 0 }
  for (const line of lines) {
    const fields = line.split('|')
    if (fields.length !== columns.length) continue
    const n = Number(fields[count])
    if (fields[role] === 'primary') selects.primary += n
    else selects.replica += n
  }
  return selects
}

async function psql(port: number, login: Login, database: string, sql: string): Promise<string> {
  const { stdout } = await run(
    'psql',
    ['-X', '-A', '-h', '127.0.0.1', '-p', String(port), '-U', login.user, '-d', database, '-c', sql],
    { env: { ...process.env, PGPASSWORD: login.password, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '3' } },
  )
  return stdout
}

export interface PgbenchResult {
  requests: number
  seconds: number
  errors: number
  p50Ms: number
  p99Ms: number
  maxMs: number
  clientCpuMs: number
}

/**
 * pgbench with a script (several: each transaction runs one of them, picked at random), prepared statements, `connections` clients on 2 threads, for `seconds`; the
 * latencies from its per-transaction log, its CPU from this process's reaped children. A warm-up run
 * goes first and is not counted.
 */
export async function pgbench(options: {
  home: string
  port: number
  login: Login
  database: string
  script: string | string[]
  connections: number
  warmupSeconds: number
  seconds: number
  /** Called once the warm-up run is over, right before the measured one starts. */
  onMeasuring?: () => void
}): Promise<PgbenchResult> {
  const dir = await freshDir(path.join(options.home, 'pgbench'))
  const scripts = typeof options.script === 'string' ? [options.script] : options.script
  const scriptFiles = scripts.map((_, i) => path.join(dir, `script-${i}.sql`))
  // The tenant-safe script carries the router capability: owner-only, removed with the folder.
  for (const [i, script] of scripts.entries())
    await writeFile(scriptFiles[i] as string, script, { mode: 0o600 })
  const args = (seconds: number, log: boolean) => [
    '-n',
    '-M',
    'prepared',
    '-c',
    String(options.connections),
    '-j',
    String(Math.min(2, options.connections)),
    '-T',
    String(seconds),
    ...scriptFiles.flatMap((file) => ['-f', file]),
    ...(log ? ['-l', `--log-prefix=${path.join(dir, 'tx')}`] : []),
    '-h',
    '127.0.0.1',
    '-p',
    String(options.port),
    '-U',
    options.login.user,
    options.database,
  ]
  const env = { ...process.env, PGPASSWORD: options.login.password, PGSSLMODE: 'disable' }
  if (options.warmupSeconds > 0)
    await run('pgbench', args(Math.max(1, Math.round(options.warmupSeconds)), false), { env })
  // The backends of the warm-up's connections exit as it ends: let the servers reap them first.
  await settle()
  options.onMeasuring?.()
  const cpuBefore = reapedChildrenUs()
  const { stdout } = await run('pgbench', args(Math.max(1, Math.round(options.seconds)), true), {
    env,
    maxBuffer: 10 * 2 ** 20,
  })
  const clientCpuMs = (reapedChildrenUs() - cpuBefore) / 1000
  await settle()
  const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0)
  const latencies: number[] = []
  for (const file of await readdir(dir)) {
    if (!file.startsWith('tx')) continue
    for (const line of (await readFile(path.join(dir, file), 'utf8')).split('\n')) {
      // client_id transaction_no time_us script_no epoch epoch_us
      const micros = Number(line.split(' ')[2])
      if (Number.isFinite(micros) && line) latencies.push(micros)
    }
  }
  latencies.sort((a, b) => a - b)
  const at = (p: number) => (latencies[Math.max(0, Math.ceil((p / 100) * latencies.length) - 1)] ?? 0) / 1000
  return {
    requests: latencies.length,
    seconds: Math.max(1, Math.round(options.seconds)),
    errors: failed,
    p50Ms: at(50),
    p99Ms: at(99),
    maxMs: (latencies.at(-1) ?? 0) / 1000,
    clientCpuMs,
  }
}

const settle = () => new Promise((resolve) => setTimeout(resolve, 300))

async function freshDir(dir: string): Promise<string> {
  await run('rm', ['-rf', dir])
  await mkdir(dir, { recursive: true, mode: 0o700 })
  return dir
}
