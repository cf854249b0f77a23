/**
 * PostgreSQL's frontend/backend protocol, version 3: the frontend messages the router sends, and the
 * parts of backend messages it reads: what a pipeline of prepared statements needs, in text format for the
 * router's own answers, in the client's formats for the PostgreSQL front end (src/router/wire).
 *
 * Hand-written rather than node-postgres's `pg-protocol`: its parser buffers every message whole before
 * anyone sees it and allocates a message object per message, so a result budget could only be checked
 * after a 600 MB DataRow had been buffered. Here the connection sees each message's header first (and
 * skips a body it will not keep as it arrives), and readers take (buffer, start, end) so a DataRow costs
 * its row array and its strings, nothing more.
 */

/** Writes frontend messages into one growing buffer, so a whole pipeline leaves in one socket write. */
export class MessageWriter {
  private buffer = Buffer.allocUnsafe(4096)
  private length = 0
  /** Where the current message's length field is. */
  private start = 0

  /** A message with a type byte (every message but the startup message). */
  begin(type: string): this {
    this.ensure(5)
    this.buffer[this.length] = type.charCodeAt(0)
    this.start = this.length + 1
    this.length += 5
    return this
  }

  /** The startup message has no type byte. */
  beginUntyped(): this {
    this.ensure(4)
    this.start = this.length
    this.length += 4
    return this
  }

  /** Fills in the length of the message begun last. */
  end(): this {
    this.buffer.writeInt32BE(this.length - this.start, this.start)
    return this
  }

  int16(value: number): this {
    this.ensure(2)
    this.buffer.writeInt16BE(value, this.length)
    this.length += 2
    return this
  }

  /** Counts in Bind (parameters, format codes) are unsigned: up to 65535. */
  uint16(value: number): this {
    this.ensure(2)
    this.buffer.writeUInt16BE(value, this.length)
    this.length += 2
    return this
  }

  int32(value: number): this {
    this.ensure(4)
    this.buffer.writeInt32BE(value, this.length)
    this.length += 4
    return this
  }

  byte(value: number): this {
    this.ensure(1)
    this.buffer[this.length++] = value
    return this
  }

  /** A NUL-terminated string. */
  cstring(value: string): this {
    this.raw(value)
    return this.byte(0)
  }

  /** A Bind value: its byte length, then its UTF-8 bytes, encoded once. */
  lengthPrefixed(value: string): this {
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    this.ensure(4 + value.length * 3)
    const size = this.buffer.write(value, this.length + 4, 'utf8')
    this.buffer.writeInt32BE(size, this.length)
    this.length += 4 + size
    return this
  }

  /** Text without a terminator (a SASL payload). */
  raw(value: string | Buffer): this {
    const size = typeof value === 'string' ? Buffer.byteLength(value) : value.length
    this.ensure(size)
    if (typeof value === 'string') this.buffer.write(value, this.length, 'utf8')
    else value.copy(this.buffer, this.length)
    this.length += size
    return this
  }

  /** Everything written so far, copied out, and the writer emptied for the next batch. */
  take(): Buffer {
    const out = Buffer.from(this.buffer.subarray(0, this.length))
    this.length = 0
    return out
  }

  private ensure(size: number) {
    if (this.length + size <= this.buffer.length) return
    const grown = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + size))
    this.buffer.copy(grown, 0, 0, this.length)
    this.buffer = grown
  }
}

/** Protocol 3.0, the startup message's version field. */
export const PROTOCOL_VERSION = 196608

export function writeStartup(writer: MessageWriter, parameters: Record<string, string>) {
  writer.beginUntyped().int32(PROTOCOL_VERSION)
  for (const [key, value] of Object.entries(parameters)) writer.cstring(key).cstring(value)
  writer.byte(0).end()
}

/** Parse: the parameter types given (OIDs; 0 or none left out: the server infers each one). */
export function writeParse(writer: MessageWriter, name: string, sql: string, types: readonly number[] = []) {
  writer.begin('P').cstring(name).cstring(sql).uint16(types.length)
  for (const type of types) writer.int32(type | 0)
  writer.end()
}

/** Describe a prepared statement: answered with ParameterDescription and RowDescription (or NoData). */
export function writeDescribeStatement(writer: MessageWriter, name: string) {
  writer.begin('D').byte(0x53).cstring(name).end()
}

/** The most parameters a Bind can carry: its count is an unsigned 16-bit integer. */
export const MAX_PARAMETERS = 65_535

/**
 * Bind to the unnamed portal. Without format codes every parameter and result column is text; a front
 * end passes its client's codes on (0 text, 1 binary; one code for all, or one each), with binary values
 * as the client's bytes.
 */
export function writeBind(
  writer: MessageWriter,
  statement: string,
  params: readonly (string | Buffer | null)[],
  paramFormats: readonly number[] = [],
  resultFormats: readonly number[] = [],
) {
  writer.begin('B').cstring('').cstring(statement).uint16(paramFormats.length)
  for (const format of paramFormats) writer.int16(format)
  writer.uint16(params.length)
  for (const value of params) {
    if (value === null) writer.int32(-1)
    else if (typeof value === 'string') writer.lengthPrefixed(value)
    else writer.int32(value.length).raw(value)
  }
  writer.uint16(resultFormats.length)
  for (const format of resultFormats) writer.int16(format)
  writer.end()
}

/** Execute the unnamed portal to completion (no row limit). */
export function writeExecute(writer: MessageWriter) {
  writer.begin('E').cstring('').int32(0).end()
}

export function writeClose(writer: MessageWriter, statement: string) {
  writer.begin('C').byte(0x53).cstring(statement).end()
}

/** The answer to CopyInResponse: the router never feeds COPY FROM STDIN, so it fails it at once. */
export function writeCopyFail(writer: MessageWriter, reason: string) {
  writer.begin('f').cstring(reason).end()
}

export function writeSync(writer: MessageWriter) {
  writer.begin('S').end()
}

export function writeQuery(writer: MessageWriter, sql: string) {
  writer.begin('Q').cstring(sql).end()
}

export function writeTerminate(writer: MessageWriter) {
  writer.begin('X').end()
}

/** PasswordMessage (cleartext or MD5); SASLInitialResponse and SASLResponse share its type byte 'p'. */
export function writePassword(writer: MessageWriter, payload: string) {
  writer.begin('p').cstring(payload).end()
}

export function writeSaslInitial(writer: MessageWriter, mechanism: string, payload: string) {
  writer.begin('p').cstring(mechanism).int32(Buffer.byteLength(payload)).raw(payload).end()
}

export function writeSaslResponse(writer: MessageWriter, payload: string) {
  writer.begin('p').raw(payload).end()
}

/** SSLRequest: answered with one byte, 'S' or 'N'. */
export function sslRequest(): Buffer {
  const message = Buffer.allocUnsafe(8)
  message.writeInt32BE(8, 0)
  message.writeInt32BE(80877103, 4)
  return message
}

/** CancelRequest for a backend, on a connection of its own; the key has any length (protocol 3.2: up to 256). */
export function cancelRequest(pid: number, key: Buffer): Buffer {
  const message = Buffer.allocUnsafe(12 + key.length)
  message.writeInt32BE(message.length, 0)
  message.writeInt32BE(80877102, 4)
  message.writeInt32BE(pid, 8)
  key.copy(message, 12)
  return message
}

/** A result column as RowDescription describes it (all but the format code, which the Bind chooses). */
export interface ColumnDescription {
  name: string
  tableID: number
  columnID: number
  dataTypeID: number
  dataTypeSize: number
  dataTypeModifier: number
}

/*
 * Readers take the buffer a message arrived in and its body's bounds (after the type byte and length),
 * so no message needs a Buffer of its own. A body that claims more than its bounds throws: the
 * connection's handler turns that into a protocol error.
 */

export function readRowDescription(buffer: Buffer, start: number, end: number): ColumnDescription[] {
  const count = buffer.readUInt16BE(start)
  const columns: ColumnDescription[] = new Array(count)
  let at = start + 2
  for (let i = 0; i < count; i++) {
    const nul = buffer.indexOf(0, at)
    if (nul === -1 || nul + 19 > end) throw new RangeError('RowDescription overruns its message')
    const name = buffer.toString('utf8', at, nul)
    at = nul + 1
    columns[i] = {
      name,
      tableID: buffer.readUInt32BE(at),
      columnID: buffer.readInt16BE(at + 4),
      dataTypeID: buffer.readUInt32BE(at + 6),
      dataTypeSize: buffer.readInt16BE(at + 10),
      dataTypeModifier: buffer.readInt32BE(at + 12),
    }
    // and the format code (2)
    at += 18
  }
  return columns
}

export function readDataRow(buffer: Buffer, start: number, end: number): (string | null)[] {
  const count = buffer.readUInt16BE(start)
  const row: (string | null)[] = new Array(count)
  let at = start + 2
  for (let i = 0; i < count; i++) {
    const size = buffer.readInt32BE(at)
    at += 4
    if (size < 0) {
      row[i] = null
      continue
    }
    if (at + size > end) throw new RangeError('DataRow overruns its message')
    row[i] = buffer.toString('utf8', at, at + size)
    at += size
  }
  return row
}

/** ParameterDescription (of a Describe of a statement): each parameter's type OID. */
export function readParameterDescription(buffer: Buffer, start: number, end: number): number[] {
  const count = buffer.readUInt16BE(start)
  if (start + 2 + 4 * count > end) throw new RangeError('ParameterDescription overruns its message')
  const types: number[] = new Array(count)
  for (let i = 0; i < count; i++) types[i] = buffer.readUInt32BE(start + 2 + 4 * i)
  return types
}

/** A command tag ("INSERT 0 3", "SELECT 1", "CREATE TABLE"): its verb and its row count, if it has one. */
export function readCommandComplete(
  buffer: Buffer,
  start: number,
  end: number,
): { command: string; rowCount: number | null } {
  let command = buffer.toString('latin1', start, end - 1)
  const last = command.lastIndexOf(' ')
  if (last === -1 || !DIGITS.test(command.slice(last + 1))) return { command, rowCount: null }
  const rowCount = Number(command.slice(last + 1))
  command = command.slice(0, last)
  // INSERT's tag also carries an OID (always 0 now) before the row count.
  const oid = command.lastIndexOf(' ')
  if (oid !== -1 && DIGITS.test(command.slice(oid + 1))) command = command.slice(0, oid)
  return { command, rowCount }
}

const DIGITS = /^\d+$/

/**
 * ErrorResponse and NoticeResponse fields, named as postgres.js names them, so code written against
 * postgres.js errors (the router's error mapping, Neon's error body) reads these the same way.
 */
const FIELD_NAMES: Record<string, string> = {
  S: 'severity_local',
  V: 'severity',
  C: 'code',
  M: 'message',
  D: 'detail',
  H: 'hint',
  P: 'position',
  p: 'internal_position',
  q: 'internal_query',
  W: 'where',
  s: 'schema_name',
  t: 'table_name',
  c: 'column_name',
  d: 'data type_name',
  n: 'constraint_name',
  F: 'file',
  L: 'line',
  R: 'routine',
}

export function readErrorFields(buffer: Buffer, start: number, end: number): Record<string, string> {
  const fields: Record<string, string> = {}
  let at = start
  while (at < end && buffer[at] !== 0) {
    const nul = buffer.indexOf(0, at + 1)
    if (nul === -1 || nul >= end) break
    const name = FIELD_NAMES[String.fromCharCode(buffer[at] as number)]
    if (name) fields[name] = buffer.toString('utf8', at + 1, nul)
    at = nul + 1
  }
  return fields
}

/** AuthenticationSASL's mechanisms: NUL-terminated names, then an empty one. */
export function readSaslMechanisms(buffer: Buffer, start: number, end: number): string[] {
  const mechanisms: string[] = []
  let at = start
  while (at < end && buffer[at] !== 0) {
    const nul = buffer.indexOf(0, at)
    if (nul === -1 || nul >= end) break
    mechanisms.push(buffer.toString('utf8', at, nul))
    at = nul + 1
  }
  return mechanisms
}
