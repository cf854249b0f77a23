import type { Directory } from '../../directory/connection.ts'
import { type ScramCandidate, scramCandidates } from '../../directory/keys.ts'
import { SwitchyardError } from '../../errors.ts'
import type { Logger } from '../../log.ts'

type Candidates = { salt: Buffer; iterations: number; keys: ScramCandidate[] }

/** How long a tenant's login candidates are reused: a new or revoked key counts for logins within it. */
const FRESH_MS = 1000
/** Tenants whose candidates are kept at once; past it the cache starts over. */
const MAX_TENANTS = 10_000
/** Directory loads for logins at once, whatever the number of clients trying: the rest wait their turn. */
const MAX_LOADS = 4

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
    if (loading >= MAX_LOADS) await new Promise<void>((resolve) => waiting.push(resolve))
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

  return function candidatesFor(tenant: string): Promise<Candidates> {
    const now = Date.now()
    const known = cache.get(tenant)
    if (known && now - known.at < FRESH_MS) return known.candidates
    if (cache.size >= MAX_TENANTS) cache.clear()
    const candidates = load(tenant)
    cache.set(tenant, { at: now, candidates })
    // A failed load is not kept: the next login asks the directory again.
    candidates.catch(() => {
      if (cache.get(tenant)?.candidates === candidates) cache.delete(tenant)
    })
    return candidates
  }
}

export type LoginCandidates = ReturnType<typeof createLoginCandidates>
