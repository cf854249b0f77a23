import postgres from 'postgres'

export type Sql = postgres.Sql

/** A short-lived admin connection: opened, used, always closed. Notices are not for operators. */
export function openAdmin(url: string, options: postgres.Options<Record<string, never>> = {}): Sql {
  return postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 5, idle_timeout: 5, ...options })
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
