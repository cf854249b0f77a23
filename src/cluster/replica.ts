import { existsSync } from 'node:fs'
import {
  chown,
  copyFile,
  lstat,
  mkdir,
  readdir,
  readlink,
  rename,
  rm,
  symlink,
  writeFile,
} from 'node:fs/promises'
import path from 'node:path'
import { withAdmin } from '../shard/connection.ts'
import type { PostgresNode } from './nodes.ts'
import { dataDir, type NodeContext, ownedDir, replicaSlot, writeServerConfig } from './postgres-node.ts'
import { runChecked } from './process.ts'

/**
 * A streaming standby of `node.primary`: a physical slot keeps the WAL it needs, a base backup gives it
 * the primary's files, standby.signal makes it follow. Built in a temporary folder, renamed when whole.
 */
export async function ensureReplicaData(ctx: NodeContext, node: PostgresNode): Promise<boolean> {
  const primary = node.primary
  if (!primary) throw new Error(`${node.name} has no primary`)
  const data = dataDir(ctx, node)
  // An existing standby gets the current settings (true when they changed).
  if (existsSync(path.join(data, 'PG_VERSION'))) return writeServerConfig(ctx, data, node)
  const building = `${data}.building`
  await rm(building, { recursive: true, force: true })
  await ownedDir(ctx, path.dirname(data))
  const slot = replicaSlot(node)
  await withAdmin(primary.url, async (sql) => {
    const [found] = await sql`select 1 from pg_replication_slots where slot_name = ${slot}`
    if (!found) await sql`select pg_create_physical_replication_slot(${slot}, true)`
  })
  if (ctx.binaries.pgBasebackup) await pgBasebackup(ctx, node, building, slot)
  else await lowLevelBackup(ctx, node, building)
  await writeFile(path.join(building, 'standby.signal'), '')
  await writeServerConfig(ctx, building, node)
  if (ctx.user) await chownTree(building, ctx.user.uid, ctx.user.gid)
  await rename(building, data)
  return false
}

async function pgBasebackup(ctx: NodeContext, node: PostgresNode, target: string, slot: string) {
  const primary = node.primary as PostgresNode
  await ownedDir(ctx, target)
  await runChecked(
    'replica_backup_failed',
    ctx.binaries.pgBasebackup as string,
    [
      '-D',
      target,
      '-h',
      '127.0.0.1',
      '-p',
      String(primary.port),
      '-U',
      primary.user,
      '-X',
      'stream',
      '-S',
      slot,
    ],
    { user: ctx.user, env: { PGPASSWORD: primary.password } },
  )
}

/** pg_backup_start / copy / pg_backup_stop on one connection, as the PostgreSQL docs describe. */
async function lowLevelBackup(ctx: NodeContext, node: PostgresNode, target: string) {
  const primary = node.primary as PostgresNode
  const source = dataDir(ctx, primary)
  await withAdmin(primary.url, async (sql) => {
    await sql`select pg_backup_start(${`switchyard ${node.name}`}, true)`
    let stopped = false
    try {
      await copyTree(source, target, EXCLUDED)
      const [stop] = await sql<{ labelfile: string; spcmapfile: string | null }[]>`
        select labelfile, spcmapfile from pg_backup_stop(false)`
      stopped = true
      await writeFile(path.join(target, 'backup_label'), stop?.labelfile ?? '')
      if (stop?.spcmapfile) await writeFile(path.join(target, 'tablespace_map'), stop.spcmapfile)
    } finally {
      if (!stopped) await sql`select pg_backup_stop(false)`.catch(() => {})
    }
  })
  for (const dir of ['pg_wal/archive_status', 'pg_wal/summaries'])
    await mkdir(path.join(target, dir), { recursive: true })
}

/** What a base backup leaves out (PostgreSQL docs, "Making a Base Backup Using the Low Level API"). */
const EXCLUDED = new Set([
  'postmaster.pid',
  'postmaster.opts',
  'standby.signal',
  'pg_wal',
  'pg_replslot',
  'pg_dynshmem',
  'pg_notify',
  'pg_serial',
  'pg_snapshots',
  'pg_stat_tmp',
  'pg_subtrans',
  'log',
])

/** Copies a live data folder: files may vanish mid-copy (temporary files), which is fine for a backup. */
async function copyTree(from: string, to: string, excludedContents: Set<string>, depth = 0): Promise<void> {
  await mkdir(to, { recursive: true, mode: 0o700 })
  for (const entry of await readdir(from).catch(() => [] as string[])) {
    const source = path.join(from, entry)
    const target = path.join(to, entry)
    const stat = await lstat(source).catch(() => undefined)
    if (!stat) continue
    if (depth === 0 && excludedContents.has(entry)) {
      if (stat.isDirectory()) await mkdir(target, { mode: 0o700 })
      continue
    }
    if (entry.startsWith('pgsql_tmp')) continue
    if (stat.isDirectory()) await copyTree(source, target, excludedContents, depth + 1)
    else if (stat.isSymbolicLink()) await symlink(await readlink(source), target)
    else await copyFile(source, target).catch(ignoreVanished)
  }
}

function ignoreVanished(error: NodeJS.ErrnoException) {
  if (error.code !== 'ENOENT') throw error
}

async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await chown(dir, uid, gid)
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const at = path.join(dir, entry.name)
    if (entry.isDirectory()) await chownTree(at, uid, gid)
    else await chown(at, uid, gid)
  }
}
