import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'

/** The one metrics registry of a router process, served at /metrics. */
export function createMetrics() {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'switchyard_process_' })
  const registers = [registry]
  return {
    registry,
    requestDuration: new Histogram({
      name: 'switchyard_request_duration_seconds',
      help: 'Request duration by protocol, shard and node role',
      labelNames: ['protocol', 'shard', 'role', 'outcome'] as const,
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    errors: new Counter({
      name: 'switchyard_errors_total',
      help: 'Requests that failed, by error code',
      labelNames: ['code'] as const,
      registers,
    }),
    routeLookups: new Counter({
      name: 'switchyard_route_lookups_total',
      help: 'Tenant route lookups by the layer that answered (local, redis, directory, stale)',
      labelNames: ['layer'] as const,
      registers,
    }),
    staleRoutes: new Counter({
      name: 'switchyard_stale_routes_total',
      help: 'Transactions a shard refused because the route was stale',
      registers,
    }),
    readsRerun: new Counter({
      name: 'switchyard_reads_rerun_total',
      help: 'Reads run again because admission reported a newer write of the tenant than the replica had replayed',
      registers,
    }),
    bufferWaits: new Histogram({
      name: 'switchyard_buffer_wait_seconds',
      help: 'Time requests were held while their tenant moved',
      labelNames: ['outcome'] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers,
    }),
    poolWait: new Histogram({
      name: 'switchyard_pool_wait_seconds',
      help: 'Time a transaction waited for a free connection of the node pool',
      labelNames: ['node'] as const,
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    }),
    poolInUse: new Gauge({
      name: 'switchyard_pool_connections_in_use',
      help: 'Connections reserved by in-flight transactions, per node, as scraped',
      labelNames: ['node'] as const,
      registers,
    }),
    replicaLag: new Gauge({
      name: 'switchyard_replica_lag_bytes',
      help: 'WAL bytes a replica has not replayed yet, as last polled',
      labelNames: ['node'] as const,
      registers,
    }),
    nodeHealthy: new Gauge({
      name: 'switchyard_node_healthy',
      help: '1 when the last health poll of the node succeeded',
      labelNames: ['node', 'role'] as const,
      registers,
    }),
  }
}

export type Metrics = ReturnType<typeof createMetrics>
