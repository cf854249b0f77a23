import { randomBytes } from 'node:crypto'
import type { TenantRoute } from '../../directory/routes.ts'
import { parseTenantId } from '../../directory/tenants.ts'
import { SwitchyardError } from '../../errors.ts'
import type { Frame } from './frames.ts'
import {
  authenticationRequest,
  authenticationSasl,
  BodyReader,
  backendKeyData,
  CANCEL_REQUEST,
  GSSENC_REQUEST,
  type MessageWriter,
  ProtocolViolation,
  parameterStatus,
  readStartupParameters,
  readyForQuery,
  SSL_REQUEST,
} from './protocol.ts'
import { parseClientFirst, serverFirst, verifyClientFinal } from './scram.ts'
import type { WireDeps } from './server.ts'
import type { ClientStream, SessionRegistry } from './session.ts'
import { API_REQUEST, createSettings, type SessionSettings } from './settings.ts'

/** A client that logged in: its tenant, where the tenant lives, and what identifies its session. */
export interface Login {
  tenant: string
  route: TenantRoute
  /** BackendKeyData: a CancelRequest must name both. */
  pid: number
  secret: Buffer
  settings: SessionSettings
  /** The API key the client proved it holds: a revoke ends the session (session.ts). */
  keyId: string
  /** Takes the session out of the registry (cancels, the tenant's session count): when it ends. */
  unregister: () => void
}

export interface LoginContext {
  socket: ClientStream
  writer: MessageWriter
  deps: WireDeps
  registry: SessionRegistry
  /** What a CancelRequest naming this session does. */
  cancel: () => void
}

const MECHANISM = 'SCRAM-SHA-256'

/**
 * Startup and authentication, one client message at a time: an SSLRequest or GSSENCRequest that reaches
 * the session is declined ('N': TLS is negotiated before the session, tls.ts, when `router.pgTls` is set;
 * over a WebSocket, or without pgTls, libpq then goes on in plain text unless sslmode requires it),
 * a CancelRequest cancels the session it names and closes, a StartupMessage names the tenant (user) and
 * starts SCRAM-SHA-256, whose proof is checked against every API key that may act for the tenant. The
 * password never crosses the wire, so no key can be read off it, and a wrong one is 28P01 without saying
 * whether the tenant exists; an unknown tenant is refused only after a key proved the client may ask.
 */
export function createLogin(context: LoginContext) {
  const { socket, writer, deps, registry } = context
  let phase: 'startup' | 'sasl-initial' | 'sasl-final' = 'startup'
  let tenant = ''
  let applicationName = ''
  let keyId = ''
  let scram: ReturnType<typeof parseClientFirst> | undefined
  let first: ReturnType<typeof serverFirst> | undefined
  let candidates: Awaited<ReturnType<WireDeps['loginCandidates']['forTenant']>> | undefined
  let negotiations = 0

  return async function step(frame: Frame): Promise<Login | 'more' | 'closed'> {
    const reader = new BodyReader(frame.body)
    switch (phase) {
      case 'startup':
        return startup(reader)
      case 'sasl-initial':
        return saslInitial(frame, reader)
      case 'sasl-final':
        return saslFinal(frame, reader)
    }
  }

  function startup(reader: BodyReader): Login | 'more' | 'closed' {
    const code = reader.int32()
    if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
      // libpq asks once for each (GSSAPI, then TLS): a client asking on and on is not a PostgreSQL client.
      if (++negotiations > 2) throw new ProtocolViolation('too many encryption requests')
      socket.write('N')
      return 'more'
    }
    if (code === CANCEL_REQUEST) {
      // A cancel key is 4 bytes in protocol 3.0: anything else names no session of this router.
      if (reader.left === 8) registry.cancel(reader.int32(), Buffer.from(reader.rest()))
      socket.destroy()
      return 'closed'
    }
    if (code >>> 16 !== 3)
      throw new SwitchyardError(
        'feature_not_supported',
        `unsupported frontend protocol ${code >>> 16}.${code & 0xffff}: the router speaks 3.0`,
      )
    const parameters = readStartupParameters(reader)
    const options = [...parameters.keys()].filter((name) => name.startsWith('_pq_.'))
    // A newer minor version or protocol options: say what this server speaks (NegotiateProtocolVersion).
    if ((code & 0xffff) !== 0 || options.length) {
      writer.begin('v').int32(0).int32(options.length)
      for (const option of options) writer.cstring(option)
      writer.end()
    }
    const user = parameters.get('user')
    try {
      tenant = parseTenantId(user).toLowerCase()
    } catch {
      throw new SwitchyardError(
        'unauthorized',
        'the user must be a tenant id (a UUID); the password one of its API keys',
      )
    }
    applicationName = (parameters.get('application_name') ?? '').slice(0, 63)
    authenticationSasl(writer, [MECHANISM])
    phase = 'sasl-initial'
    return 'more'
  }

  async function saslInitial(frame: Frame, reader: BodyReader): Promise<'more'> {
    if (frame.type !== 0x70) throw new ProtocolViolation('expected SASLInitialResponse')
    const mechanism = reader.cstring()
    if (mechanism !== MECHANISM) throw failed()
    const size = reader.int32()
    if (size < 0 || size > reader.left) throw failed()
    scram = parseClientFirst(reader.bytes(size).toString('utf8'))
    candidates = await deps.loginCandidates.forTenant(tenant)
    first = serverFirst(scram.clientNonce, candidates.salt, candidates.iterations)
    authenticationRequest(writer, 11, first.message)
    phase = 'sasl-final'
    return 'more'
  }

  async function saslFinal(frame: Frame, reader: BodyReader): Promise<Login> {
    if (frame.type !== 0x70) throw new ProtocolViolation('expected SASLResponse')
    const verdict = verifyClientFinal(
      reader.rest().toString('utf8'),
      { client: scram as NonNullable<typeof scram>, server: first as NonNullable<typeof first> },
      candidates?.keys ?? [],
    )
    if (!verdict.matched) throw failed()
    deps.loginCandidates.proven(tenant, candidates as NonNullable<typeof candidates>)
    keyId = verdict.matched.id
    authenticationRequest(writer, 12, verdict.serverFinal)
    authenticationRequest(writer, 0)
    const route = await deps.routes.resolve(tenant)
    return ready(route)
  }

  function ready(route: TenantRoute): Login {
    const settings = createSettings({
      application_name: applicationName,
      client_encoding: 'UTF8',
      DateStyle: 'ISO, MDY',
      IntervalStyle: 'postgres',
      TimeZone: deps.shardSettings.timeZone,
      integer_datetimes: 'on',
      standard_conforming_strings: 'on',
      server_version: deps.shardSettings.serverVersion,
      server_encoding: 'UTF8',
      is_superuser: 'off',
      session_authorization: tenant,
      default_transaction_read_only: 'off',
      in_hot_standby: 'off',
      extra_float_digits: '1',
      [API_REQUEST]: '',
      'default:application_name': applicationName,
    })
    for (const [name, value] of settings.values)
      if (!name.startsWith('default:') && name !== 'extra_float_digits' && name !== API_REQUEST)
        parameterStatus(writer, reported(name), value)
    const secret = randomBytes(4)
    // Before BackendKeyData: past the tenant's session cap the login ends here (FATAL 53300).
    const { pid, remove } = registry.add(tenant, secret, context.cancel)
    backendKeyData(writer, pid, secret)
    readyForQuery(writer, 'I')
    return { tenant, route, pid, secret, settings, keyId, unregister: remove }
  }

  function failed() {
    return new SwitchyardError('unauthorized', `password authentication failed for user "${tenant}"`)
  }
}

/** ParameterStatus names as PostgreSQL spells them (the settings keep them lowercase). */
function reported(name: string): string {
  const spelled: Record<string, string> = {
    datestyle: 'DateStyle',
    intervalstyle: 'IntervalStyle',
    timezone: 'TimeZone',
  }
  return spelled[name] ?? name
}
