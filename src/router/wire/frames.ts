import { ProtocolViolation } from './protocol.ts'

/** A client message: its type byte (0 for the untyped startup packets) and its body, copied out. */
export interface Frame {
  type: number
  body: Buffer
}

/**
 * Cuts a client's byte stream into messages. The first packets (SSLRequest, GSSENCRequest,
 * CancelRequest, StartupMessage) have no type byte; everything after the startup message has one.
 * A length past `maxBytes` (or below the header's own size) is refused before anything of the body is
 * held: a client cannot make the router buffer more than `maxBytes` for one message.
 */
export class FrameReader {
  private pending: Buffer[] = []
  private pendingBytes = 0
  private typed = false

  constructor(private readonly maxBytes: number) {}

  /** From now on every message starts with a type byte (after the StartupMessage). */
  startTyped() {
    this.typed = true
  }

  /** Adds a chunk; returns the messages it completed (a message split over chunks waits for the rest). */
  push(chunk: Buffer): Frame[] {
    this.pending.push(chunk)
    this.pendingBytes += chunk.length
    const frames: Frame[] = []
    for (;;) {
      const frame = this.next()
      if (!frame) return frames
      frames.push(frame)
    }
  }

  private next(): Frame | undefined {
    const header = this.typed ? 5 : 4
    if (this.pendingBytes < header) return undefined
    const head = this.peek(header)
    const type = this.typed ? (head[0] as number) : 0
    const length = head.readInt32BE(this.typed ? 1 : 0)
    // The length counts itself (4 bytes); a startup packet is at least 8 (length and a code).
    if (length < (this.typed ? 4 : 8) || length > this.maxBytes)
      throw new ProtocolViolation(
        length > this.maxBytes
          ? `a message of ${length} bytes is larger than the limit of ${this.maxBytes}`
          : `invalid message length ${length}`,
      )
    const total = length + (this.typed ? 1 : 0)
    if (this.pendingBytes < total) return undefined
    const whole = this.take(total)
    return { type, body: whole.subarray(header) }
  }

  private peek(size: number): Buffer {
    const first = this.pending[0] as Buffer
    if (first.length >= size) return first
    // Merged once and kept merged: a client sending a byte at a time cannot make each chunk copy all before it.
    const merged = Buffer.concat(this.pending)
    this.pending = [merged]
    return merged
  }

  private take(size: number): Buffer {
    const merged = this.pending.length === 1 ? (this.pending[0] as Buffer) : Buffer.concat(this.pending)
    const taken = Buffer.from(merged.subarray(0, size))
    const rest = merged.subarray(size)
    this.pending = rest.length ? [rest] : []
    this.pendingBytes = rest.length
    return taken
  }
}
