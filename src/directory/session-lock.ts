import type { SwitchyardError } from '../errors.ts'
import { openAdmin } from '../shard/connection.ts'

/** The directory session holding a lock: record writes can check the lock is still its own. */
export interface LockSession {
  /** Backend pid of the session (`pg_locks.pid`). */
  pid: number
}

/**
 * Runs `use` holding the session advisory lock `(hashtext(scope), hashtext(id))` in the directory, or
 * throws `busy()` when another session holds it. A crashed holder's lock goes with its connection, so a
 * crash never leaves the lock behind.
 *
 * The session is a client of its own (one connection), not one reserved from a pool: if it is cut,
 * postgres.js must not hand the dead connection back (a reserved one crashes the process on its next
 * query), and the unlock then runs on a new session, where it is a no-op. It must outlive the longest
 * holder (a copy of a large tenant, a whole plan): no idle timeout, no maximum lifetime.
 */
export async function withSessionLock<T>(
  directoryUrl: string,
  lock: { scope: string; id: string },
  busy: () => SwitchyardError,
  use: (session: LockSession) => Promise<T>,
): Promise<T> {
  const sql = openAdmin(directoryUrl, {
    max: 1,
    idle_timeout: 0,
    max_lifetime: 0,
    // The directory must notice a holder whose machine is gone (no FIN, no RST) within a minute, not
    // the kernel's two hours: until then its lock stands and nobody can take over.
    connection: {
      search_path: 'public',
      tcp_keepalives_idle: 20,
      tcp_keepalives_interval: 5,
      tcp_keepalives_count: 4,
    },
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
