import { createHash, createHmac, pbkdf2Sync } from 'node:crypto'

/**
 * SCRAM-SHA-256's verifier of a password (RFC 5802 §3, as PostgreSQL stores it in pg_authid): StoredKey
 * = SHA-256(HMAC(SaltedPassword, "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key"),
 * SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations). PostgreSQL SASLpreps the password
 * first; an API key is printable ASCII, which SASLprep leaves as it is.
 */
export function scramVerifier(
  password: string,
  salt: Buffer,
  iterations: number,
): { storedKey: Buffer; serverKey: Buffer } {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256')
  const clientKey = createHmac('sha256', salted).update('Client Key').digest()
  return {
    storedKey: createHash('sha256').update(clientKey).digest(),
    serverKey: createHmac('sha256', salted).update('Server Key').digest(),
  }
}
