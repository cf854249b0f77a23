import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import { parsersDiscarded } from '../shard/libpg.ts'
import type { HealthMonitor } from '../shard/monitor.ts'
import type { ShardNode } from '../shard/nodes.ts'
import type { NodePools } from '../shard/pools.ts'
import { createBusiestTenants } from './busiest-tenants.ts'

export interface MetricsOptions {
  /**
   * Set in a worker of `router --workers N` (its number, from 0): its process metrics carry the label
   * `worker`, so each process's CPU, memory and event loop stay apart when the workers' metrics are added up.
   */
  worker?: number
  /**
   * What GET /metrics answers: by default this registry. A worker answers the sum over every worker,
   * which only the primary can gather (src/router/cluster-metrics.ts).
   */
  scrape?: () => Promise<string>
}

/** What the gauges read at scrape time: known once the router has opened its pools. */
interface NodeReadings {
  pools: NodePools
  monitor: HealthMonitor
  /** Connections this process may open per node: its part of `router.poolSize`. */
  poolSize: number
}

/** How many tenants `switchyard_top_tenant_requests` names: the busiest, recomputed at each scrape. */
export const TOP_TENANTS = 10

/**
 * The refusals the dashboard's rate-limit panel shows, exported at 0 from the start: a counter series
 * that first appears at 1 shows no increase to Prometheus, so the first refusal after a start would be lost.
 */
const REFUSAL_CODES = ['rate_limited', 'tenant_busy'] as const

/**
 * The one metrics registry of a router process, served at /metrics. Each metric's `aggregator` says how
 * the workers' values are combined (prom-client's default: summed), so counters, histograms and the
 * connections in use add up across workers.
 */
export function createMetrics(options: MetricsOptions = {}) {
  const registry = new Registry()
  collectDefaultMetrics({
    register: registry,
    prefix: 'switchyard_process_',
    ...(options.worker === undefined ? {} : { labels: { worker: String(options.worker) } }),
  })
  const registers = [registry]
  let readings: NodeReadings | undefined
  const busiest = createBusiestTenants()
  // Read when scraped rather than counted per request.
  const eachNode = (read: (node: ShardNode, from: NodeReadings) => void) => {
    const from = readings
    if (from) for (const node of from.pools.nodes) read(node, from)
  }
  /** A gauge per node of this process's pools, read when scraped; summed over workers. */
  const poolGauge = (name: string, help: string, read: (node: ShardNode, from: NodeReadings) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['node'] as const,
      registers,
      collect() {
        eachNode((node, from) => this.set({ node: node.name }, read(node, from)))
      },
    })
  const metrics = {
    registry,
    /** GET /metrics: this registry, or every worker's added up. */
    scrape: options.scrape ?? (() => registry.metrics()),
    /** Where the pool and node gauges read from when scraped. */
    readNodesFrom(pools: NodePools, monitor: HealthMonitor, poolSize: number) {
      readings = { pools, monitor, poolSize }
    },
    /** Counts one request of `tenant` for `switchyard_top_tenant_requests` (once per request: at admission). */
    countTenantRequest: (tenant: string) => busiest.count(tenant),
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
    cacheLookups: new Counter({
      name: 'switchyard_cache_lookups_total',
      help: 'Read cache lookups by table read and result (hit, miss)',
      labelNames: ['table', 'result'] as const,
      registers,
    }),
    cacheBytes: new Counter({
      name: 'switchyard_cache_bytes_total',
      help: 'Bytes of cached answers, by table and what happened to them (stored, served, evicted locally)',
      labelNames: ['table', 'event'] as const,
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
    parserReplacements: new Counter({
      name: 'switchyard_parser_replacements_total',
      help: 'Statement parser instances replaced after a failure of the parser itself (src/shard/libpg.ts): each one refused its statement and answered router_busy for ~12 ms',
      registers,
      collect() {
        // Counted where the parser lives, read here: reset and set to the process's count.
        this.reset()
        this.inc(parsersDiscarded())
      },
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
    poolInUse: poolGauge(
      'switchyard_pool_connections_in_use',
      'Connections reserved by in-flight transactions, per node, as scraped',
      (node, { pools }) => pools.pool(node.name).reserved,
    ),
    poolOpen: poolGauge(
      'switchyard_pool_connections_open',
      'Connections open per node, in use or idle, as scraped',
      (node, { pools }) => pools.pool(node.name).size,
    ),
    poolMax: poolGauge(
      'switchyard_pool_connections_max',
      "Connections the router may open per node (router.poolSize; each worker's part, summed)",
      (_node, { poolSize }) => poolSize,
    ),
    topTenants: new Gauge({
      name: 'switchyard_top_tenant_requests',
      help: `Requests in the last minute of the ${TOP_TENANTS} tenants that sent this router the most, recomputed at each scrape (no other tenant has a series)`,
      labelNames: ['tenant'] as const,
      registers,
      collect() {
        // Tenants that left the top since the last scrape lose their series.
        this.reset()
        for (const { tenant, requests } of busiest.top(TOP_TENANTS)) this.set({ tenant }, requests)
      },
    }),
    replicaLag: new Gauge({
      name: 'switchyard_replica_lag_bytes',
      help: 'WAL bytes a replica has not replayed yet, as last polled',
      labelNames: ['node'] as const,
      registers,
      // Each worker polls on its own: the furthest behind of their readings.
      aggregator: 'max',
      collect() {
        eachNode((node, { monitor }) => {
          const { lagBytes } = monitor.health(node.name)
          if (node.role === 'replica' && lagBytes !== null) this.set({ node: node.name }, lagBytes)
        })
      },
    }),
    nodeHealthy: new Gauge({
      name: 'switchyard_node_healthy',
      help: '1 when the last health poll of the node succeeded',
      labelNames: ['node', 'role'] as const,
      registers,
      // Healthy only if every worker's last poll found the node answering.
      aggregator: 'min',
      collect() {
        eachNode((node, { monitor }) =>
          this.set({ node: node.name, role: node.role }, monitor.health(node.name).healthy ? 1 : 0),
        )
      },
    }),
  }
  for (const code of REFUSAL_CODES) metrics.errors.inc({ code }, 0)
  return metrics
}

export type Metrics = ReturnType<typeof createMetrics>
