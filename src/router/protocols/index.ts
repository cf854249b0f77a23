import type { SwitchyardError } from '../../errors.ts'
import type { IsolationLevel } from '../execute.ts'
import type { Statement, StatementResult } from '../result.ts'
import type { Consistency } from '../routing.ts'
import { neonSql } from './neon.ts'
import { pgProxyBatch, pgProxyQuery } from './pg-proxy.ts'

/**
 * A tenant request as an HTTP protocol reads it: the tenant and key as presented (the app checks them),
 * its statements and how to run them.
 */
export interface ProtocolRequest {
  /** Which protocol and shape: part of what an Idempotency-Key names. */
  protocol: string
  tenant: string | undefined
  key: string | undefined
  statements: Statement[]
  consistency: Consistency
  forceWrite?: boolean
  isolation?: IsolationLevel | undefined
  readOnly?: boolean | undefined
  deferrable?: boolean | undefined
}

import type { HeaderOf } from './headers.ts'

/**
 * One HTTP protocol of the router: a path, how a body and headers become a tenant request, and how the
 * request's results (and, if it has its own shape for them, errors) are answered. Everything between,
 * from auth to the shard, is the same for all of them (app.ts, tenant-request.ts). Adding one is one file
 * and one entry in HTTP_PROTOCOLS. (The PostgreSQL protocol is a listener of its own: src/router/wire.)
 */
export interface HttpProtocol {
  /** The request log's and metrics' label, and how onError finds the protocol of a failed request. */
  family: 'pg-proxy' | 'neon'
  path: string
  parse(
    body: unknown,
    header: HeaderOf,
    headers: Headers,
  ): { request: ProtocolRequest; answer(results: StatementResult[]): unknown }
  /** An error in the protocol's own shape; without it, `{ error: { code, message, … } }` with its status. */
  error?(error: SwitchyardError, status: number): { body: unknown; status: number }
}

export const HTTP_PROTOCOLS: readonly HttpProtocol[] = [pgProxyQuery, pgProxyBatch, neonSql]
