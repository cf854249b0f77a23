import { readFile } from 'node:fs/promises'
import type { Socket } from 'node:net'
import path from 'node:path'
import { createSecureContext, type SecureContext, TLSSocket } from 'node:tls'
import type { Topology } from '../../config/topology.ts'
import { SwitchyardError } from '../../errors.ts'
import { GSSENC_REQUEST, SSL_REQUEST } from './protocol.ts'

/** TLS for the PostgreSQL front end's clients (`router.pgTls`). */
export interface FrontTls {
  context: SecureContext
  /** A client that did not start TLS is refused (28000). */
  required: boolean
}

/** Reads `router.pgTls`'s certificate and key once, at start; unreadable or unusable files stop the start. */
export async function loadFrontTls(config: Topology['router']): Promise<FrontTls | undefined> {
  if (!config.pgTls) return undefined
  const { certFile, keyFile, required } = config.pgTls
  try {
    const [cert, key] = await Promise.all([readFile(path.resolve(certFile)), readFile(path.resolve(keyFile))])
    return { context: createSecureContext({ cert, key, minVersion: 'TLSv1.2' }), required }
  } catch (error) {
    throw new SwitchyardError(
      'invalid_input',
      `router.pgTls: cannot use ${certFile} and ${keyFile}: ${(error as Error).message}`,
    )
  }
}

/** What every first packet has at least: its length and a code (StartupMessage, SSLRequest, …). */
const FIRST_PACKET = 8

/**
 * Before the session: a GSSENCRequest is declined ('N', libpq then asks for TLS), an SSLRequest is
 * answered 'S' and the connection becomes TLS; anything else is put back for the session as it came.
 * Bytes sent after an SSLRequest before the handshake would be read as if they came over TLS
 * (CVE-2021-23214): such a client is closed. Resolves the stream the session reads (undefined: closed).
 */
export async function negotiateTls(socket: Socket, tls: FrontTls): Promise<Socket | undefined> {
  for (let packet = 0; packet < 2; packet++) {
    const head = await firstBytes(socket, FIRST_PACKET)
    if (!head) return undefined
    const code = head.readInt32BE(4)
    const request = head.readInt32BE(0) === FIRST_PACKET
    if (request && code === GSSENC_REQUEST && head.length === FIRST_PACKET) {
      socket.write('N')
      continue
    }
    if (request && code === SSL_REQUEST) {
      if (head.length !== FIRST_PACKET) {
        socket.destroy()
        return undefined
      }
      socket.write('S')
      return handshake(socket, tls)
    }
    socket.unshift(head)
    return socket
  }
  return socket
}

function handshake(socket: Socket, tls: FrontTls): Promise<Socket | undefined> {
  const secured = new TLSSocket(socket, { isServer: true, secureContext: tls.context })
  secured.on('error', () => secured.destroy())
  return new Promise((resolve) => {
    secured.once('secure', () => resolve(secured))
    secured.once('close', () => resolve(undefined))
  })
}

/** At least `size` bytes of what the client sent first (all of the chunk they came in), with the socket paused after. */
function firstBytes(socket: Socket, size: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    let got = Buffer.alloc(0)
    const onData = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk])
      if (got.length < size) return
      done()
      socket.pause()
      resolve(got)
    }
    const onClose = () => {
      done()
      resolve(undefined)
    }
    const done = () => {
      socket.off('data', onData)
      socket.off('close', onClose)
    }
    socket.on('data', onData)
    socket.once('close', onClose)
    socket.resume()
  })
}
