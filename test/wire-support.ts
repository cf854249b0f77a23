import { readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { TLSSocket, connect as tlsConnect } from 'node:tls'
import { inject } from 'vitest'
import { postgresBinaries, serverUser } from '../src/cluster/binaries.ts'
import type { PostgresNode } from '../src/cluster/nodes.ts'
import {
  dataDir,
  ensureTemplate,
  type NodeContext,
  ownedDir,
  reloadNode,
  startNode,
  stopNode,
  writeServerConfig,
} from '../src/cluster/postgres-node.ts'
import { runChecked } from '../src/cluster/process.ts'
import { ensureLocalTls, issueCertificate, localCaFile, tlsDir } from '../src/cluster/tls.ts'
import { sslRequest } from '../src/shard/wire/messages.ts'
import type { TlsOptions } from '../src/shard/wire/tls.ts'
import { fileOpened } from './fixtures.ts'
import { freePorts } from './setup/topology.ts'

/** The test topology's CA: its nodes' certificates chain to it. */
export const clusterCa = () => readFileSync(localCaFile(inject('home')))
export const verifyFull = (): TlsOptions => ({ mode: 'verify-full', ca: clusterCa() })
export const rssMb = () => Math.round(process.memoryUsage().rss / 1048576)

export interface ExtraNode {
  url(user: string, password: string): string
  port: number
  /** Writes its settings again, with the cluster's certificate (ssl = on) or without, and reloads it. */
  reconfigure(tls: boolean): Promise<void>
  stop(): Promise<void>
}

/**
 * One more real PostgreSQL server, started from the suite's template, WITHOUT TLS (ssl = off), and with a
 * pg_hba.conf that lets three roles in without SCRAM: `sy_trust` (trust), `sy_md5` (md5) and
 * `sy_password` (cleartext). Everyone else uses scram-sha-256 as on the topology's nodes.
 */
export async function startPlainNode(): Promise<ExtraNode> {
  const file = fileOpened()
  const [port] = (await freePorts(1)) as [number]
  const home = await mkdtemp(path.join(tmpdir(), 'switchyard-plain-'))
  const ctx: NodeContext = {
    home,
    binaries: postgresBinaries(),
    user: serverUser(),
    durable: false,
    tls: null,
  }
  const url = (user: string, password: string) => `postgres://${user}:${password}@127.0.0.1:${port}/postgres`
  const node: PostgresNode = {
    name: 'plain-node',
    role: 'directory',
    url: url('switchyard', 'switchyard'),
    port,
    database: 'postgres',
    user: 'switchyard',
    password: 'switchyard',
  }
  // The suite's own template (initdb done once by the global setup), copied.
  const template = await ensureTemplate({ ...ctx, home: inject('home') }, 'switchyard', 'switchyard')
  const data = dataDir(ctx, node)
  await runChecked('chmod', 'chmod', ['755', home])
  await ownedDir(ctx, path.dirname(path.dirname(data)))
  await ownedDir(ctx, path.dirname(data))
  await runChecked('copy', 'cp', ['-a', template, data])
  await writeServerConfig(ctx, data, node)
  await writeFile(
    path.join(data, 'pg_hba.conf'),
    [
      'host all sy_trust 127.0.0.1/32 trust',
      'host all sy_md5 127.0.0.1/32 md5',
      'host all sy_password 127.0.0.1/32 password',
      'host all all 127.0.0.1/32 scram-sha-256',
      '',
    ].join('\n'),
  )
  await startNode(ctx, node)
  const extra: ExtraNode = {
    url,
    port,
    async reconfigure(tls) {
      const context = { ...ctx, tls: tls ? await ensureLocalTls({ ...ctx, home: inject('home') }) : null }
      await writeServerConfig(context, data, node)
      await reloadNode(context, node)
    },
    async stop() {
      await stopNode(ctx, node)
      await rm(home, { recursive: true, force: true })
    },
  }
  file.nodes.push(extra)
  return extra
}

/**
 * A certificate for `names` signed by the test topology's own CA (its key is the launcher's, readable
 * here): what an attacker who got a certificate from the same CA for another name would present.
 */
export async function certificateFor(names: string): Promise<{ cert: Buffer; key: Buffer }> {
  const dir = await mkdtemp(path.join(tmpdir(), 'switchyard-cert-'))
  const ca = tlsDir(inject('home'))
  try {
    const files = { key: path.join(dir, 'key'), cert: path.join(dir, 'crt') }
    await issueCertificate({
      caFile: path.join(ca, 'ca.crt'),
      caKey: path.join(ca, 'ca.key'),
      names,
      days: 2,
      ...files,
    })
    return { cert: readFileSync(files.cert), key: readFileSync(files.key) }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

export interface RelayOptions {
  /** The real server behind the relay. */
  target: { host: string; port: number }
  /** Terminate the client's TLS with this certificate (a man in the middle); without it, answer 'N'. */
  serverTls?: { cert: Buffer; key: Buffer }
  /** Speak TLS to the real server. */
  upstreamTls?: boolean
  /**
   * Sees every server→client message (type, whole message with header) and returns what to forward in
   * its place: the same buffer, another one, or null to drop it.
   */
  rewrite?: (type: number, message: Buffer) => Buffer | null
}

export interface Relay {
  port: number
  close(): Promise<void>
}

/**
 * An on-path relay in front of a real PostgreSQL server, to play the attacker the client must resist:
 * terminating TLS with another certificate, dropping or altering what the server says. It forwards the
 * client's bytes as they are; only the server's side goes message by message through `rewrite`.
 */
export async function startRelay(options: RelayOptions): Promise<Relay> {
  const file = fileOpened()
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    sockets.add(client)
    client.on('error', () => {})
    client.once('data', (first: Buffer) => void accept(client, first).catch(() => client.destroy()))
  })
  async function accept(client: Socket, first: Buffer) {
    let downstream: Socket = client
    let pending = first
    const isSslRequest = first.length >= 8 && first.readInt32BE(0) === 8 && first.readInt32BE(4) === 80877103
    if (isSslRequest) {
      pending = first.subarray(8)
      if (options.serverTls) {
        client.write('S')
        downstream = new TLSSocket(client, { isServer: true, ...options.serverTls })
        downstream.on('error', () => {})
      } else client.write('N')
    }
    const upstream = await openUpstream()
    sockets.add(upstream)
    if (pending.length) upstream.write(pending)
    downstream.on('data', (chunk: Buffer) => upstream.write(chunk))
    downstream.on('close', () => upstream.destroy())
    upstream.on('close', () => downstream.destroy())
    let buffered = Buffer.alloc(0)
    upstream.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      while (buffered.length >= 5) {
        const size = buffered.readInt32BE(1)
        if (buffered.length < 1 + size) break
        const message = buffered.subarray(0, 1 + size)
        buffered = buffered.subarray(1 + size)
        const out = options.rewrite ? options.rewrite(message[0] as number, message) : message
        if (out) downstream.write(out)
      }
    })
  }
  function openUpstream(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = netConnect(options.target, () => {
        if (!options.upstreamTls) return resolve(socket)
        socket.write(sslRequest())
        socket.once('data', () => {
          const tls = tlsConnect({ socket, rejectUnauthorized: false }, () => resolve(tls))
          tls.on('error', reject)
        })
      })
      socket.on('error', reject)
    })
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const relay: Relay = {
    port: (server.address() as { port: number }).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
  file.relays.push(relay)
  return relay
}

/** `url` pointing at the relay instead of its node. */
export function viaRelay(url: string, relay: Relay): string {
  const parsed = new URL(url)
  parsed.port = String(relay.port)
  return parsed.toString()
}

/** An Authentication message's code (AuthenticationSASLFinal is 12), or -1 for another message. */
export const authenticationCode = (type: number, message: Buffer) =>
  type === 0x52 ? message.readInt32BE(5) : -1
