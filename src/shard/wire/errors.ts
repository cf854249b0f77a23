import type { StepResult } from './connection.ts'

/**
 * What the wire client fails with. Every error `run()` rejects with is a `WireError` and carries the two
 * facts a caller needs to tell "COMMIT completed", "COMMIT never ran" and "COMMIT may have reached the
 * shard" apart: `completedSteps` (steps answered with CommandComplete or EmptyQueryResponse) and `sent`
 * (whether any byte of the pipeline was handed to the socket).
 */
export class WireError extends Error {
  /** Steps of the pipeline that completed on the server before it failed. */
  completedSteps = 0
  /**
   * What those steps returned (a budget's overflow skips rows: then not all of them). The caller of a
   * write whose COMMIT completed before the failure (a cancel that came too late) answers with these.
   */
  results: readonly StepResult[] = []
  /** Whether the pipeline was written to the socket at all: false means the server never saw it. */
  sent = false

  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options)
    this.name = new.target.name
  }
}

/** A server's ErrorResponse, its fields named as postgres.js names them (`code` is the SQLSTATE). */
export class PostgresError extends Error {
  readonly code: string
  severity?: string
  detail?: string
  hint?: string
  position?: string
  routine?: string;
  [field: string]: unknown

  constructor(fields: Record<string, string>) {
    super(fields.message ?? 'unknown server error')
    this.name = 'PostgresError'
    this.code = fields.code ?? 'XX000'
    Object.assign(this, fields)
  }
}

/**
 * The socket failed or closed: `code` is the system's (ECONNREFUSED, ECONNRESET, …), CONNECTION_CLOSED,
 * CONNECT_TIMEOUT, or PROTOCOL_ERROR (the server's bytes made no sense, or handling them threw).
 * The connection is broken either way.
 */
export class ConnectionError extends WireError {}

/** Step `step` of a pipeline failed with the server's error; the steps after it did not run. */
export class PipelineError extends WireError {
  constructor(
    readonly step: number,
    override readonly cause: PostgresError,
  ) {
    super('sql_error', cause.message)
  }
}

/** The pipeline's result passed `maxRows` or `maxBytes`: the query was cancelled, nothing kept. */
export class ResultTooLargeError extends WireError {
  constructor(
    /** Which budget ran out. */
    readonly limit: 'rows' | 'bytes',
    /** That budget's value. */
    readonly max: number,
  ) {
    super('result_too_large', `the result passed the limit of ${max} ${limit}`)
  }
}

/** The caller's signal aborted the pipeline (or `cancel()` was called): `reason` is `signal.reason`. */
export class QueryCancelledError extends WireError {
  constructor(readonly reason: unknown) {
    super('query_cancelled', `the query was cancelled${describeReason(reason)}`)
  }
}

/** More parameters than the protocol can carry (65535): refused before anything was written. */
export class TooManyParametersError extends WireError {
  constructor(
    readonly step: number,
    readonly count: number,
  ) {
    super('too_many_params', `step ${step} has ${count} parameters; PostgreSQL takes at most 65535`)
  }
}

/**
 * The node would not speak TLS though the configured sslmode requires it (`tls_required`), or the TLS
 * handshake failed (`tls_failed`, e.g. a certificate that does not verify).
 */
export class TlsError extends WireError {
  constructor(
    code: 'tls_required' | 'tls_failed',
    readonly node: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options)
  }
}

/**
 * The login was refused on our side: `auth_insecure` (cleartext, MD5 or no authentication at all, without
 * `allowInsecureAuth`), `auth_downgrade` (AuthenticationOk before the server proved it knows the password),
 * `auth_failed` (a SCRAM message that does not check out), `auth_unsupported` (a method we do not speak),
 * `channel_binding_required` (channelBinding 'require' and no SCRAM-SHA-256-PLUS).
 */
export class AuthenticationError extends WireError {
  constructor(
    code:
      | 'auth_insecure'
      | 'auth_downgrade'
      | 'auth_failed'
      | 'auth_unsupported'
      | 'channel_binding_required',
    readonly node: string,
    message: string,
  ) {
    super(code, `${node}: ${message}`)
  }
}

/** No connection of the node's pool was free within `timeoutMs`. */
export class PoolTimeoutError extends WireError {
  constructor(
    readonly node: string,
    readonly waitedMs: number,
  ) {
    super('pool_timeout', `no connection to ${node} was free within ${waitedMs} ms`)
  }
}

function describeReason(reason: unknown): string {
  if (reason === undefined) return ''
  if (reason instanceof Error) return `: ${reason.message}`
  return `: ${String(reason)}`
}
