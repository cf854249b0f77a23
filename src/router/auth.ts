import type { Directory } from '../directory/connection.ts'
import { type VerifiedKey, verifyKey } from '../directory/keys.ts'
import { createLru } from '../directory/lru.ts'
import { parseTenantId } from '../directory/tenants.ts'
import { SwitchyardError } from '../errors.ts'

export interface KeyCheck {
  /** The key's grants; throws `unauthorized` (401) for a missing, unknown or revoked key. */
  authenticate(presented: string | undefined): Promise<VerifiedKey>
}

interface Entry {
  key: VerifiedKey | null
  expires: number
}

/**
 * API keys, checked against the directory and remembered for `ttlMs` (so a revoke takes effect within
 * that time). With the directory down, keys seen before keep working; unknown ones are refused.
 */
export function createKeyCheck(directory: Directory, ttlMs = 30_000, negativeTtlMs = 5_000): KeyCheck {
  const cache = createLru<string, Entry>(10_000)
  return {
    async authenticate(presented) {
      if (!presented) throw unauthorized('an API key is required')
      const cached = cache.get(presented)
      if (cached && cached.expires > Date.now()) {
        if (!cached.key) throw unauthorized('the API key is not valid')
        return cached.key
      }
      let key: VerifiedKey | undefined
      try {
        key = await verifyKey(directory, presented)
      } catch (error) {
        if (cached?.key) return cached.key
        throw new SwitchyardError(
          'directory_unavailable',
          `cannot check the API key: ${(error as Error).message}`,
        )
      }
      cache.set(presented, { key: key ?? null, expires: Date.now() + (key ? ttlMs : negativeTtlMs) })
      if (!key) throw unauthorized('the API key is not valid')
      return key
    },
  }
}

/** 403 unless the key may act for this tenant (app keys may be limited to some tenants). */
export function assertTenantAllowed(key: VerifiedKey, tenant: string): void {
  if (key.scope !== 'app' && key.scope !== 'admin')
    throw new SwitchyardError('forbidden', 'this key cannot run queries')
  if (key.tenants && !key.tenants.includes(tenant)) {
    throw new SwitchyardError('forbidden', `this API key may not act for tenant ${tenant}`)
  }
}

/** The key in an `Authorization: Bearer <key>` header; tenant requests and the admin API alike. */
export function bearerKey(header: string | undefined): string | undefined {
  return header?.toLowerCase().startsWith('bearer ') ? header.slice(7).trim() : undefined
}

export function assertAdmin(key: VerifiedKey): void {
  if (key.scope !== 'admin') throw new SwitchyardError('forbidden', 'this endpoint needs an admin key')
}

const unauthorized = (message: string) => new SwitchyardError('unauthorized', message)

/**
 * The tenant an HTTP request acts for: its bearer key checked, then `x-tenant-id` (a UUID) allowed by the
 * key. Throws `unauthorized`, `invalid_input` or `forbidden`.
 */
export async function authenticatedTenant(
  keys: KeyCheck,
  presentedKey: string | undefined,
  presentedTenant: string | undefined,
): Promise<string> {
  const key = await keys.authenticate(presentedKey)
  if (!presentedTenant)
    throw new SwitchyardError('invalid_input', 'the tenant is missing (x-tenant-id header)')
  const tenant = parseTenantId(presentedTenant).toLowerCase()
  assertTenantAllowed(key, tenant)
  return tenant
}
