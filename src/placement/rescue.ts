import { type MoverDeps, runMove } from '../migrate-tenant/mover.ts'
import { fencedMoves } from '../migrate-tenant/record.ts'

export interface MoveRescue {
  stop(): Promise<void>
}

/**
 * A mover that dies while its tenant is fenced (killed, its machine lost) leaves the tenant's writes
 * held, and routers answer 503 once their buffer window is out. So every router looks, every
 * `intervalMs`, for a move whose tenant is fenced and that no process runs, and resumes it: each phase is
 * idempotent and a resume is what an operator would do. The move's run lock (a session lock in the
 * directory) lets one process at a time run it, so a live mover, another router or an operator's
 * `move resume` simply makes this one skip it (`move_busy`). The resumed move runs to its end here.
 */
export function startMoveRescue(deps: MoverDeps, intervalMs: number): MoveRescue {
  if (intervalMs <= 0) return { stop: async () => {} }
  const running = new Map<string, Promise<void>>()
  let looking: Promise<void> | undefined
  let stopped = false

  const rescue = (id: string) =>
    runMove(deps, id).then(
      (move) =>
        deps.logger.warn({ move: id, state: move.state }, 'resumed a fenced move whose mover had stopped'),
      (error: { code?: string; message?: string }) => {
        if (error.code !== 'move_busy')
          deps.logger.error({ move: id, error: error.message }, 'resuming a fenced move failed')
      },
    )
  const look = async () => {
    for (const id of await fencedMoves(deps.directory)) {
      if (stopped || running.has(id)) continue
      running.set(
        id,
        rescue(id).finally(() => running.delete(id)),
      )
    }
  }
  const timer = setInterval(() => {
    looking ??= look()
      .catch((error: Error) => deps.logger.warn({ error: error.message }, 'looking for fenced moves failed'))
      .finally(() => {
        looking = undefined
      })
  }, intervalMs)
  timer.unref()

  return {
    // A move being resumed is not waited for (its cleanup alone waits out the route cache TTL): closing
    // the router under it is a crash like any other, and the next rescue or `move resume` goes on.
    async stop() {
      stopped = true
      clearInterval(timer)
      await looking
    },
  }
}
