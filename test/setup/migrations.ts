import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

/**
 * A copy of a drizzle migrations folder whose journal stops at `last`: the schema of an older release,
 * to test (and time) what upgrading a shard that holds rows does. The caller removes the folder.
 */
export function migrationsUpTo(folder: string, last: string): string {
  const copy = mkdtempSync(path.join(tmpdir(), 'sy-migrations-'))
  cpSync(folder, copy, { recursive: true })
  const journalFile = path.join(copy, 'meta', '_journal.json')
  const journal = JSON.parse(readFileSync(journalFile, 'utf8')) as { entries: { tag: string }[] }
  const keep = journal.entries.findIndex((entry) => entry.tag === last)
  if (keep < 0) throw new Error(`no migration ${last} in ${folder}`)
  journal.entries = journal.entries.slice(0, keep + 1)
  writeFileSync(journalFile, JSON.stringify(journal))
  return copy
}
