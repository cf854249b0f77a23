/**
 * How `switchyard router --workers N` divides the topology's pools between its processes. The
 * topology's `router.poolSize` (and `tenantConnections` when set) are totals per shard node, whatever
 * the number of processes: each worker opens pools of its own, so each gets a part of the total.
 */

/** What one router process may hold of each shard node. */
export interface PoolShare {
  /** Connections of the node's pool. */
  poolSize: number
  /** Of those, how many one tenant's transactions may hold at once (its fair share). */
  tenantConnections: number
}

/** The settings divided: `router.poolSize` and `router.tenantConnections` of the topology. */
export interface PoolSettings {
  poolSize: number
  tenantConnections?: number | undefined
}

/**
 * The `worker`-th (from 0) of `workers` parts of `total`, as even as whole numbers allow: the first
 * `total % workers` parts get one more, so the parts add up to `total`. A part is never 0 (a worker
 * without connections could serve nothing): past `total` workers, each gets 1 and the sum is `workers`.
 */
export function divide(total: number, workers: number, worker: number): number {
  if (!Number.isInteger(total) || total < 1) throw new RangeError(`cannot divide ${total}: not a count`)
  if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`${workers} is not a number of workers`)
  if (!Number.isInteger(worker) || worker < 0 || worker >= workers)
    throw new RangeError(`worker ${worker} is not one of ${workers}`)
  const part = Math.floor(total / workers) + (worker < total % workers ? 1 : 0)
  return Math.max(1, part)
}

/** The fair share of one process when `tenantConnections` is not set: a quarter of its pool, at least 1. */
export const defaultTenantConnections = (poolSize: number) => Math.max(1, Math.floor(poolSize / 4))

/**
 * The share of the `worker`-th of `workers` router processes; one process gets the whole. The fair share
 * follows the pool: divided like it when the topology sets it, else a quarter of this process's part, so
 * in every worker one tenant still cannot take the whole pool (except a pool of 1).
 */
export function poolShare(settings: PoolSettings, workers: number, worker: number): PoolShare {
  const poolSize = divide(settings.poolSize, workers, worker)
  const tenantConnections =
    settings.tenantConnections === undefined
      ? defaultTenantConnections(poolSize)
      : divide(settings.tenantConnections, workers, worker)
  return { poolSize, tenantConnections }
}

/** True when the workers together hold more than `poolSize` connections of a node: one each is the least. */
export const overcommitted = (settings: PoolSettings, workers: number) => workers > settings.poolSize
