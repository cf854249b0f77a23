import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { SwitchyardError } from '../errors.ts'
import { type Topology, type TopologyInput, topologySchema } from './topology.ts'

/** Environment variables that override the config file, and the field each one sets. */
export const ENV_OVERRIDES = {
  SWITCHYARD_DIRECTORY_URL: ['directory'],
  SWITCHYARD_REDIS_URL: ['redis'],
  SWITCHYARD_ROUTER_PORT: ['router', 'port'],
  SWITCHYARD_ROUTER_HOST: ['router', 'host'],
  SWITCHYARD_PG_PORT: ['router', 'pgPort'],
  SWITCHYARD_PG_TLS_CERT: ['router', 'pgTls', 'certFile'],
  SWITCHYARD_PG_TLS_KEY: ['router', 'pgTls', 'keyFile'],
  SWITCHYARD_ROUTER_PASSWORD: ['router', 'role', 'password'],
  SWITCHYARD_SHARDS: ['shards'],
  SWITCHYARD_RATE_LIMIT: ['router', 'rateLimitOverride'],
  SWITCHYARD_STATEMENTS_PER_API_REQUEST: ['router', 'statementsPerApiRequest'],
  SWITCHYARD_POOL_SIZE: ['router', 'poolSize'],
  SWITCHYARD_REQUEST_TIMEOUT_MS: ['router', 'requestTimeoutMs'],
  SWITCHYARD_SHARD_SSLMODE: ['router', 'tls', 'mode'],
  SWITCHYARD_SHARD_SSLROOTCERT: ['router', 'tls', 'rootCert'],
  SWITCHYARD_SHARD_CHANNEL_BINDING: ['router', 'tls', 'channelBinding'],
} as const

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.SWITCHYARD_CONFIG ?? 'shards.config.ts')
}

/** Loads `shards.config.ts` (or the file named by SWITCHYARD_CONFIG), applies env overrides, validates. */
export async function loadTopology(env: NodeJS.ProcessEnv = process.env): Promise<Topology> {
  const file = configPath(env)
  return parseTopology(await readConfigFile(file), file, env)
}

export function parseTopology(
  input: unknown,
  source: string,
  env: NodeJS.ProcessEnv = process.env,
): Topology {
  const { merged, fromEnv } = applyEnv(input, source, env)
  const result = topologySchema.safeParse(merged)
  if (result.success) return result.data
  const problems = result.error.issues.map((issue) => {
    const field = issue.path.map(String).join('.') || '(root)'
    const variable = fromEnv.find(([, at]) => field === at.join('.') || field.startsWith(`${at.join('.')}.`))
    return `${field}${variable ? ` (from ${variable[0]})` : ''}: ${issue.message}`
  })
  throw new SwitchyardError('config_invalid', `invalid topology in ${source}: ${problems.join('; ')}`, {
    problems,
  })
}

async function readConfigFile(file: string): Promise<unknown> {
  try {
    if (file.endsWith('.json')) return JSON.parse(await readFile(file, 'utf8'))
    const module = (await import(pathToFileURL(file).href)) as { default?: unknown }
    if (module.default === undefined) throw new Error('it has no default export')
    return module.default
  } catch (error) {
    throw new SwitchyardError(
      'config_unreadable',
      `cannot load topology from ${file}: ${(error as Error).message}`,
    )
  }
}

function applyEnv(input: unknown, source: string, env: NodeJS.ProcessEnv) {
  const merged = structuredClone((input ?? {}) as Record<string, unknown>) as Record<string, unknown>
  const fromEnv: [string, readonly string[]][] = []
  for (const [variable, at] of Object.entries(ENV_OVERRIDES)) {
    const raw = env[variable]
    if (raw === undefined) continue
    fromEnv.push([variable, at])
    setPath(merged, at, parseEnvValue(variable, raw, source))
  }
  return { merged: merged as TopologyInput, fromEnv }
}

function parseEnvValue(variable: string, raw: string, source: string): unknown {
  if (variable === 'SWITCHYARD_REDIS_URL' && raw === '') return undefined
  if (variable !== 'SWITCHYARD_SHARDS') return raw
  try {
    return JSON.parse(raw)
  } catch {
    throw new SwitchyardError(
      'config_invalid',
      `invalid topology in ${source}: SWITCHYARD_SHARDS is not JSON`,
    )
  }
}

function setPath(target: Record<string, unknown>, at: readonly string[], value: unknown): void {
  let node = target
  for (const key of at.slice(0, -1)) {
    const next = node[key]
    node[key] = typeof next === 'object' && next !== null ? next : {}
    node = node[key] as Record<string, unknown>
  }
  const last = at[at.length - 1] as string
  if (value === undefined) delete node[last]
  else node[last] = value
}
