import { randomBytes, X509Certificate } from 'node:crypto'
import { existsSync } from 'node:fs'
import { chmod, chown, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import type { NodeContext } from './postgres-node.ts'
import { runChecked } from './process.ts'

/** The local cluster's certificates: one CA, one server certificate every node presents. */
export interface ServerTls {
  /** The CA routers trust (`router.tls.rootCert`). */
  caFile: string
  certFile: string
  keyFile: string
}

export const tlsDir = (home: string) => path.join(home, 'tls')
/** Where `cluster up` keeps the local CA's certificate: point `router.tls.rootCert` here. */
export const localCaFile = (home: string) => path.join(tlsDir(home), 'ca.crt')

/** The names the server certificate is valid for: every node listens on 127.0.0.1. */
const SERVER_NAMES = 'IP:127.0.0.1,DNS:localhost'

/**
 * A local CA and a server certificate for 127.0.0.1/localhost, made once and kept in `<home>/tls`; made
 * again when missing, expiring within a day, or not signed by the CA there. ECDSA P-256 keys, SHA-256
 * signatures (so SCRAM channel binding hashes the certificate with SHA-256).
 *
 * The server key is 0600 and owned by the user the servers run as (PostgreSQL refuses a key others can
 * read). The CA key stays 0600 with the launcher's user: no server needs it, and whoever can read it can
 * mint certificates every router of this cluster trusts.
 */
export async function ensureLocalTls(ctx: NodeContext): Promise<ServerTls | null> {
  try {
    return await localTls(ctx)
  } catch (error) {
    // Without openssl the nodes run without TLS, as they did before; routers in sslmode prefer still work.
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw error
  }
}

async function localTls(ctx: NodeContext): Promise<ServerTls> {
  const dir = tlsDir(ctx.home)
  const files = {
    caFile: path.join(dir, 'ca.crt'),
    certFile: path.join(dir, 'server.crt'),
    keyFile: path.join(dir, 'server.key'),
  }
  const caKey = path.join(dir, 'ca.key')
  await mkdir(dir, { recursive: true, mode: 0o755 })
  await chmod(dir, 0o755)
  if (!(await usable(files.caFile, caKey, null))) {
    await makeCa(dir, files.caFile, caKey)
    await rm(files.certFile, { force: true })
  }
  if (!(await usable(files.certFile, files.keyFile, files.caFile)))
    await makeServerCertificate(dir, files, caKey)
  if (ctx.user) await chown(files.keyFile, ctx.user.uid, ctx.user.gid)
  await chmod(files.keyFile, 0o600)
  return files
}

/** The certificate and its key exist, it is valid for at least a day more, and `caFile` signed it. */
async function usable(certFile: string, keyFile: string, caFile: string | null): Promise<boolean> {
  if (!existsSync(certFile) || !existsSync(keyFile)) return false
  try {
    const certificate = new X509Certificate(await readFile(certFile))
    if (Date.parse(certificate.validTo) < Date.now() + 86_400_000) return false
    if (!caFile) return true
    const ca = new X509Certificate(await readFile(caFile))
    return certificate.checkIssued(ca) && certificate.verify(ca.publicKey)
  } catch {
    return false
  }
}

/** A new ECDSA P-256 key, as openssl options. */
const NEW_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

async function makeCa(dir: string, caFile: string, caKey: string): Promise<void> {
  const key = path.join(dir, 'ca.key.new')
  const cert = path.join(dir, 'ca.crt.new')
  await openssl(
    ['req', '-x509', '-new', ...NEW_KEY, '-keyout', key, '-out', cert, '-days', '3650', '-sha256'].concat(
      ['-subj', '/CN=Switchyard local CA', '-addext', 'basicConstraints=critical,CA:TRUE'],
      ['-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    ),
  )
  await chmod(key, 0o600)
  await rename(key, caKey)
  await rename(cert, caFile)
}

async function makeServerCertificate(dir: string, files: ServerTls, caKey: string): Promise<void> {
  const key = path.join(dir, 'server.key.new')
  const cert = path.join(dir, 'server.crt.new')
  await issueCertificate({ caFile: files.caFile, caKey, names: SERVER_NAMES, days: 825, key, cert })
  await rename(key, files.keyFile)
  await rename(cert, files.certFile)
}

/**
 * A new key (0600) and a certificate for `names` (`IP:…,DNS:…`) signed by the CA, for server use only.
 * The launcher's server certificate; tests make impostors with it.
 */
export async function issueCertificate(options: {
  caFile: string
  caKey: string
  names: string
  days: number
  key: string
  cert: string
}): Promise<void> {
  const request = `${options.cert}.csr`
  const extensions = `${options.cert}.ext`
  await writeFile(
    extensions,
    `subjectAltName=${options.names}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`,
  )
  try {
    await openssl([
      'req',
      '-new',
      ...NEW_KEY,
      '-keyout',
      options.key,
      '-out',
      request,
      '-subj',
      '/CN=localhost',
    ])
    await chmod(options.key, 0o600)
    await openssl(
      ['x509', '-req', '-in', request, '-CA', options.caFile, '-CAkey', options.caKey].concat(
        [
          '-set_serial',
          `0x${randomBytes(16).toString('hex')}`,
          '-out',
          options.cert,
          '-days',
          String(options.days),
        ],
        ['-sha256', '-extfile', extensions],
      ),
    )
  } finally {
    await Promise.all([request, extensions].map((file) => rm(file, { force: true })))
  }
}

const openssl = (args: string[]) => runChecked('tls_setup_failed', 'openssl', args)
