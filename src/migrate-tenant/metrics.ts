import { Counter, Histogram, type Registry } from 'prom-client'
import { FINISHED_MOVE_STATES } from '../directory/move-states.ts'

const created = new WeakMap<Registry, MoverMetrics>()

/**
 * The mover's metrics, registered where the process serves /metrics (the router's registry). Once per
 * registry: an app built twice on one registry (tests do) shares them.
 */
export function createMoverMetrics(registry: Registry): MoverMetrics {
  let metrics = created.get(registry)
  if (!metrics) {
    metrics = register(registry)
    created.set(registry, metrics)
  }
  return metrics
}

function register(registry: Registry) {
  const registers = [registry]
  const moves = new Counter({
    name: 'switchyard_moves_total',
    help: 'Moves finished, by outcome',
    labelNames: ['outcome'] as const,
    registers,
  })
  // Each outcome at 0 from the start: a series that first appears at 1 shows Prometheus no increase,
  // so a router's first move would be missing from increase() and rate().
  for (const outcome of FINISHED_MOVE_STATES) moves.inc({ outcome }, 0)
  return {
    moves,
    phaseSeconds: new Histogram({
      name: 'switchyard_move_phase_seconds',
      help: 'Time spent in each phase of a tenant move',
      labelNames: ['phase'] as const,
      buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 1, 5, 30, 120, 600],
      registers,
    }),
    stallSeconds: new Histogram({
      name: 'switchyard_move_stall_seconds',
      help: 'Cutover stall: from the fence to the directory flip',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
      registers,
    }),
    rowsCopied: new Counter({
      name: 'switchyard_move_rows_copied_total',
      help: 'Tenant rows copied to targets by moves',
      registers,
    }),
    fenceBlockers: new Counter({
      name: 'switchyard_move_fence_blockers_total',
      help: "Tenant transactions a move's fence cut short after its grace (query cancelled, or session terminated)",
      labelNames: ['action'] as const,
      registers,
    }),
  }
}

export type MoverMetrics = ReturnType<typeof register>
