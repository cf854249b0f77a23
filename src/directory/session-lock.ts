import type { SwitchyardError } from '../errors.ts'
import { type Fragment, openSession, type Queries } from '../shard/connection.ts'

/** The directory session holding a lock: record writes can check the lock is still its own. */
export interface LockSession {
  /** Backend pid of the session (`pg_locks.pid`). */
  pid: number
}

/**
 * Runs `use` holding the session advisory lock `(hashtext(scope), hashtext(id))` in the directory, or
 * throws `busy()` when another session holds it. A crashed holder's lock goes with its connection, so a
 * crash never leaves the lock behind. The session (`openSession`) outlives the longest holder (a copy of
 * a large tenant, a whole plan); if it is cut, the unlock runs on a new session, where it is a no-op.
 */
export async function withSessionLock<T>(
  directoryUrl: string,
  lock: { scope: string; id: string },
  busy: () => SwitchyardError,
  use: (session: LockSession) => Promise<T>,
): Promise<T> {
  // The directory must notice a holder whose machine is gone (no FIN, no RST) within a minute, not the
  // kernel's two hours: until then its lock stands and nobody can take over.
  const sql = openSession(directoryUrl, {
    tcp_keepalives_idle: 20,
    tcp_keepalives_interval: 5,
    tcp_keepalives_count: 4,
  })
  try {
    const [got] = await sql<{ locked: boolean; pid: number }[]>`
      select pg_try_advisory_lock(hashtext(${lock.scope}), hashtext(${lock.id})) as locked,
             pg_backend_pid() as pid`
    if (!got?.locked) throw busy()
    try {
      return await use({ pid: got.pid })
    } finally {
      await sql`select pg_advisory_unlock(hashtext(${lock.scope}), hashtext(${lock.id}))`.catch(() => {})
    }
  } finally {
    await sql.end({ timeout: 5 })
  }
}

/**
 * SQL condition: the session `pid` still holds `lock` (as `withSessionLock` took it), or with no `pid`,
 * any session does. A holder whose session ended (a network cut, a directory restart) may live on while
 * another process takes over; writes guarded by this fail instead of acting on what it no longer holds.
 * The lock's id may be a fragment (a column), to ask about every row of a query at once.
 */
export const stillHeld = (sql: Queries, lock: { scope: string; id: string | Fragment }, pid?: number) => sql`
  exists (select 1 from pg_locks l
          where l.locktype = 'advisory' and l.granted ${pid === undefined ? sql`` : sql`and l.pid = ${pid}`}
            and l.classid = hashtext(${lock.scope})::oid and l.objid = hashtext(${lock.id})::oid
            and l.objsubid = 2)`
