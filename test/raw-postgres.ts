import { connect as tcpConnect } from 'node:net'
import type { Duplex } from 'node:stream'
import WebSocket, { createWebSocketStream } from 'ws'
import {
  MessageWriter,
  writeSaslInitial,
  writeSaslResponse,
  writeStartup,
} from '../src/shard/wire/messages.ts'
import { startScram } from '../src/shard/wire/scram.ts'

/**
 * A PostgreSQL client that sends exactly the bytes a test writes: for what no driver sends (a client that
 * never reads, a message order drivers avoid, a half-closed socket). It logs in with SCRAM as drivers do
 * and then gives the test the socket and the backend's messages one by one.
 */

export interface BackendMessage {
  type: string
  body: Buffer
}

export class RawPostgres {
  readonly writer = new MessageWriter()
  private pending: Buffer = Buffer.alloc(0)
  private readonly messages: BackendMessage[] = []
  private waiting: (() => void) | undefined
  /** Set once the router has closed the connection (its 'close' event). */
  ended = false
  readonly closed: Promise<void>
  /** Resolves when the router has ended its side of the stream (its FIN). */
  readonly endedByRouter: Promise<void>

  private constructor(readonly socket: Duplex) {
    socket.on('error', () => {})
    socket.on('data', (chunk) => this.arrive(chunk))
    this.endedByRouter = new Promise((resolve) => socket.once('end', resolve))
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.ended = true
        this.waiting?.()
        resolve()
      }),
    )
  }

  /** Connects to the router's PostgreSQL port and logs in as `user` with `password`. */
  static async login(
    port: number,
    user: string,
    password: string,
    options: { halfOpen?: boolean; database?: string; oneSegment?: boolean } = {},
  ): Promise<RawPostgres> {
    // Half open: the router's end of the stream does not end ours; only the router can close the socket.
    const socket = tcpConnect({ port, host: '127.0.0.1', allowHalfOpen: options.halfOpen ?? false })
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    return RawPostgres.over(socket, user, password, options.database, options.oneSegment)
  }

  /** The same over a WebSocket to `url` (the HTTP port's /v2); `ws` is the WebSocket, to close it as a peer would. */
  static async loginWebSocket(url: string, user: string, password: string) {
    const ws = new WebSocket(url)
    await new Promise<void>((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('error', reject)
    })
    return { ws, client: await RawPostgres.over(createWebSocketStream(ws), user, password) }
  }

  /**
   * Logs in on a connected stream; resolves after the first ReadyForQuery. `oneSegment`: the
   * StartupMessage and the SASLInitialResponse go in one write, as a client that knows the server's
   * mechanism may send them (the server must cut the second with its type byte).
   */
  static async over(
    stream: Duplex,
    user: string,
    password: string,
    database = 'switchyard',
    oneSegment = false,
  ): Promise<RawPostgres> {
    const client = new RawPostgres(stream)
    const scram = startScram(password)
    writeStartup(client.writer, { user, database })
    if (!oneSegment) {
      client.send()
      await client.expect('R')
    }
    writeSaslInitial(client.writer, scram.mechanism, scram.clientFirst)
    client.send()
    if (oneSegment) await client.expect('R')
    const first = await client.expect('R')
    writeSaslResponse(client.writer, await scram.clientFinal(first.body.subarray(4).toString()))
    client.send()
    await client.until('Z')
    return client
  }

  /** Sends what the test wrote into `writer` (or these bytes). */
  send(bytes: Buffer = this.writer.take()): boolean {
    return this.socket.write(bytes)
  }

  /** The next backend message (undefined once the connection is closed and nothing is left). */
  async next(): Promise<BackendMessage | undefined> {
    while (this.messages.length === 0) {
      if (this.ended) return undefined
      await new Promise<void>((resolve) => {
        this.waiting = resolve
      })
    }
    return this.messages.shift()
  }

  /** The next message, which must be of this type (an ErrorResponse instead throws its fields). */
  async expect(type: string): Promise<BackendMessage> {
    const message = await this.next()
    if (message?.type === type) return message
    throw new Error(`expected ${type}, got ${message ? describe(message) : 'the connection closed'}`)
  }

  /** Every message up to and including the first of `type`. */
  async until(type: string): Promise<BackendMessage[]> {
    const seen: BackendMessage[] = []
    for (;;) {
      const message = await this.next()
      if (!message)
        throw new Error(`the connection closed before ${type}; saw ${seen.map(describe).join(' ')}`)
      seen.push(message)
      if (message.type === type) return seen
    }
  }

  close() {
    this.socket.destroy()
  }

  private arrive(chunk: Buffer) {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk
    while (this.pending.length >= 5) {
      const length = this.pending.readInt32BE(1)
      if (this.pending.length < length + 1) break
      this.messages.push({
        type: String.fromCharCode(this.pending[0] as number),
        body: Buffer.from(this.pending.subarray(5, length + 1)),
      })
      this.pending = this.pending.subarray(length + 1)
    }
    const waiting = this.waiting
    this.waiting = undefined
    waiting?.()
  }
}

/** An ErrorResponse's or NoticeResponse's fields by their code letter (C: SQLSTATE, M: message). */
export function errorFields(body: Buffer): Record<string, string> {
  const fields: Record<string, string> = {}
  let at = 0
  while (at < body.length && body[at] !== 0) {
    const code = String.fromCharCode(body[at] as number)
    const end = body.indexOf(0, at + 1)
    fields[code] = body.toString('utf8', at + 1, end)
    at = end + 1
  }
  return fields
}

export function describe(message: BackendMessage): string {
  if (message.type === 'E' || message.type === 'N') {
    const fields = errorFields(message.body)
    return `${message.type}(${fields.C}: ${fields.M})`
  }
  return message.type
}

/** The SQLSTATEs of the ErrorResponses among `messages`. */
export const errorCodes = (messages: BackendMessage[]) =>
  messages.filter((message) => message.type === 'E').map((message) => errorFields(message.body).C)
