import { SwitchyardError } from '../../errors.ts'
import { subscriptionState } from '../artifacts.ts'
import { countTenantRows } from '../rows.ts'
import { applyStopped, type MoveContext, SLOW_POLL_MS, type StepResult, sleep, timeout } from './context.ts'

/** Waits until the subscription's initial copy of every table is done, reporting rows copied. */
export async function copy(ctx: MoveContext): Promise<StepResult> {
  const { move, deps } = ctx
  const tables = await ctx.tables()
  const totalRows = await countTenantRows(ctx.source, move.tenantId, tables)
  const deadline = Date.now() + deps.topology.mover.catchUpTimeoutMs
  for (;;) {
    const sub = await subscriptionState(ctx.target, ctx.name)
    if (!sub.exists)
      throw new SwitchyardError('move_broken', `subscription ${ctx.name} is missing on the target`)
    if (!sub.enabled) throw applyStopped(ctx)
    const copiedRows = await countTenantRows(ctx.target, move.tenantId, tables)
    await ctx.report({ totalRows, copiedRows })
    if (sub.tablesPending === 0) {
      // The target's planner statistics predate the copy: the tenant's first queries there (the quota
      // triggers' counts among them) must not be planned as if its rows were not there.
      await ctx.target.unsafe(`analyze ${tables.map((t) => t.name).join(', ')}`)
      deps.metrics?.rowsCopied.inc(copiedRows)
      return { next: 'catch_up', progress: { totalRows, copiedRows } }
    }
    if (Date.now() > deadline) throw timeout(ctx, 'copy')
    await sleep(SLOW_POLL_MS)
  }
}
