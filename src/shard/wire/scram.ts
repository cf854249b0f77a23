import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'

const derive = promisify(pbkdf2)

/**
 * SCRAM-SHA-256 as PostgreSQL speaks it (RFC 5802/7677, no channel binding): the user name is empty in
 * the exchange because PostgreSQL takes it from the startup message.
 */
export function startScram(password: string) {
  const nonce = randomBytes(18).toString('base64')
  const clientFirstBare = `n=*,r=${nonce}`
  let expectedServerSignature: Buffer | undefined

  return {
    /** SASLInitialResponse's payload. */
    clientFirst: `n,,${clientFirstBare}`,

    /** SASLResponse's payload, from the server's first message (AuthenticationSASLContinue). */
    async clientFinal(serverFirst: string): Promise<string> {
      const attributes = parseAttributes(serverFirst)
      const serverNonce = attributes.get('r')
      const salt = attributes.get('s')
      const iterations = Number(attributes.get('i'))
      if (!serverNonce?.startsWith(nonce) || !salt || !Number.isInteger(iterations) || iterations < 1)
        throw new Error('SCRAM: the server sent an invalid first message')
      const salted = await derive(password, Buffer.from(salt, 'base64'), iterations, 32, 'sha256')
      const clientKey = hmac(salted, 'Client Key')
      const storedKey = createHash('sha256').update(clientKey).digest()
      const withoutProof = `c=biws,r=${serverNonce}`
      const authMessage = `${clientFirstBare},${serverFirst},${withoutProof}`
      const signature = hmac(storedKey, authMessage)
      const proof = Buffer.alloc(clientKey.length)
      for (let i = 0; i < proof.length; i++) proof[i] = (clientKey[i] as number) ^ (signature[i] as number)
      expectedServerSignature = hmac(hmac(salted, 'Server Key'), authMessage)
      return `${withoutProof},p=${proof.toString('base64')}`
    },

    /** AuthenticationSASLFinal: the server proves it knew the password too. */
    verifyServerFinal(serverFinal: string) {
      const signature = parseAttributes(serverFinal).get('v')
      const received = signature ? Buffer.from(signature, 'base64') : Buffer.alloc(0)
      if (
        !expectedServerSignature ||
        received.length !== expectedServerSignature.length ||
        !timingSafeEqual(received, expectedServerSignature)
      )
        throw new Error('SCRAM: the server signature does not match')
    },
  }
}

/** PostgreSQL's older password method: md5(md5(password + user) + salt). */
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
