import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { drizzle } from 'drizzle-orm/postgres-js'
import { migrate } from 'drizzle-orm/postgres-js/migrator'
import type { Sql } from './connection.ts'

/** A folder of drizzle-kit migrations and the table that records which of them a database has. */
export interface MigrationSet {
  folder: string
  table: string
}

export const CORE_MIGRATIONS: MigrationSet = {
  folder: fileURLToPath(new URL('./migrations', import.meta.url)),
  table: 'switchyard_shard',
}

/** The last migration's tag in a folder (from drizzle-kit's journal): what "up to date" means. */
export function latestTag(set: MigrationSet): string {
  const journal = JSON.parse(readFileSync(path.join(set.folder, 'meta', '_journal.json'), 'utf8')) as {
    entries: { tag: string }[]
  }
  return journal.entries.at(-1)?.tag ?? 'none'
}

/**
 * Applies what is missing of `set`, under an advisory lock so two `migrate` runs never interleave.
 * Returns how many migrations it applied.
 */
export async function applyMigrations(sql: Sql, set: MigrationSet): Promise<number> {
  const lock = 7_340_001
  await sql`select pg_advisory_lock(${lock})`
  try {
    const before = await countApplied(sql, set)
    await migrate(drizzle(sql), {
      migrationsFolder: set.folder,
      migrationsTable: set.table,
      migrationsSchema: 'drizzle',
    })
    return (await countApplied(sql, set)) - before
  } finally {
    await sql`select pg_advisory_unlock(${lock})`
  }
}

async function countApplied(sql: Sql, set: MigrationSet): Promise<number> {
  const [table] = await sql`select to_regclass(${`drizzle.${set.table}`}) as oid`
  if (!table?.oid) return 0
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from ${sql('drizzle')}.${sql(set.table)}`
  return row?.n ?? 0
}
