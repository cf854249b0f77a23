import postgres from 'postgres'

export type Sql = postgres.Sql
/** What a pool and a transaction both run: for functions that work inside or outside `begin`. */
export type Queries = postgres.ISql
/** A piece of SQL built with the `sql` tag, to be placed inside another query. */
export type Fragment = postgres.Fragment

/** SQL text of a list of the project's own constants, `('a', 'b')`: never for input (nothing is escaped). */
export const constantList = (values: readonly string[]) =>
  `(${values.map((value) => `'${value}'`).join(', ')})`

/**
 * A short-lived admin connection: opened, used, always closed. Notices are not for operators. The
 * search_path is pinned to `public`: the default "$user" would put an admin named `switchyard` into
 * the shard's `switchyard` schema.
 */
export function openAdmin(url: string, options: postgres.Options<Record<string, never>> = {}): Sql {
  return postgres(url, {
    max: 1,
    onnotice: () => {},
    connect_timeout: 5,
    idle_timeout: 5,
    connection: { search_path: 'public' },
    ...options,
  })
}

/**
 * A session that must last as long as its holder needs it (a lock, an exported snapshot): one
 * connection of its own, never closed for being idle or old. Its own client, not a connection reserved
 * from a pool: if it is cut, postgres.js must not hand the dead connection back (a reserved one crashes
 * the process on its next query).
 */
export function openSession(url: string, connection: Record<string, string | number> = {}): Sql {
  return openAdmin(url, {
    max: 1,
    idle_timeout: 0,
    max_lifetime: 0,
    connection: { search_path: 'public', ...connection },
  })
}

/** The innermost message of an error: drizzle wraps the server's own words in `cause`. */
export function rootMessage(error: unknown): string {
  let current = error as { message?: string; cause?: unknown }
  while (current?.cause) current = current.cause as { message?: string; cause?: unknown }
  return current?.message ?? String(error)
}

export async function withAdmin<T>(url: string, use: (sql: Sql) => Promise<T>): Promise<T> {
  const sql = openAdmin(url)
  try {
    return await use(sql)
  } finally {
    await sql.end({ timeout: 5 })
  }
}

/** True when a server answers at `url` within the timeout. */
export async function answers(url: string, timeoutSeconds = 2): Promise<boolean> {
  const sql = openAdmin(url, { connect_timeout: timeoutSeconds })
  try {
    await sql`select 1`
    return true
  } catch {
    return false
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {})
  }
}
