import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { SwitchyardError } from '../../errors.ts'

/**
 * The server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL's backend speaks it, checked against
 * several verifiers at once: the client proves it holds one of the API keys that may act for its tenant
 * without saying which. For each candidate, ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); it
 * is the client's key when SHA-256(ClientKey) = StoredKey. Every candidate is tried (no early exit), so
 * the time taken says nothing about which one matched.
 *
 * Channel binding is not offered (the front end has no TLS yet): gs2 flags `n` and `y` are accepted, `p`
 * (binding that was never offered) is refused, as PostgreSQL does.
 */

/** Nothing a client sends in SCRAM is longer: a bound before anything is split or decoded. */
const MAX_PAYLOAD = 1024

export interface ClientFirst {
  gs2Header: string
  clientFirstBare: string
  clientNonce: string
}

export interface ServerFirst {
  message: string
  nonce: string
}

export interface Verifier {
  storedKey: Buffer
  serverKey: Buffer
}

export function parseClientFirst(payload: string): ClientFirst {
  if (payload.length > MAX_PAYLOAD) throw malformed('the SCRAM message is too long')
  // gs2-header: cbind-flag "," [authzid] ","
  const first = payload.indexOf(',')
  const second = payload.indexOf(',', first + 1)
  if (first === -1 || second === -1) throw malformed('malformed SCRAM message')
  const flag = payload.slice(0, first)
  if (flag.startsWith('p=')) throw malformed('channel binding was not offered')
  if (flag !== 'n' && flag !== 'y') throw malformed('malformed SCRAM message (channel binding flag)')
  if (second !== first + 1) throw malformed('an authorization identity is not supported')
  const gs2Header = payload.slice(0, second + 1)
  const clientFirstBare = payload.slice(second + 1)
  const attributes = readAttributes(clientFirstBare)
  // The user name is the startup message's; libpq sends it empty (or `*`), others send it again.
  if (!attributes.has('n')) throw malformed('malformed SCRAM message (no user name attribute)')
  if (attributes.has('m')) throw malformed('SCRAM extensions are not supported')
  const clientNonce = attributes.get('r') ?? ''
  if (!PRINTABLE.test(clientNonce) || clientNonce.length < 8)
    throw malformed('malformed SCRAM message (nonce)')
  return { gs2Header, clientFirstBare, clientNonce }
}

export function serverFirst(clientNonce: string, salt: Buffer, iterations: number): ServerFirst {
  const nonce = clientNonce + randomBytes(18).toString('base64')
  return { message: `r=${nonce},s=${salt.toString('base64')},i=${iterations}`, nonce }
}

/**
 * The client's final message: the candidate whose key it proved, and the server's final message (the
 * server's proof that it knew the verifier too); `null` when it proved none of them.
 */
export function verifyClientFinal<T extends Verifier>(
  payload: string,
  state: { client: ClientFirst; server: ServerFirst },
  candidates: readonly T[],
): { matched: T; serverFinal: string } | { matched: null } {
  if (payload.length > MAX_PAYLOAD) throw malformed('the SCRAM message is too long')
  const proofAt = payload.lastIndexOf(',p=')
  if (proofAt === -1) throw malformed('malformed SCRAM message (no proof)')
  const withoutProof = payload.slice(0, proofAt)
  const attributes = readAttributes(withoutProof)
  if (attributes.get('c') !== Buffer.from(state.client.gs2Header).toString('base64'))
    throw malformed('SCRAM channel binding check failed')
  if (attributes.get('r') !== state.server.nonce) throw malformed('SCRAM nonce does not match')
  const proof = Buffer.from(payload.slice(proofAt + 3), 'base64')
  if (proof.length !== 32) throw malformed('malformed SCRAM message (proof)')
  const authMessage = `${state.client.clientFirstBare},${state.server.message},${withoutProof}`
  let matched: T | null = null
  for (const candidate of candidates) {
    const signature = createHmac('sha256', candidate.storedKey).update(authMessage).digest()
    const clientKey = Buffer.alloc(32)
    for (let i = 0; i < 32; i++) clientKey[i] = (proof[i] as number) ^ (signature[i] as number)
    const stored = createHash('sha256').update(clientKey).digest()
    if (candidate.storedKey.length === 32 && timingSafeEqual(stored, candidate.storedKey) && !matched)
      matched = candidate
  }
  if (!matched) return { matched: null }
  const serverSignature = createHmac('sha256', matched.serverKey).update(authMessage).digest('base64')
  return { matched, serverFinal: `v=${serverSignature}` }
}

const PRINTABLE = /^[\x21-\x2b\x2d-\x7e]+$/

/** `a=value,b=value`: attribute names are single letters; values may contain '=' but not ','. */
function readAttributes(text: string): Map<string, string> {
  const attributes = new Map<string, string>()
  for (const part of text.split(',')) {
    if (part.length < 2 || part[1] !== '=') throw malformed('malformed SCRAM message (attribute)')
    attributes.set(part[0] as string, part.slice(2))
  }
  return attributes
}

const malformed = (message: string) => new SwitchyardError('unauthorized', message)
