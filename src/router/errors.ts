import type { SwitchyardError } from '../errors.ts'

/** One table from error code to HTTP status: every protocol and the admin API use it. */
const STATUS: Record<string, number> = {
  invalid_input: 400,
  invalid_json: 400,
  statement_not_allowed: 400,
  syntax_error: 400,
  too_many_params: 400,
  invalid_credentials: 401,
  unauthorized: 401,
  forbidden: 403,
  quota_exceeded: 403,
  tenant_unknown: 404,
  not_found: 404,
  shard_unknown: 404,
  plan_unknown: 404,
  move_unknown: 404,
  tenant_exists: 409,
  shard_full: 409,
  shard_draining: 409,
  no_capacity: 409,
  plan_closed: 409,
  plan_busy: 409,
  same_shard: 409,
  move_in_progress: 409,
  move_busy: 409,
  move_finished: 409,
  move_past_cutover: 409,
  too_many_moves: 409,
  schema_mismatch: 409,
  not_logical: 409,
  replica_identity: 409,
  target_owns_tenant: 409,
  idempotency_replay_unavailable: 409,
  body_too_large: 413,
  result_too_large: 413,
  statement_too_large: 413,
  too_many_statements: 413,
  idempotency_key_reused: 422,
  rate_limited: 429,
  tenant_busy: 429,
  // The client went away before its answer: nobody reads this status (nginx's "client closed request").
  client_gone: 499,
  commit_unknown: 502,
  pool_timeout: 503,
  directory_unavailable: 503,
  shard_unavailable: 503,
  shard_refused: 503,
  tenant_moving: 503,
  shutting_down: 503,
  router_busy: 503,
  // GET /metrics of a worker of `router --workers N`: the sum over the workers could not be gathered.
  metrics_unavailable: 503,
  // Statement statistics live in Redis: none configured, or it did not answer.
  stats_unavailable: 503,
  query_timeout: 504,
}

/** SQL errors: the client's fault (400) unless the server is overloaded or going away (503) or it was a conflict to retry (409). */
function sqlStatus(sqlstate: string | undefined): number {
  if (!sqlstate) return 400
  if (sqlstate === '40001' || sqlstate === '40P01') return 409
  // 08P01 reaches a client only as its own statement's error (a Bind with the wrong number of parameters).
  if (sqlstate === '08P01') return 400
  if (/^(08|53|57|58)/.test(sqlstate)) return 503
  return 400
}

export function statusOf(error: SwitchyardError): number {
  if (error.code === 'sql_error') return sqlStatus(error.details?.sqlstate as string | undefined)
  return STATUS[error.code] ?? 500
}

/** Seconds a client should wait before retrying, for the statuses that invite a retry. */
export function retryAfter(error: SwitchyardError): number | undefined {
  if (error.code === 'rate_limited') return Number(error.details?.resetSeconds ?? 60)
  if (error.code === 'tenant_busy') return Number(error.details?.retryAfterSeconds ?? 1)
  const status = statusOf(error)
  return status === 503 ? Number(error.details?.retryAfterSeconds ?? 1) : undefined
}
