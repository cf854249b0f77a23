import type { ColumnDescription } from '../../shard/wire/messages.ts'
import { MessageWriter } from '../../shard/wire/messages.ts'

/**
 * The server side of PostgreSQL's protocol 3.0: the backend messages the router's PostgreSQL front end
 * sends, and readers for what clients send. Readers take a whole message body (the frame reader,
 * frames.ts, bounds its size first) and throw `ProtocolViolation` on anything malformed: the session
 * answers 08P01 and closes, as PostgreSQL does.
 */

export class ProtocolViolation extends Error {
  override name = 'ProtocolViolation'
}

export const SSL_REQUEST = 80877103
export const GSSENC_REQUEST = 80877104
export const CANCEL_REQUEST = 80877102
export const PROTOCOL_3_0 = 196608

/** Reads a message body left to right; every read is bounds-checked. */
export class BodyReader {
  private at = 0
  constructor(private readonly body: Buffer) {}

  get left(): number {
    return this.body.length - this.at
  }

  byte(): number {
    this.need(1)
    return this.body[this.at++] as number
  }

  int16(): number {
    this.need(2)
    const value = this.body.readInt16BE(this.at)
    this.at += 2
    return value
  }

  uint16(): number {
    this.need(2)
    const value = this.body.readUInt16BE(this.at)
    this.at += 2
    return value
  }

  int32(): number {
    this.need(4)
    const value = this.body.readInt32BE(this.at)
    this.at += 4
    return value
  }

  cstring(): string {
    const nul = this.body.indexOf(0, this.at)
    if (nul === -1) throw new ProtocolViolation('a string is not terminated')
    const value = this.body.toString('utf8', this.at, nul)
    this.at = nul + 1
    return value
  }

  bytes(size: number): Buffer {
    this.need(size)
    const value = this.body.subarray(this.at, this.at + size)
    this.at += size
    return value
  }

  rest(): Buffer {
    return this.bytes(this.left)
  }

  private need(size: number) {
    if (size < 0 || this.at + size > this.body.length)
      throw new ProtocolViolation('a message is shorter than its fields')
  }
}

/** StartupMessage's parameters (user, database, options, application_name, …). */
export function readStartupParameters(reader: BodyReader): Map<string, string> {
  const parameters = new Map<string, string>()
  for (;;) {
    const name = reader.cstring()
    if (name === '') break
    if (parameters.size >= 64) throw new ProtocolViolation('too many startup parameters')
    parameters.set(name, reader.cstring())
  }
  return parameters
}

export interface ParseMessage {
  name: string
  sql: string
  paramTypes: number[]
}

export function readParse(reader: BodyReader): ParseMessage {
  const name = reader.cstring()
  const sql = reader.cstring()
  const count = reader.uint16()
  const paramTypes: number[] = new Array(count)
  for (let i = 0; i < count; i++) paramTypes[i] = reader.int32() >>> 0
  return { name, sql, paramTypes }
}

export interface BindMessage {
  portal: string
  statement: string
  paramFormats: number[]
  params: (Buffer | null)[]
  resultFormats: number[]
}

export function readBind(reader: BodyReader): BindMessage {
  const portal = reader.cstring()
  const statement = reader.cstring()
  const paramFormats = formatCodes(reader)
  const count = reader.uint16()
  const params: (Buffer | null)[] = new Array(count)
  for (let i = 0; i < count; i++) {
    const size = reader.int32()
    if (size < -1) throw new ProtocolViolation(`parameter ${i + 1} claims ${size} bytes`)
    // Copied: the body it came in is the frame reader's, reused for the next message.
    params[i] = size === -1 ? null : Buffer.from(reader.bytes(size))
  }
  const resultFormats = formatCodes(reader)
  if (paramFormats.length > 1 && paramFormats.length !== count)
    throw new ProtocolViolation(
      `bind message has ${paramFormats.length} parameter formats but ${count} parameters`,
    )
  return { portal, statement, paramFormats, params, resultFormats }
}

function formatCodes(reader: BodyReader): number[] {
  const count = reader.uint16()
  const codes: number[] = new Array(count)
  for (let i = 0; i < count; i++) {
    const code = reader.int16()
    if (code !== 0 && code !== 1) throw new ProtocolViolation(`unsupported format code: ${code}`)
    codes[i] = code
  }
  return codes
}

/** Describe and Close: 'S' a statement or 'P' a portal, and its name. */
export function readTarget(reader: BodyReader): { kind: 'S' | 'P'; name: string } {
  const kind = String.fromCharCode(reader.byte())
  if (kind !== 'S' && kind !== 'P') throw new ProtocolViolation(`invalid target type "${kind}"`)
  return { kind, name: reader.cstring() }
}

export function readExecute(reader: BodyReader): { portal: string; maxRows: number } {
  return { portal: reader.cstring(), maxRows: reader.int32() }
}

/** The format of result column `i` as a Bind's codes say: none (text), one for all, or one each. */
export function formatOf(codes: readonly number[], i: number): number {
  return codes.length === 0 ? 0 : codes.length === 1 ? (codes[0] as number) : (codes[i] ?? 0)
}

// ---- Backend messages ----

export function authenticationRequest(writer: MessageWriter, code: number, payload?: Buffer | string) {
  writer.begin('R').int32(code)
  if (payload !== undefined) writer.raw(payload)
  writer.end()
}

export function authenticationSasl(writer: MessageWriter, mechanisms: readonly string[]) {
  writer.begin('R').int32(10)
  for (const mechanism of mechanisms) writer.cstring(mechanism)
  writer.byte(0).end()
}

export function parameterStatus(writer: MessageWriter, name: string, value: string) {
  writer.begin('S').cstring(name).cstring(value).end()
}

export function backendKeyData(writer: MessageWriter, pid: number, key: Buffer) {
  writer.begin('K').int32(pid).raw(key).end()
}

export function readyForQuery(writer: MessageWriter, status: 'I' | 'T' | 'E') {
  writer.begin('Z').byte(status.charCodeAt(0)).end()
}

export function rowDescription(
  writer: MessageWriter,
  fields: readonly ColumnDescription[],
  formats: readonly number[],
) {
  writer.begin('T').uint16(fields.length)
  fields.forEach((field, i) => {
    writer
      .cstring(field.name)
      .int32(field.tableID | 0)
      .int16(field.columnID)
      .int32(field.dataTypeID | 0)
      .int16(field.dataTypeSize)
      .int32(field.dataTypeModifier)
      .int16(formatOf(formats, i))
  })
  writer.end()
}

export function parameterDescription(writer: MessageWriter, types: readonly number[]) {
  writer.begin('t').uint16(types.length)
  for (const type of types) writer.int32(type | 0)
  writer.end()
}

/** A DataRow whose body the shard sent (column count, each value's length and bytes): passed on as is. */
export function dataRow(writer: MessageWriter, body: Buffer) {
  writer.begin('D').raw(body).end()
}

export function commandComplete(writer: MessageWriter, tag: string) {
  writer.begin('C').cstring(tag).end()
}

/** Empty message bodies: ParseComplete, BindComplete, CloseComplete, NoData, EmptyQueryResponse, PortalSuspended. */
export function bare(writer: MessageWriter, type: '1' | '2' | '3' | 'n' | 'I' | 's') {
  writer.begin(type).end()
}

export interface ErrorFields {
  severity: 'ERROR' | 'FATAL' | 'WARNING'
  code: string
  message: string
  detail?: string | undefined
  hint?: string | undefined
  position?: string | undefined
  schema?: string | undefined
  table?: string | undefined
  column?: string | undefined
  constraint?: string | undefined
  dataType?: string | undefined
  where?: string | undefined
}

export function errorResponse(writer: MessageWriter, error: ErrorFields, type: 'E' | 'N' = 'E') {
  writer.begin(type).byte(0x53).cstring(error.severity).byte(0x56).cstring(error.severity)
  writer.byte(0x43).cstring(error.code).byte(0x4d).cstring(error.message)
  const optional: [number, string | undefined][] = [
    [0x44, error.detail],
    [0x48, error.hint],
    [0x50, error.position],
    [0x57, error.where],
    [0x73, error.schema],
    [0x74, error.table],
    [0x63, error.column],
    [0x64, error.dataType],
    [0x6e, error.constraint],
  ]
  for (const [field, value] of optional) if (value) writer.byte(field).cstring(value)
  writer.byte(0).end()
}

export { MessageWriter }
