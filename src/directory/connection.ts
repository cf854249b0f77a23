import { drizzle } from 'drizzle-orm/postgres-js'
import type { Topology } from '../config/topology.ts'
import { openAdmin, type Sql } from '../shard/connection.ts'
import * as schema from './schema.ts'

export type DirectoryDb = ReturnType<typeof drizzle<typeof schema>>

export interface Directory {
  sql: Sql
  db: DirectoryDb
  close(): Promise<void>
}

export function openDirectory(url: string, max = 4): Directory {
  const sql = openAdmin(url, { max, idle_timeout: 30 })
  return { sql, db: drizzle(sql, { schema }), close: () => sql.end({ timeout: 5 }) }
}

export async function withDirectory<T>(
  topology: Topology,
  use: (directory: Directory) => Promise<T>,
): Promise<T> {
  const directory = openDirectory(topology.directory)
  try {
    return await use(directory)
  } finally {
    await directory.close()
  }
}
