import { ProtocolViolation } from './protocol.ts'

/** A client message: its type byte (0 for the untyped startup packets) and its body, copied out. */
export interface Frame {
  type: number
  body: Buffer
}

/** PostgreSQL's own bound on a startup packet (MAX_STARTUP_PACKET_LENGTH): nothing larger before login. */
export const MAX_STARTUP_BYTES = 10_000

/** What a body's buffer starts with; it doubles as the body arrives, up to its declared length. */
const FIRST_BODY_BYTES = 16 * 1024

/** The request codes of untyped packets that are not a StartupMessage: more untyped packets may follow. */
const NEGOTIATION_CODES = new Set([80877102, 80877103, 80877104])

/**
 * Cuts a client's byte stream into messages. The first packets (SSLRequest, GSSENCRequest,
 * CancelRequest, StartupMessage) have no type byte; everything after the StartupMessage has one, so the
 * reader switches itself as it cuts one (a client may send its next message in the same segment).
 * A length past `maxBytes` (MAX_STARTUP_BYTES before the StartupMessage) or below the header's own size
 * is refused before anything of the body is held; a body is copied into one buffer as it arrives,
 * grown by doubling up to its declared length, so a client sending a byte at a time costs the router its
 * bytes, not an object per byte, and a header claiming a megabyte costs 16 KiB until the bytes come.
 */
export class FrameReader {
  private typed = false
  private readonly head = Buffer.alloc(5)
  private headFilled = 0
  private type = 0
  private body: Buffer | undefined
  /** The declared length of the body being read; `body` grows towards it as bytes arrive. */
  private bodyLength = 0
  private bodyFilled = 0

  constructor(private maxBytes: number) {}

  /** A new limit for the messages after this one (a session raises it once its client has logged in). */
  allow(maxBytes: number) {
    this.maxBytes = maxBytes
  }

  /** Adds a chunk; returns the messages it completed (a message split over chunks waits for the rest). */
  push(chunk: Buffer): Frame[] {
    const frames: Frame[] = []
    let at = 0
    while (at < chunk.length) {
      if (!this.body) {
        const headSize = this.typed ? 5 : 4
        const n = Math.min(headSize - this.headFilled, chunk.length - at)
        chunk.copy(this.head, this.headFilled, at, at + n)
        this.headFilled += n
        at += n
        if (this.headFilled < headSize) break
        this.startBody()
      }
      const n = Math.min(this.bodyLength - this.bodyFilled, chunk.length - at)
      const body = this.room(this.bodyFilled + n)
      chunk.copy(body, this.bodyFilled, at, at + n)
      this.bodyFilled += n
      at += n
      if (this.bodyFilled === this.bodyLength) frames.push(this.complete(body))
    }
    return frames
  }

  /** The header is whole: its length is checked before a byte of the body is held. */
  private startBody() {
    this.type = this.typed ? (this.head[0] as number) : 0
    const length = this.head.readInt32BE(this.typed ? 1 : 0)
    const max = this.typed ? this.maxBytes : Math.min(this.maxBytes, MAX_STARTUP_BYTES)
    // The length counts itself (4 bytes); a startup packet is at least 8 (length and a code).
    if (length < (this.typed ? 4 : 8) || length > max)
      throw new ProtocolViolation(
        length > max
          ? `a message of ${length} bytes is larger than the limit of ${max}`
          : `invalid message length ${length}`,
      )
    this.bodyLength = length - 4
    this.body = Buffer.allocUnsafe(Math.min(this.bodyLength, FIRST_BODY_BYTES))
    this.bodyFilled = 0
  }

  /**
   * The body buffer, grown (doubling, up to the declared length) to hold `size` bytes: a header
   * claiming a megabyte costs the router what the client has actually sent, not what it claims.
   */
  private room(size: number): Buffer {
    let body = this.body as Buffer
    if (size <= body.length) return body
    const grown = Buffer.allocUnsafe(Math.min(this.bodyLength, Math.max(size, 2 * body.length)))
    body.copy(grown, 0, 0, this.bodyFilled)
    body = grown
    this.body = grown
    return body
  }

  private complete(body: Buffer): Frame {
    const frame = { type: this.type, body }
    this.body = undefined
    this.headFilled = 0
    if (!this.typed && !NEGOTIATION_CODES.has(body.readInt32BE(0))) this.typed = true
    return frame
  }
}
