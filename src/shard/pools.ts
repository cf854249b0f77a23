import { readFileSync } from 'node:fs'
import path from 'node:path'
import type { RouterTls } from '../config/topology.ts'
import { SwitchyardError } from '../errors.ts'
import { logger } from '../log.ts'
import type { ShardNode } from './nodes.ts'
import {
  ROUTER_OWN_SETTINGS,
  type RoleSetting,
  resetRoleSetting,
  SESSION_OWN_DEFAULTS,
} from './role-settings.ts'
import type { TlsOptions, WireConnection } from './wire/connection.ts'
import { createWirePool, type WirePool } from './wire/pool.ts'

export interface PoolOptions {
  /** Connections per node; the seed keeps pools at 20–50. */
  size: number
  statementTimeoutMs: number
  /**
   * The tenant schemas (`tenantSchema.schemas`, default public): the sessions' search_path, where the
   * statement policy expects unqualified names to resolve.
   */
  searchPath?: readonly string[]
  /** TLS to every node (`router.tls`); sslmode prefer when left out. */
  tls?: RouterTls | undefined
}

export interface NodePools {
  nodes: ShardNode[]
  node(name: string): ShardNode
  pool(name: string): WirePool
  close(): Promise<void>
}

/** Connections each pool keeps open from the start, so a cutover to a shard never waits for logins. */
const WARM_CONNECTIONS = 2

/**
 * One pool per node, logged in as the router's role, on the router's own wire client: a transaction
 * goes out as one pipeline with one Sync (postgres.js ends every query with its own Sync). Statements
 * are prepared per connection and per SQL text; values travel as text both ways.
 */
export function createPools(nodes: ShardNode[], options: PoolOptions): NodePools {
  const byName = new Map(nodes.map((node) => [node.name, node]))
  const tls = tlsOptions(options.tls)
  const pools = new Map(
    nodes.map((node) => [
      node.name,
      createWirePool({
        url: node.url,
        name: node.name,
        max: options.size,
        idleTimeoutMs: 60_000,
        minIdle: WARM_CONNECTIONS,
        connectTimeoutMs: 3000,
        tls,
        // Startup parameters outrank ALTER ROLE / ALTER DATABASE defaults: the text the router parses
        // (dates, intervals) has one format whatever a role's defaults say.
        parameters: {
          DateStyle: 'ISO, MDY',
          IntervalStyle: 'postgres',
          application_name: 'switchyard-router',
          statement_timeout: String(options.statementTimeoutMs),
          search_path: (options.searchPath ?? ['public'])
            .map((schema) => `"${schema.replaceAll('"', '""')}"`)
            .join(', '),
        },
        prepare: (connection) => startsClean(connection, node),
      }),
    ]),
  )
  return {
    nodes,
    node(name) {
      const node = byName.get(name)
      if (!node) throw new Error(`unknown node ${name}`)
      return node
    },
    pool(name) {
      const pool = pools.get(name)
      if (!pool) throw new Error(`unknown node ${name}`)
      return pool
    },
    async close() {
      await Promise.all([...pools.values()].map((pool) => pool.close(10_000)))
    },
  }
}

/**
 * A new router session must start as its startup parameters say. Any role may give itself session
 * defaults (`ALTER ROLE current_user SET …`, refused by the statement policy, possible for SQL that got
 * past it): every new session would start with them and RESET ALL would return to them. Found on a
 * primary, exactly those are reset (a role may reset what it may set) and the session is opened again; a
 * replica gets the reset when the primary's replays. Defaults only a superuser could have set (an
 * operator's `temp_file_limit`) are the operator's: kept, and no reason to refuse. False: close this
 * session and open another.
 */
async function startsClean(connection: WireConnection, node: ShardNode): Promise<boolean> {
  // The catalog, not pg_settings' sources: a default that a startup parameter masks is still reset.
  // And pg_settings too: the catalog may have been reset since this session started with its defaults.
  const url = new URL(node.url)
  const [catalog, session] = await connection.run([
    { sql: ROUTER_OWN_SETTINGS, params: [decodeURIComponent(url.username)] },
    { sql: SESSION_OWN_DEFAULTS, params: [] },
  ])
  const own: RoleSetting[] = (catalog?.rows ?? []).map(([name, inDatabase]) => ({
    name: name ?? '',
    inDatabase: inDatabase === 't',
  }))
  const inEffect = (session?.rows ?? []).map(([name]) => name ?? '')
  if (own.length === 0 && inEffect.length === 0) return true
  logger.warn(
    { node: node.name, settings: own.map((setting) => setting.name), session: inEffect },
    'the router role has session defaults of its own (ALTER ROLE … SET): resetting them; run `switchyard doctor`',
  )
  if (node.role === 'primary' && own.length > 0) {
    const database = decodeURIComponent(url.pathname.slice(1))
    await connection.execute(
      own.map((setting) => resetRoleSetting('current_user', database, setting)).join('; '),
    )
  }
  return false
}

/** The CA is read once, here, for every node's pool: a file that cannot be read fails at start. */
function tlsOptions(config: RouterTls | undefined): TlsOptions {
  if (!config) return { mode: 'prefer', channelBinding: 'prefer' }
  const options: TlsOptions = { mode: config.mode, channelBinding: config.channelBinding }
  if (config.rootCert === undefined) return options
  const file = path.resolve(config.rootCert)
  try {
    options.ca = readFileSync(file)
  } catch (error) {
    throw new SwitchyardError(
      'config_invalid',
      `router.tls.rootCert: cannot read ${file}: ${(error as Error).message}`,
    )
  }
  return options
}
