import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto'
import { and, asc, eq, inArray, isNotNull, isNull, or, sql } from 'drizzle-orm'
import { z } from 'zod'
import { describeIssues, SwitchyardError } from '../errors.ts'
import type { Directory } from './connection.ts'
import { apiKeys, scramSettings, tenants } from './schema.ts'
import { scramVerifier } from './scram-verifier.ts'
import { tenantId } from './tenants.ts'

/**
 * A key is `sy_<prefix>_<secret>`. The prefix (12 characters of [a-z0-9]) is public: it names the row and
 * is what `keys list` shows and `keys revoke` takes. The secret is 32 random bytes, base64url (43
 * characters, which may include `_` and `-`; both parts have fixed lengths, so parsing is unambiguous).
 */
const PREFIX_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789'
const PREFIX_LENGTH = 12
const SECRET_BYTES = 32
const KEY_PATTERN = /^sy_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/
const PREFIX_PATTERN = /^[a-z0-9]{12}$/

export const keyScope = z.enum(['app', 'admin'], { message: 'must be "app" or "admin"' })
export type KeyScope = z.infer<typeof keyScope>

export const newKeySchema = z
  .strictObject({
    scope: keyScope,
    tenants: z
      .array(tenantId.transform((id) => id.toLowerCase()))
      .min(1, 'omit tenants for a key that may act for any tenant')
      .transform((ids) => [...new Set(ids)])
      .optional(),
    name: z.string().trim().min(1).max(200).optional(),
  })
  .refine((key) => key.scope === 'app' || key.tenants === undefined, {
    path: ['tenants'],
    message: 'only app keys may be limited to tenants',
  })

export type NewKey = z.input<typeof newKeySchema>

/** A key as the directory lists it: never any secret material. */
export interface KeyRow {
  id: string
  prefix: string
  scope: KeyScope
  /** Tenants the key may act for; null means any tenant. */
  tenants: string[] | null
  name: string | null
  createdAt: Date
  revokedAt: Date | null
}

/** What `createKey` returns: the row and, this one time only, the key itself. */
export type CreatedKey = Omit<KeyRow, 'revokedAt'> & { key: string }

/** What the router's auth needs to know about a presented key. */
export interface VerifiedKey {
  id: string
  scope: KeyScope
  tenants: string[] | null
}

const publicColumns = {
  id: apiKeys.id,
  prefix: apiKeys.prefix,
  scope: apiKeys.scope,
  tenants: apiKeys.tenants,
  name: apiKeys.name,
  createdAt: apiKeys.createdAt,
  revokedAt: apiKeys.revokedAt,
}

function randomPrefix(): string {
  let prefix = ''
  while (prefix.length < PREFIX_LENGTH) {
    for (const byte of randomBytes(PREFIX_LENGTH * 2)) {
      // Rejection sampling keeps every character equally likely (252 = 7 × 36).
      if (byte < 252 && prefix.length < PREFIX_LENGTH) prefix += PREFIX_ALPHABET[byte % 36]
    }
  }
  return prefix
}

/**
 * SHA-256, not a password hash: the secret is 256 random bits, so there is nothing to brute-force and a
 * slow KDF would only make every authenticated request slower.
 */
const hashSecret = (secret: string): Buffer => createHash('sha256').update(secret).digest()

/**
 * Creates a key. Listed tenants must exist in the directory; their rows are share-locked until the key
 * is written so none can vanish in between. Nothing is written on bad input. A prefix collision (62 bits
 * of randomness) would fail on the unique constraint rather than share a row.
 */
export async function createKey(directory: Directory, input: NewKey): Promise<CreatedKey> {
  const parsed = newKeySchema.safeParse(input)
  if (!parsed.success) throw new SwitchyardError('invalid_input', describeIssues(parsed.error.issues))
  const { scope, name } = parsed.data
  const limitedTo = parsed.data.tenants ?? null
  const prefix = randomPrefix()
  const secret = randomBytes(SECRET_BYTES).toString('base64url')
  const key = `sy_${prefix}_${secret}`
  const row = await directory.db.transaction(async (tx) => {
    if (limitedTo) {
      const found = await tx
        .select({ id: tenants.id })
        .from(tenants)
        .where(inArray(tenants.id, limitedTo))
        .for('key share')
      const known = new Set(found.map((t) => t.id))
      const missing = limitedTo.filter((id) => !known.has(id))
      if (missing.length) {
        throw new SwitchyardError('tenant_unknown', `tenant(s) ${missing.join(', ')} do not exist`, {
          tenants: missing,
        })
      }
    }
    const [inserted] = await tx
      .insert(apiKeys)
      .values({
        id: randomUUID(),
        prefix,
        secretHash: hashSecret(secret).toString('hex'),
        ...(await verifierColumns(tx, key)),
        scope,
        tenants: limitedTo,
        name: name ?? null,
      })
      .returning(publicColumns)
    return inserted as KeyRow
  })
  const { revokedAt: _, ...created } = row
  return { ...created, key }
}

type Queries = Pick<Directory['db'], 'select'>

/** The directory's SCRAM salt and iteration count (one row, made by migration 0003). */
async function scramParameters(db: Queries): Promise<{ salt: Buffer; iterations: number }> {
  const [row] = await db.select().from(scramSettings).limit(1)
  if (!row)
    throw new SwitchyardError(
      'directory_unavailable',
      'the directory has no SCRAM settings: run `switchyard migrate`',
    )
  return { salt: Buffer.from(row.salt, 'base64'), iterations: row.iterations }
}

async function verifierColumns(db: Queries, key: string) {
  const { salt, iterations } = await scramParameters(db)
  const { storedKey, serverKey } = scramVerifier(key, salt, iterations)
  return { scramStoredKey: storedKey.toString('base64'), scramServerKey: serverKey.toString('base64') }
}

/** A key a PostgreSQL login may be proving: its verifier and what it grants. */
export interface ScramCandidate extends VerifiedKey {
  storedKey: Buffer
  serverKey: Buffer
}

/**
 * What a SCRAM login for `tenant` is checked against: the directory's salt and iterations and every key
 * that may act for the tenant (app keys limited to it or to none, admin keys), not revoked, with a
 * verifier. The same rule as the router's `assertTenantAllowed`.
 */
export async function scramCandidates(
  directory: Directory,
  tenant: string,
): Promise<{ salt: Buffer; iterations: number; keys: ScramCandidate[] }> {
  const { salt, iterations } = await scramParameters(directory.db)
  const rows = await directory.db
    .select({
      id: apiKeys.id,
      scope: apiKeys.scope,
      tenants: apiKeys.tenants,
      storedKey: apiKeys.scramStoredKey,
      serverKey: apiKeys.scramServerKey,
    })
    .from(apiKeys)
    .where(
      and(
        isNull(apiKeys.revokedAt),
        isNotNull(apiKeys.scramStoredKey),
        isNotNull(apiKeys.scramServerKey),
        or(
          eq(apiKeys.scope, 'admin'),
          isNull(apiKeys.tenants),
          sql`${tenant}::uuid = any(${apiKeys.tenants})`,
        ),
      ),
    )
    // A tenant with thousands of keys is a mistake, not a login to check them all for.
    .limit(MAX_SCRAM_CANDIDATES)
  return {
    salt,
    iterations,
    keys: rows.map((row) => ({
      id: row.id,
      scope: row.scope,
      tenants: row.tenants,
      storedKey: Buffer.from(row.storedKey as string, 'base64'),
      serverKey: Buffer.from(row.serverKey as string, 'base64'),
    })),
  }
}

const MAX_SCRAM_CANDIDATES = 1000

/** Whether a key still exists unrevoked: a long session (the PostgreSQL protocol) asks now and then. */
export async function keyStillValid(directory: Directory, id: string): Promise<boolean> {
  const [row] = await directory.db
    .select({ id: apiKeys.id })
    .from(apiKeys)
    .where(and(eq(apiKeys.id, id), isNull(apiKeys.revokedAt)))
    .limit(1)
  return row !== undefined
}

export async function listKeys(directory: Directory): Promise<KeyRow[]> {
  return directory.db.select(publicColumns).from(apiKeys).orderBy(asc(apiKeys.createdAt), asc(apiKeys.id))
}

/** Revokes a key by id or prefix. Idempotent: revoking again keeps the first revocation time. */
export async function revokeKey(directory: Directory, idOrPrefix: string): Promise<KeyRow> {
  const byId = z.uuid().safeParse(idOrPrefix)
  if (!byId.success && !PREFIX_PATTERN.test(idOrPrefix)) {
    throw new SwitchyardError(
      'invalid_input',
      `${JSON.stringify(idOrPrefix)} is neither a key id (UUID) nor a key prefix (12 characters of a-z, 0-9)`,
    )
  }
  const [row] = await directory.db
    .update(apiKeys)
    .set({ revokedAt: sql`coalesce(${apiKeys.revokedAt}, now())` })
    .where(byId.success ? eq(apiKeys.id, byId.data) : eq(apiKeys.prefix, idOrPrefix))
    .returning(publicColumns)
  if (!row) throw new SwitchyardError('key_unknown', `key ${idOrPrefix} does not exist`)
  return row as KeyRow
}

/**
 * The router's auth check: one lookup on the unique prefix index. Malformed keys are refused without a
 * query. The prefix is public, so answering faster for an unknown one gives nothing away; the secret is
 * compared in constant time.
 */
export async function verifyKey(directory: Directory, presented: string): Promise<VerifiedKey | undefined> {
  const parts = KEY_PATTERN.exec(presented)
  if (!parts) return undefined
  const [, prefix = '', secret = ''] = parts
  const [row] = await directory.db
    .select({
      id: apiKeys.id,
      scope: apiKeys.scope,
      tenants: apiKeys.tenants,
      secretHash: apiKeys.secretHash,
    })
    .from(apiKeys)
    .where(and(eq(apiKeys.prefix, prefix), isNull(apiKeys.revokedAt)))
    .limit(1)
  if (!row) return undefined
  const stored = Buffer.from(row.secretHash, 'hex')
  const actual = hashSecret(secret)
  if (stored.length !== actual.length || !timingSafeEqual(stored, actual)) return undefined
  return { id: row.id, scope: row.scope, tenants: row.tenants }
}
