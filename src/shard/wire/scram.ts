import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'

const derive = promisify(pbkdf2)

/**
 * How the client binds (RFC 5802 §6): `bind` sends SCRAM-SHA-256-PLUS with tls-server-end-point data;
 * `supported` says "I could bind, but you did not offer it" (gs2 flag y: a server that does support it
 * then knows the offer was stripped in transit and refuses); `none` (flag n) when there is no TLS or
 * binding is turned off.
 */
export type ChannelBinding =
  | { kind: 'bind'; serverEndPoint: Buffer }
  | { kind: 'supported' }
  | { kind: 'none' }

/**
 * SCRAM-SHA-256 (-PLUS) as PostgreSQL speaks it (RFC 5802/7677/5929): the user name is empty in the
 * exchange because PostgreSQL takes it from the startup message.
 */
export function startScram(password: string, binding: ChannelBinding = { kind: 'none' }) {
  const nonce = randomBytes(18).toString('base64')
  const clientFirstBare = `n=*,r=${nonce}`
  const gs2Header =
    binding.kind === 'bind' ? 'p=tls-server-end-point,,' : binding.kind === 'supported' ? 'y,,' : 'n,,'
  const channel = Buffer.concat([
    Buffer.from(gs2Header),
    binding.kind === 'bind' ? binding.serverEndPoint : Buffer.alloc(0),
  ]).toString('base64')
  let expectedServerSignature: Buffer | undefined
  let verified = false

  return {
    mechanism: binding.kind === 'bind' ? 'SCRAM-SHA-256-PLUS' : 'SCRAM-SHA-256',
    /** SASLInitialResponse's payload. */
    clientFirst: `${gs2Header}${clientFirstBare}`,
    /** True once the server's final message proved it knows the password (and, bound, saw our TLS session). */
    get verified() {
      return verified
    },

    /** SASLResponse's payload, from the server's first message (AuthenticationSASLContinue). */
    async clientFinal(serverFirst: string): Promise<string> {
      const attributes = parseAttributes(serverFirst)
      const serverNonce = attributes.get('r')
      const salt = attributes.get('s')
      const iterations = Number(attributes.get('i'))
      if (
        !serverNonce?.startsWith(nonce) ||
        serverNonce.length <= nonce.length ||
        !salt ||
        !Number.isInteger(iterations) ||
        iterations < 1
      )
        throw new Error('the server sent an invalid SCRAM first message')
      const salted = await derive(password, Buffer.from(salt, 'base64'), iterations, 32, 'sha256')
      const clientKey = hmac(salted, 'Client Key')
      const storedKey = createHash('sha256').update(clientKey).digest()
      const withoutProof = `c=${channel},r=${serverNonce}`
      const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`
      const signature = hmac(storedKey, authMessage)
      const proof = Buffer.alloc(clientKey.length)
      for (let i = 0; i < proof.length; i++) proof[i] = (clientKey[i] as number) ^ (signature[i] as number)
      expectedServerSignature = hmac(hmac(salted, 'Server Key'), authMessage)
      return `${withoutProof},p=${proof.toString('base64')}`
    },

    /** AuthenticationSASLFinal: the server proves it knew the password too. */
    verifyServerFinal(serverFinal: string) {
      const attributes = parseAttributes(serverFinal)
      const error = attributes.get('e')
      if (error) throw new Error(`the server ended SCRAM with an error: ${error}`)
      const signature = attributes.get('v')
      const received = signature ? Buffer.from(signature, 'base64') : Buffer.alloc(0)
      if (
        !expectedServerSignature ||
        received.length !== expectedServerSignature.length ||
        !timingSafeEqual(received, expectedServerSignature)
      )
        throw new Error('the SCRAM server signature does not match')
      verified = true
    },
  }
}

/** PostgreSQL's older password method: md5(md5(password + user) + salt). Only with allowInsecureAuth. */
export function md5Password(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5')
    .update(password + user)
    .digest('hex')
  return `md5${createHash('md5')
    .update(Buffer.concat([Buffer.from(inner), salt]))
    .digest('hex')}`
}

const hmac = (key: Buffer, text: string) => createHmac('sha256', key).update(text).digest()

function parseAttributes(message: string): Map<string, string> {
  const attributes = new Map<string, string>()
  for (const part of message.split(',')) {
    if (part.length >= 2 && part[1] === '=') attributes.set(part[0] as string, part.slice(2))
  }
  return attributes
}
