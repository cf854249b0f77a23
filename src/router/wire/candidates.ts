import type { Directory } from '../../directory/connection.ts'
import { type ScramCandidate, scramCandidates } from '../../directory/keys.ts'
import { SwitchyardError } from '../../errors.ts'
import type { Logger } from '../../log.ts'

type Candidates = { salt: Buffer; iterations: number; keys: ScramCandidate[] }

/** How long a tenant's login candidates are reused: a new or revoked key counts for logins within it. */
const FRESH_MS = 1000
/** How long a proven tenant's keys stand in while the directory is too busy to read them again. */
const STALE_MS = 30_000
/** Tenants whose candidates are kept at once; past it the oldest goes. */
const MAX_TENANTS = 10_000
/** Directory loads for logins at once, whatever the number of clients trying: the rest wait their turn. */
const MAX_LOADS = 4
/** Logins that may wait for one of those loads. */
const MAX_WAITING = 64

/**
 * The keys a SCRAM login is checked against, per tenant, loaded at most once a second and at most
 * MAX_LOADS at a time: a login is sent before anything is proven, so clients that only try logins
 * (random tenants, wrong keys) cost the directory a bounded load, not two queries per attempt.
 */
export function createLoginCandidates(directory: Directory, logger: Logger) {
  const cache = new Map<string, { at: number; candidates: Promise<Candidates> }>()
  let loading = 0
  const waiting: (() => void)[] = []

  async function load(tenant: string): Promise<Candidates> {
    if (loading >= MAX_LOADS) {
      // Logins past these wait no longer: a flood of made-up tenants cannot queue ahead of everyone.
      if (waiting.length >= MAX_WAITING)
        throw new SwitchyardError(
          'directory_unavailable',
          'too many logins are being checked; retry shortly',
          {
            retryAfterSeconds: 1,
          },
        )
      await new Promise<void>((resolve) => waiting.push(resolve))
    }
    loading++
    try {
      return await scramCandidates(directory, tenant)
    } catch (error) {
      // The directory's own message (hosts, SQL) is for the log, not for a client that has proven nothing.
      logger.error({ err: error, tenant }, 'PostgreSQL login: the directory could not be read')
      throw new SwitchyardError('directory_unavailable', 'cannot check the login now; retry shortly', {
        retryAfterSeconds: 1,
      })
    } finally {
      loading--
      waiting.shift()?.()
    }
  }

  /** The keys of tenants that logged in (proven, not just claimed), for when the directory is too busy. */
  const proven = new Map<string, { at: number; candidates: Candidates }>()

  function loadFresh(tenant: string): Promise<Candidates> {
    const now = Date.now()
    const known = cache.get(tenant)
    if (known && now - known.at < FRESH_MS) return known.candidates
    // The oldest entry goes: made-up tenants churn the cache, they do not empty it.
    if (cache.size >= MAX_TENANTS) cache.delete(cache.keys().next().value as string)
    const candidates = load(tenant)
    cache.set(tenant, { at: now, candidates })
    // A failed load is not kept: the next login asks the directory again.
    candidates.catch(() => {
      if (cache.get(tenant)?.candidates === candidates) cache.delete(tenant)
    })
    return candidates
  }

  return {
    /**
     * The keys to check a login for `tenant` against. While logins flood the directory's queue, a tenant
     * that logged in within STALE_MS is checked against the keys it had then (as HTTP serves keys it has
     * seen for its key cache's TTL), so made-up logins cannot lock real tenants out.
     */
    async forTenant(tenant: string): Promise<Candidates> {
      try {
        return await loadFresh(tenant)
      } catch (error) {
        const known = proven.get(tenant)
        if (known && Date.now() - known.at < STALE_MS) return known.candidates
        throw error
      }
    },
    /** A login for `tenant` was proven against these keys. */
    proven(tenant: string, candidates: Candidates) {
      proven.delete(tenant)
      if (proven.size >= MAX_TENANTS) proven.delete(proven.keys().next().value as string)
      proven.set(tenant, { at: Date.now(), candidates })
    },
  }
}

export type LoginCandidates = ReturnType<typeof createLoginCandidates>
