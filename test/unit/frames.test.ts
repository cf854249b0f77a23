import { describe, expect, it } from 'vitest'
import { FrameReader } from '../../src/router/wire/frames.ts'

/** A StartupMessage (protocol 3.0, user u) and typed messages after it, as a client sends them. */
function conversation(): { bytes: Buffer; expected: { type: number; body: string }[] } {
  const startupBody = Buffer.concat([Buffer.from([0, 3, 0, 0]), Buffer.from('user\0u\0\0')])
  const startup = Buffer.concat([int32(startupBody.length + 4), startupBody])
  const typed = (type: string, body: Buffer) =>
    Buffer.concat([Buffer.from(type), int32(body.length + 4), body])
  const query = Buffer.from(`select '${'x'.repeat(70_000)}'\0`)
  const messages = [
    { type: 'p', body: Buffer.from('SCRAM-SHA-256\0') },
    { type: 'Q', body: query },
    { type: 'S', body: Buffer.alloc(0) },
    { type: 'Q', body: Buffer.from('select 1\0') },
  ]
  return {
    bytes: Buffer.concat([startup, ...messages.map((m) => typed(m.type, m.body))]),
    expected: [
      { type: 0, body: startupBody.toString('latin1') },
      ...messages.map((m) => ({ type: m.type.charCodeAt(0), body: m.body.toString('latin1') })),
    ],
  }
}

const int32 = (value: number) => {
  const bytes = Buffer.alloc(4)
  bytes.writeInt32BE(value)
  return bytes
}

const read = (reader: FrameReader, chunks: Buffer[]) =>
  chunks
    .flatMap((chunk) => reader.push(chunk))
    .map((f) => ({ type: f.type, body: f.body.toString('latin1') }))

describe('FrameReader', () => {
  it('cuts the same messages however the stream is split: whole, a byte at a time, at random', () => {
    const { bytes, expected } = conversation()
    expect(read(new FrameReader(1 << 20), [bytes])).toEqual(expected)
    const single = Array.from(bytes, (byte) => Buffer.from([byte]))
    expect(read(new FrameReader(1 << 20), single)).toEqual(expected)
    for (let round = 0; round < 20; round++) {
      const chunks: Buffer[] = []
      for (let at = 0; at < bytes.length; ) {
        const size = 1 + Math.floor(Math.random() * 9000)
        chunks.push(bytes.subarray(at, at + size))
        at += size
      }
      expect(read(new FrameReader(1 << 20), chunks)).toEqual(expected)
    }
  })

  it('refuses a length past the limit, or a startup packet past 10000 bytes, from the header alone', () => {
    expect(() => new FrameReader(1 << 20).push(int32(20_000))).toThrow(/larger than the limit of 10000/)
    const { bytes } = conversation()
    const reader = new FrameReader(1024)
    // The startup and the SASL message pass; the 70 kB Query's header is refused.
    expect(() => reader.push(bytes)).toThrow(/larger than the limit of 1024/)
  })

  it('a header claiming a megabyte holds 16 KiB until the bytes arrive', () => {
    const reader = new FrameReader(1 << 20)
    reader.push(Buffer.concat([int32(8), Buffer.from([0, 3, 0, 0])]))
    reader.push(Buffer.concat([Buffer.from('Q'), int32(1 << 20)]))
    expect((reader as unknown as { body: Buffer }).body.length).toBe(16 * 1024)
  })
})
