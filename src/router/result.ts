import type { PipelineStep } from '../shard/wire/connection.ts'

/**
 * What a shard returned for one statement, before any protocol shapes it: values exactly as PostgreSQL
 * wrote them in text format (null for SQL NULL), with each column's type OID so a protocol can decide
 * how to present them.
 */
export interface ResultField {
  name: string
  dataTypeID: number
  tableID: number
  columnID: number
  /** RowDescription's type size and modifier: the PostgreSQL front end passes them on. */
  dataTypeSize?: number
  dataTypeModifier?: number
}

export interface StatementResult {
  /** The command tag's verb: SELECT, INSERT, UPDATE, DELETE. */
  command: string
  rowCount: number | null
  fields: ResultField[]
  rows: (string | null)[][]
  /** For the PostgreSQL front end (`wire.raw`): each DataRow's body as the shard sent it. */
  raw?: Buffer[]
}

/** A client's statement: SQL text and positional parameters ($1…), as JSON (or a PostgreSQL client) gave them. */
export interface Statement {
  sql: string
  params: unknown[]
  /** From a PostgreSQL client (src/router/wire): its types and formats, passed on to the shard unchanged. */
  wire?: WireStatementOptions | undefined
}

export type WireStatementOptions = Pick<PipelineStep, 'paramTypes' | 'paramFormats' | 'resultFormats' | 'raw'>
