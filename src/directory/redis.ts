import { Redis } from 'ioredis'

/**
 * Redis is only ever speed (invariant 1): commands fail fast instead of queueing while it is away, and
 * callers fall back to the directory or to process-local state.
 */
export function openRedis(url: string): Redis {
  return new Redis(url, {
    lazyConnect: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1000,
    commandTimeout: 250,
    enableAutoPipelining: true,
    retryStrategy: (attempt) => Math.min(attempt * 100, 1000),
  })
}

export type { Redis }

export const keys = {
  route: (tenant: string) => `switchyard:route:${tenant}`,
  invalidations: 'switchyard:invalidate',
  lastWrite: (tenant: string) => `switchyard:lsn:${tenant}`,
  rate: (tenant: string, window: number) => `switchyard:rate:${tenant}:${window}`,
}
