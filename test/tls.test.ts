import { describe, expect, inject } from 'vitest'
import { localCaFile } from '../src/cluster/tls.ts'
import { parseTopology } from '../src/config/load.ts'
import { createPools } from '../src/shard/pools.ts'
import {
  AuthenticationError,
  ConnectionError,
  type ConnectOptions,
  PostgresError,
  type WireError,
} from '../src/shard/wire/connection.ts'
import { TlsError } from '../src/shard/wire/errors.ts'
import { isLoopback } from '../src/shard/wire/tls.ts'
import { connect, it, openWire, startTestRouter, tenantWithKey } from './fixtures.ts'
import { query } from './router-support.ts'
import { asRouter, shard, topology } from './support.ts'
import {
  authenticationCode,
  certificateFor,
  type ExtraNode,
  startPlainNode,
  startRelay,
  verifyFull,
  viaRelay,
} from './wire-support.ts'

/**
 * TLS between router and shards, and the login's defences, against real servers: the topology's nodes
 * (ssl = on, certificates of the local CA `cluster up` made), one extra node without TLS whose
 * pg_hba.conf lets three roles in by trust, md5 and cleartext password, and on-path relays in front of
 * real nodes that play the attacker (a man in the middle with a certificate of its own, a server
 * whose SCRAM final message is dropped or altered, a stream with a corrupt length).
 */

let plain: ExtraNode
const primary = () => shard('shard-1').primary
const target = () => ({ host: '127.0.0.1', port: Number(new URL(primary()).port) })

const refusal = (options: ConnectOptions) =>
  openWire(options).then(
    () => {
      throw new Error('expected the connection to be refused')
    },
    (error: unknown) => error as WireError,
  )

it.beforeAll(async () => {
  plain = await startPlainNode()
  await connect(plain.url('switchyard', 'switchyard')).unsafe(`
    create role sy_trust login;
    set password_encryption = 'md5';
    create role sy_md5 login password 'md5-secret';
    create role sy_password login password 'clear-secret';`)
})

describe('TLS to the topology nodes (cluster up made a CA, every node has ssl = on)', () => {
  it('verify-full against the local CA: TLS, channel-bound SCRAM, and the shard sees TLS (pg_stat_ssl)', async () => {
    for (const host of ['127.0.0.1', 'localhost']) {
      const url = new URL(asRouter(primary()))
      url.hostname = host
      const connection = await openWire({
        url: url.toString(),
        tls: { ...verifyFull(), channelBinding: 'require' },
      })
      expect(connection.info).toMatchObject({ tls: true, authentication: 'SCRAM-SHA-256-PLUS' })
      const [row] = await connect(primary())<{ ssl: boolean; version: string }[]>`
        select ssl, version from pg_stat_ssl where pid = ${connection.info.pid}`
      expect(row).toEqual({ ssl: true, version: expect.stringMatching(/^TLSv1\.[23]$/) })
    }
  })

  it("the suite's routers run verify-full, and every router connection the shards see is TLS", async () => {
    expect(topology().router.tls).toMatchObject({
      mode: 'verify-full',
      rootCert: localCaFile(inject('home')),
    })
    const router = await startTestRouter()
    const tenant = await tenantWithKey('shard-1')
    const answer = await query(router, tenant, 'select count(*) from customers', [], { method: 'all' })
    expect(answer.status).toBe(200)
    const s = shard('shard-1')
    const seen: { ssl: boolean }[] = []
    for (const node of [s.primary, ...s.replicas]) {
      seen.push(
        ...(await connect(node)<{ ssl: boolean }[]>`
          select s.ssl from pg_stat_activity a join pg_stat_ssl s using (pid)
          where a.usename = ${topology().router.role.name} and a.application_name = 'switchyard-router'`),
      )
    }
    console.log(
      `router connections on shard-1's nodes: ${seen.length}, over TLS: ${seen.filter((r) => r.ssl).length}`,
    )
    expect(seen.length).toBeGreaterThan(0)
    expect(seen.every((row) => row.ssl)).toBe(true)
  })

  it('prefer goes plain to a loopback address (TLS there hides nothing); require and channel binding require still get TLS', async () => {
    const sslOf = async (pid: number) =>
      (await connect(primary())<{ ssl: boolean }[]>`select ssl from pg_stat_ssl where pid = ${pid}`)[0]?.ssl
    for (const host of ['127.0.0.1', 'localhost']) {
      const url = new URL(asRouter(primary()))
      url.hostname = host
      const preferred = await openWire({ url: url.toString(), tls: { mode: 'prefer' } })
      expect(preferred.info).toMatchObject({ tls: false })
      expect(await sslOf(preferred.info.pid)).toBe(false)
      const required = await openWire({ url: url.toString(), tls: { mode: 'require' } })
      expect(required.info).toMatchObject({ tls: true })
      expect(await sslOf(required.info.pid)).toBe(true)
      const bound = await openWire({
        url: url.toString(),
        tls: { mode: 'prefer', channelBinding: 'require' },
      })
      expect(bound.info).toMatchObject({ tls: true, authentication: 'SCRAM-SHA-256-PLUS' })
    }
    expect(['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1'].every(isLoopback)).toBe(true)
    expect(['10.0.0.1', '128.0.0.1', '::2', '::ffff:10.0.0.1', '', undefined].some(isLoopback)).toBe(false)
  })

  it('a cancel goes through TLS too, and the query stops on the shard', async () => {
    const connection = await openWire({ url: primary(), tls: verifyFull() })
    const controller = new AbortController()
    setTimeout(() => controller.abort('deadline'), 100)
    const error = await connection
      .run([{ sql: 'select pg_sleep(30)', params: [] }], { signal: controller.signal })
      .catch((e: WireError) => e)
    expect(error).toMatchObject({ code: 'query_cancelled' })
    const [row] = await connect(primary())<{ state: string }[]>`
      select state from pg_stat_activity where pid = ${connection.info.pid}`
    expect(row?.state).toBe('idle')
  })
})

describe('a man in the middle with a certificate of the same CA for another name', () => {
  it('verify-full refuses it by name; verify-ca accepts the certificate, and channel binding then fails the login', async () => {
    const impostor = await certificateFor('DNS:evil.example')
    const mitm = await startRelay({ target: target(), serverTls: impostor, upstreamTls: true })
    const url = viaRelay(asRouter(primary()), mitm)

    const byName = await refusal({ url, tls: verifyFull() })
    expect(byName).toBeInstanceOf(TlsError)
    expect(byName).toMatchObject({ code: 'tls_failed' })
    expect(byName.message).toMatch(/evil\.example|altnames/i)

    // The certificate chains to the CA, so only the binding of SCRAM to the TLS session catches it: the
    // server computes the binding from its own certificate, the client from the impostor's.
    const bound = await refusal({ url, tls: { mode: 'verify-ca', ca: verifyFull().ca } })
    expect(bound).toBeInstanceOf(PostgresError)
    expect(bound.message).toMatch(/channel binding/i)
    const unverified = await refusal({ url, tls: { mode: 'require' } })
    expect(unverified.message).toMatch(/channel binding/i)

    // What the binding prevents: without it, the relay is in.
    const unbound = await openWire({ url, tls: { mode: 'require', channelBinding: 'disable' } })
    expect(unbound.info).toMatchObject({ tls: true, authentication: 'SCRAM-SHA-256' })
  })

  it('stripping SCRAM-SHA-256-PLUS from the offer is detected by the server (and refused by channelBinding require)', async () => {
    const impostor = await certificateFor('DNS:evil.example')
    const mitm = await startRelay({
      target: target(),
      serverTls: impostor,
      upstreamTls: true,
      rewrite: (type, message) => {
        if (authenticationCode(type, message) !== 10) return message
        const body = Buffer.from('SCRAM-SHA-256\0\0')
        const out = Buffer.alloc(9 + body.length)
        out[0] = 0x52
        out.writeInt32BE(8 + body.length, 1)
        out.writeInt32BE(10, 5)
        body.copy(out, 9)
        return out
      },
    })
    const url = viaRelay(asRouter(primary()), mitm)
    const stripped = await refusal({ url, tls: { mode: 'require' } })
    expect(stripped).toBeInstanceOf(PostgresError)
    expect(stripped.message).toMatch(/channel binding/i)
    const required = await refusal({ url, tls: { mode: 'require', channelBinding: 'require' } })
    expect(required).toBeInstanceOf(AuthenticationError)
    expect(required).toMatchObject({ code: 'channel_binding_required' })
  })
})

describe('a node without TLS', () => {
  it('a router that requires TLS refuses it with tls_required, naming the node', async () => {
    const nodes = [
      { name: 'plain-node', shard: 'none', role: 'primary' as const, url: plain.url('sy_x', 'x') },
    ]
    for (const mode of ['require', 'verify-ca', 'verify-full'] as const) {
      const pools = createPools(nodes, {
        size: 1,
        statementTimeoutMs: 1000,
        tls: { mode, rootCert: localCaFile(inject('home')), channelBinding: 'prefer' },
      })
      try {
        const error = await pools
          .pool('plain-node')
          .reserve()
          .then(
            () => new Error('expected a refusal'),
            (e: WireError) => e,
          )
        expect(error).toBeInstanceOf(TlsError)
        expect(error).toMatchObject({ code: 'tls_required', node: 'plain-node' })
        expect(error.message).toContain('plain-node')
      } finally {
        await pools.close()
      }
    }
  })

  it('prefer falls back to plain SCRAM; channelBinding require refuses; a cancel works without TLS', async () => {
    const connection = await openWire({ url: plain.url('switchyard', 'switchyard') })
    expect(connection.info).toMatchObject({ tls: false, authentication: 'SCRAM-SHA-256' })
    const required = await refusal({
      url: plain.url('switchyard', 'switchyard'),
      tls: { channelBinding: 'require' },
    })
    expect(required).toMatchObject({ code: 'channel_binding_required' })
    const controller = new AbortController()
    setTimeout(() => controller.abort('deadline'), 100)
    const error = await connection
      .run([{ sql: 'select pg_sleep(30)', params: [] }], { signal: controller.signal })
      .catch((e: WireError) => e)
    expect(error).toMatchObject({ code: 'query_cancelled' })
    expect((await connection.run([{ sql: 'select 1', params: [] }]))[0]?.rows).toEqual([['1']])
  })

  it('router.tls comes from the config and its env overrides, validated', () => {
    const input = { directory: primary(), shards: [{ id: 'shard-1', primary: primary() }] }
    expect(parseTopology(input, 'test', {}).router.tls).toEqual({ mode: 'prefer', channelBinding: 'prefer' })
    const fromEnv = parseTopology(input, 'test', {
      SWITCHYARD_SHARD_SSLMODE: 'verify-full',
      SWITCHYARD_SHARD_SSLROOTCERT: '/etc/ca.crt',
      SWITCHYARD_SHARD_CHANNEL_BINDING: 'require',
    }).router.tls
    expect(fromEnv).toEqual({ mode: 'verify-full', rootCert: '/etc/ca.crt', channelBinding: 'require' })
    expect(() => parseTopology(input, 'test', { SWITCHYARD_SHARD_SSLMODE: 'always' })).toThrow(
      /router\.tls\.mode \(from SWITCHYARD_SHARD_SSLMODE\)/,
    )
    expect(() =>
      parseTopology(
        { ...input, router: { tls: { mode: 'disable', channelBinding: 'require' } } },
        'test',
        {},
      ),
    ).toThrow(/channelBinding/)
  })
})

describe('authentication: SCRAM or nothing, unless allowInsecureAuth', () => {
  it('refuses trust, MD5 and cleartext logins (real pg_hba methods), and accepts them with allowInsecureAuth', async () => {
    const cases = [
      { user: 'sy_trust', password: 'ignored', method: 'trust' },
      { user: 'sy_md5', password: 'md5-secret', method: 'md5' },
      { user: 'sy_password', password: 'clear-secret', method: 'password' },
    ]
    for (const { user, password, method } of cases) {
      const url = plain.url(user, password)
      const refused = await refusal({ url })
      expect(refused).toBeInstanceOf(AuthenticationError)
      expect(refused).toMatchObject({ code: 'auth_insecure' })
      const allowed = await openWire({ url, allowInsecureAuth: true })
      expect(allowed.info.authentication).toBe(method)
      expect((await allowed.run([{ sql: 'select current_user', params: [] }]))[0]?.rows).toEqual([[user]])
    }
  })

  it('refuses AuthenticationOk before the SCRAM final message (a downgrade), even with allowInsecureAuth', async () => {
    const dropFinal = await startRelay({
      target: target(),
      rewrite: (type, message) => (authenticationCode(type, message) === 12 ? null : message),
    })
    const url = viaRelay(asRouter(primary()), dropFinal)
    for (const allowInsecureAuth of [false, true]) {
      const error = await refusal({ url, allowInsecureAuth })
      expect(error).toBeInstanceOf(AuthenticationError)
      expect(error).toMatchObject({ code: 'auth_downgrade' })
    }
  })

  it('refuses a SCRAM final message whose server signature does not check out', async () => {
    const forged = await startRelay({
      target: target(),
      rewrite: (type, message) => {
        if (authenticationCode(type, message) !== 12) return message
        const text = message.toString('utf8', 9).replace(/v=./, (v) => `v=${v[2] === 'A' ? 'B' : 'A'}`)
        const out = Buffer.alloc(9 + Buffer.byteLength(text))
        message.copy(out, 0, 0, 9)
        out.write(text, 9)
        return out
      },
    })
    const error = await refusal({ url: viaRelay(asRouter(primary()), forged) })
    expect(error).toMatchObject({ code: 'auth_failed' })
    expect(error.message).toMatch(/signature/)
  })
})

describe('a corrupt stream fails the connection, not the process', () => {
  it('a negative or absurd message length is a protocol error', async () => {
    for (const header of [
      [0x5a, 0xff, 0xff, 0xff, 0xf0],
      [0x44, 0x7f, 0xff, 0xff, 0xff],
    ]) {
      let readyForQuery = 0
      const corrupt = await startRelay({
        target: target(),
        // The second ReadyForQuery (the first query's) arrives as a header with a corrupt length.
        rewrite: (type, message) => (type === 0x5a && ++readyForQuery === 2 ? Buffer.from(header) : message),
      })
      const connection = await openWire({ url: viaRelay(asRouter(primary()), corrupt) })
      const error = await connection.run([{ sql: 'select 1', params: [] }]).catch((e: WireError) => e)
      expect(error).toBeInstanceOf(ConnectionError)
      expect(error).toMatchObject({ code: 'PROTOCOL_ERROR', sent: true })
      expect(connection.broken).toBe(true)
    }
  })
})

describe('cluster up on existing data folders', () => {
  it('a node whose settings are written again with the CA serves TLS after a reload, no restart', async () => {
    const url = plain.url('switchyard', 'switchyard')
    await plain.reconfigure(true)
    const secured = await openWire({ url, tls: { ...verifyFull(), channelBinding: 'require' } })
    expect(secured.info).toMatchObject({ tls: true, authentication: 'SCRAM-SHA-256-PLUS' })
    await plain.reconfigure(false)
    expect(await refusal({ url, tls: { mode: 'require' } })).toMatchObject({ code: 'tls_required' })
  })
})
