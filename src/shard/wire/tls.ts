import { createHash } from 'node:crypto'
import { isIP, type Socket, connect as tcpConnect } from 'node:net'
import { type TLSSocket, connect as tlsConnect } from 'node:tls'
import { ConnectionError, TlsError } from './errors.ts'
import { cancelRequest, sslRequest as sslRequestMessage } from './messages.ts'

/** libpq's sslmode, with libpq's meaning. */
export type SslMode = 'disable' | 'prefer' | 'require' | 'verify-ca' | 'verify-full'

export interface TlsOptions {
  /**
   * `disable`: plain TCP. `prefer` (default): TLS when the node offers it, unverified, else plain; plain
   * to a loopback address, where unverified TLS hides nothing from anyone (see `openTransport`).
   * `require`: TLS or refuse; unverified, unless `ca` is given (then as verify-ca, as libpq does).
   * `verify-ca`: the certificate must chain to `ca`. `verify-full`: that, and name the host dialled.
   */
  mode?: SslMode
  /** PEM of the CA(s) to trust; without it, verify-ca and verify-full trust Node's bundled roots. */
  ca?: string | Buffer
  /**
   * SCRAM channel binding (SCRAM-SHA-256-PLUS, tls-server-end-point) binds the login to the TLS session,
   * so an unverified TLS peer in the middle cannot relay it. `prefer` (default): whenever TLS is on and
   * the server offers it; `require`: refuse any login without it (and any connection without TLS).
   */
  channelBinding?: 'disable' | 'prefer' | 'require'
}

/** The socket a connection talks over, and what its TLS session gives channel binding. */
export interface Transport {
  socket: Socket
  /** The TLS session, when there is one. */
  tls: TLSSocket | null
  /** tls-server-end-point data: the server certificate's hash (RFC 5929); null when unknown or no TLS. */
  serverEndPoint: Buffer | null
}

export interface Endpoint {
  host: string
  port: number
  /** How errors name the node. */
  name: string
  tls: TlsOptions
}

/**
 * TCP to the node, then (unless sslmode is disable) SSLRequest and a TLS handshake over the same socket.
 * Resolves with the socket to speak the protocol on; `signal` aborts a connect that takes too long.
 */
export async function openTransport(endpoint: Endpoint, signal: AbortSignal): Promise<Transport> {
  const socket = await tcp(endpoint, signal)
  const mode = endpoint.tls.mode ?? 'prefer'
  if (mode === 'disable' || (mode === 'prefer' && plainWillDo(endpoint, socket)))
    return { socket, tls: null, serverEndPoint: null }
  try {
    const answer = await sslRequest(socket, endpoint, signal)
    if (answer === 'N') {
      if (mode === 'prefer') return { socket, tls: null, serverEndPoint: null }
      throw new TlsError(
        'tls_required',
        endpoint.name,
        `${endpoint.name} does not accept TLS connections, and sslmode is ${mode}`,
      )
    }
    const tls = await handshake(socket, endpoint, signal)
    return { socket: tls, tls, serverEndPoint: serverEndPoint(tls) }
  } catch (error) {
    socket.destroy()
    throw error
  }
}

/**
 * `prefer` asks for TLS it does not verify: it keeps a passive listener on the wire from reading the
 * traffic. On a loopback address there is no wire: only root on this host (or in this network namespace)
 * could listen, and root reads the processes' memory anyway. There TLS cost the router about a fifth of its
 * CPU per point read in a profile, for nothing (docs/BENCHMARKS.md), so `prefer` goes plain, as libpq's would if the node
 * refused TLS. Decided by the address the socket reached, not the name dialled. Channel binding
 * `require` still needs TLS, and every mode from `require` up is untouched.
 */
function plainWillDo(endpoint: Endpoint, socket: Socket): boolean {
  return endpoint.tls.channelBinding !== 'require' && isLoopback(socket.remoteAddress)
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address
  if (isIP(v4) === 4) return v4.startsWith('127.')
  return address === '::1'
}

function tcp(endpoint: Endpoint, signal: AbortSignal): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const socket = tcpConnect({ host: endpoint.host, port: endpoint.port })
    socket.setNoDelay(true)
    socket.setKeepAlive(true, 60_000)
    // An 'error' with no listener ends the process: whoever owns the socket later listens too.
    socket.on('error', ignore)
    const abort = () => {
      socket.destroy()
      reject(signal.reason)
    }
    const onError = (error: NodeJS.ErrnoException) => {
      signal.removeEventListener('abort', abort)
      reject(new ConnectionError(error.code ?? 'ECONNRESET', `${endpoint.name}: ${error.message}`))
    }
    socket.once('connect', () => {
      signal.removeEventListener('abort', abort)
      socket.removeListener('error', onError)
      resolve(socket)
    })
    socket.once('error', onError)
    signal.addEventListener('abort', abort, { once: true })
  })
}

/**
 * SSLRequest, answered by exactly one byte. Anything more is a man in the middle stuffing bytes before
 * the handshake (CVE-2021-23222); an ErrorResponse comes from an unauthenticated server, so its text is
 * not repeated (CVE-2024-10977).
 */
function sslRequest(socket: Socket, endpoint: Endpoint, signal: AbortSignal): Promise<'S' | 'N'> {
  return new Promise((resolve, reject) => {
    const done = () => {
      socket.removeListener('data', onData)
      socket.removeListener('error', onError)
      socket.removeListener('close', onClose)
      signal.removeEventListener('abort', onAbort)
    }
    const onData = (chunk: Buffer) => {
      done()
      const answer = String.fromCharCode(chunk[0] as number)
      if (chunk.length === 1 && (answer === 'S' || answer === 'N')) return resolve(answer)
      reject(
        new ConnectionError(
          'PROTOCOL_ERROR',
          `${endpoint.name} answered the SSLRequest with ${chunk.length} bytes starting with 0x${chunk[0]?.toString(16)}`,
        ),
      )
    }
    const onError = (error: NodeJS.ErrnoException) => {
      done()
      reject(new ConnectionError(error.code ?? 'ECONNRESET', `${endpoint.name}: ${error.message}`))
    }
    const onClose = () => {
      done()
      reject(new ConnectionError('CONNECTION_CLOSED', `${endpoint.name} closed the connection at SSLRequest`))
    }
    const onAbort = () => {
      done()
      reject(signal.reason)
    }
    socket.on('data', onData)
    socket.once('error', onError)
    socket.once('close', onClose)
    signal.addEventListener('abort', onAbort, { once: true })
    socket.write(sslRequestMessage())
  })
}

function handshake(socket: Socket, endpoint: Endpoint, signal: AbortSignal): Promise<TLSSocket> {
  const mode = endpoint.tls.mode ?? 'prefer'
  const ca = endpoint.tls.ca
  const verify = mode === 'verify-ca' || mode === 'verify-full' || (mode === 'require' && ca !== undefined)
  return new Promise<TLSSocket>((resolve, reject) => {
    const tls = tlsConnect({
      socket,
      host: endpoint.host,
      // SNI takes host names only; an address is still checked against the certificate's IP SANs.
      ...(isIP(endpoint.host) ? {} : { servername: endpoint.host }),
      ...(ca !== undefined ? { ca } : {}),
      rejectUnauthorized: verify,
      minVersion: 'TLSv1.2',
      ...(mode === 'verify-full' ? {} : { checkServerIdentity: () => undefined }),
    })
    const onError = (error: Error) => {
      signal.removeEventListener('abort', onAbort)
      tls.destroy()
      reject(
        new TlsError('tls_failed', endpoint.name, `TLS to ${endpoint.name} failed: ${error.message}`, {
          cause: error,
        }),
      )
    }
    const onAbort = () => {
      tls.removeListener('error', onError)
      tls.destroy()
      reject(signal.reason)
    }
    tls.once('secureConnect', () => {
      signal.removeEventListener('abort', onAbort)
      tls.removeListener('error', onError)
      resolve(tls)
    })
    tls.once('error', onError)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/**
 * tls-server-end-point (RFC 5929 §4.1), as PostgreSQL computes it: the hash of the server certificate
 * (DER) with the hash of its signature algorithm, SHA-256 when that is MD5 or SHA-1. Null for algorithms
 * without one plain hash (RSASSA-PSS, Ed25519): PostgreSQL cannot bind to those either.
 */
export function serverEndPoint(tls: TLSSocket): Buffer | null {
  const der = tls.getPeerX509Certificate()?.raw
  if (!der) return null
  const hash = signatureHash(der)
  return hash ? createHash(hash).update(der).digest() : null
}

/** Signature algorithm OIDs (DER contents, hex) and the hash each one uses, MD5 and SHA-1 promoted. */
const SIGNATURE_HASHES: Record<string, string> = {
  '2a864886f70d010104': 'sha256', // md5WithRSAEncryption
  '2a864886f70d010105': 'sha256', // sha1WithRSAEncryption
  '2a864886f70d01010e': 'sha224', // sha224WithRSAEncryption
  '2a864886f70d01010b': 'sha256', // sha256WithRSAEncryption
  '2a864886f70d01010c': 'sha384', // sha384WithRSAEncryption
  '2a864886f70d01010d': 'sha512', // sha512WithRSAEncryption
  '2a8648ce3d0401': 'sha256', // ecdsa-with-SHA1
  '2a8648ce3d040301': 'sha224', // ecdsa-with-SHA224
  '2a8648ce3d040302': 'sha256', // ecdsa-with-SHA256
  '2a8648ce3d040303': 'sha384', // ecdsa-with-SHA384
  '2a8648ce3d040304': 'sha512', // ecdsa-with-SHA512
  '2a8648ce380403': 'sha256', // dsa-with-sha1
  '608648016503040301': 'sha224', // dsa-with-sha224
  '608648016503040302': 'sha256', // dsa-with-sha256
}

/** Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, … }, … } */
export function signatureHash(der: Buffer): string | null {
  try {
    const certificate = readTlv(der, 0)
    const tbs = readTlv(der, certificate.contentStart)
    const algorithm = readTlv(der, tbs.end)
    const oid = readTlv(der, algorithm.contentStart)
    if (oid.tag !== 0x06) return null
    return SIGNATURE_HASHES[der.toString('hex', oid.contentStart, oid.end)] ?? null
  } catch {
    return null
  }
}

function readTlv(der: Buffer, at: number): { tag: number; contentStart: number; end: number } {
  const tag = der[at] as number
  let length = der[at + 1] as number
  let contentStart = at + 2
  if (length & 0x80) {
    const bytes = length & 0x7f
    if (bytes < 1 || bytes > 4) throw new Error('unsupported DER length')
    length = 0
    for (let i = 0; i < bytes; i++) length = length * 256 + (der[contentStart + i] as number)
    contentStart += bytes
  }
  const end = contentStart + length
  if (end > der.length) throw new Error('truncated DER')
  return { tag, contentStart, end }
}

/**
 * CancelRequest for backend `pid` on a fresh connection, through TLS when `useTls` (PostgreSQL accepts an
 * SSLRequest before a CancelRequest, and the secret key then never crosses the network in clear).
 * Resolves once the server has closed that connection: it signals the backend before it closes, so
 * from then on the cancel can only hit what the backend is doing now or its next read of a command
 * (where an idle backend discards it). Never rejects: a cancel that could not be sent settles too.
 */
export async function sendCancelRequest(
  endpoint: Endpoint,
  useTls: boolean,
  pid: number,
  key: Buffer,
  timeoutMs: number,
): Promise<'closed' | 'failed'> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error('cancel request timed out')), timeoutMs)
  let socket: Socket | undefined
  try {
    const transport = await openTransport(
      { ...endpoint, tls: { ...endpoint.tls, mode: useTls ? (endpoint.tls.mode ?? 'prefer') : 'disable' } },
      controller.signal,
    )
    socket = transport.socket
    const request = cancelRequest(pid, key)
    const open = socket
    await new Promise<void>((resolve) => {
      open.on('data', () => {}) // the server answers nothing; read to see the end
      open.once('close', () => resolve())
      open.once('error', () => resolve())
      controller.signal.addEventListener('abort', () => resolve(), { once: true })
      open.write(request)
    })
    return controller.signal.aborted ? 'failed' : 'closed'
  } catch {
    return 'failed'
  } finally {
    clearTimeout(timer)
    socket?.destroy()
  }
}

const ignore = () => {}
