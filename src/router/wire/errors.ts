import { isSwitchyardError, type SwitchyardError } from '../../errors.ts'
import { QUOTA_SQLSTATE } from '../../shard/ownership.ts'
import type { PostgresErrorFields } from '../protocols/neon.ts'
import type { ErrorFields } from './protocol.ts'

/**
 * The router's refusals as PostgreSQL clients expect errors: an SQLSTATE drivers and ORMs act on (57014
 * a cancel, 08007 an unknown commit, 57P03 "try again shortly", 53300/53400 limits, 54000 sizes), the
 * message as HTTP gives it, and the router's own code in the detail, the same word the HTTP side uses.
 */
const SQLSTATES: Record<string, string> = {
  unauthorized: '28P01',
  tls_required: '28000',
  forbidden: '42501',
  invalid_input: '22023',
  tenant_unknown: '3D000',
  statement_not_allowed: '42501',
  syntax_error: '42601',
  rate_limited: '53400',
  tenant_busy: '53300',
  router_busy: '53300',
  query_timeout: '57014',
  client_gone: '57014',
  tenant_moving: '57P03',
  shard_unavailable: '57P03',
  pool_timeout: '57P03',
  directory_unavailable: '57P03',
  shard_refused: '57P03',
  shutting_down: '57P03',
  commit_unknown: '08007',
  result_too_large: '54000',
  statement_too_large: '54000',
  too_many_statements: '54000',
  too_many_params: '54000',
  body_too_large: '54000',
  idempotency_key_reused: '42P10',
  idempotency_replay_unavailable: '55000',
  quota_exceeded: QUOTA_SQLSTATE,
  feature_not_supported: '0A000',
  protocol_violation: '08P01',
}

export function toErrorFields(error: unknown, severity: 'ERROR' | 'FATAL' = 'ERROR'): ErrorFields {
  if (!isSwitchyardError(error))
    return { severity, code: 'XX000', message: 'internal error', detail: 'code: internal' }
  if (error.code === 'sql_error' && error.cause)
    return shardError(error.cause as PostgresErrorFields, severity, error)
  return {
    severity,
    code: SQLSTATES[error.code] ?? 'XX000',
    message: error.message,
    detail: detailOf(error),
    hint: hintOf(error),
    position: error.code === 'syntax_error' ? positionOf(error) : undefined,
  }
}

/** The shard's own error, every field passed on: the client's statement failed, as it would directly. */
function shardError(
  cause: PostgresErrorFields,
  severity: 'ERROR' | 'FATAL',
  error: SwitchyardError,
): ErrorFields {
  return {
    severity,
    code: cause.code ?? 'XX000',
    message: cause.message ?? error.message,
    detail: cause.detail,
    hint: cause.hint,
    position: cause.position,
    where: cause.where,
    schema: cause.schema_name,
    table: cause.table_name,
    column: cause.column_name,
    constraint: cause.constraint_name,
    dataType: cause['data type_name'],
  }
}

/** The router's code, and the shard's detail where the refusal carries one (a quota's). */
function detailOf(error: SwitchyardError): string {
  const detail = error.details?.detail
  return typeof detail === 'string' ? `${detail} (code: ${error.code})` : `code: ${error.code}`
}

function hintOf(error: SwitchyardError): string | undefined {
  const hint = error.details?.hint
  if (typeof hint === 'string') return hint
  const seconds = error.details?.retryAfterSeconds
  return typeof seconds === 'number' ? `retry in ${seconds} s` : undefined
}

function positionOf(error: SwitchyardError): string | undefined {
  const position = error.details?.position
  return typeof position === 'number' ? String(position) : undefined
}
