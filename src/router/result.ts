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
}

export interface StatementResult {
  /** The command tag's verb: SELECT, INSERT, UPDATE, DELETE. */
  command: string
  rowCount: number | null
  fields: ResultField[]
  rows: (string | null)[][]
}

/** A client's statement: SQL text and positional parameters ($1…), as JSON gave them. */
export interface Statement {
  sql: string
  params: unknown[]
}
