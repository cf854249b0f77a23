import { parseLsn } from '../../shard/lsn.ts'
import { slotProgress } from '../artifacts.ts'
import { type MoveContext, POLL_MS, type StepResult, sleep, stillFenced } from './context.ts'

/**
 * Waits, fenced, until the target has applied (and made durable) everything up to the fence LSN. A
 * target too slow for `cutoverTimeoutMs` sends the move back to catch-up (unfenced), to try again.
 */
export async function finalCatchUp(ctx: MoveContext): Promise<StepResult> {
  if (!ctx.move.fenceLsn || !(await stillFenced(ctx)))
    return { back: 'fence', reason: 'the source is not fenced (any more)' }
  const fenceLsn = parseLsn(ctx.move.fenceLsn)
  const deadline = Date.now() + ctx.deps.topology.mover.cutoverTimeoutMs
  for (;;) {
    const { confirmed } = await slotProgress(ctx.source, ctx.name)
    if (confirmed >= fenceLsn) return { next: 'verify' }
    if (Date.now() > deadline)
      return { back: 'catch_up', reason: 'target did not reach the fence LSN in time; unfencing' }
    await sleep(POLL_MS)
  }
}
