import { matchPartitions } from '../../shard/partitions.ts'
import { countTenantRows, deleteTenantRows } from '../rows.ts'
import type { MoveContext, StepResult } from './context.ts'

/**
 * The target gets every partition the source has (a row copied or streamed must find its partition
 * there). Rows of the tenant on the target can only be an earlier move's leftovers (an abort that
 * crashed, a source copy not yet cleaned): the request's checks refused a target that owns the tenant.
 * They go, or the copy would collide with them.
 */
export async function preflight(ctx: MoveContext): Promise<StepResult> {
  const created = await matchPartitions(ctx.source, ctx.target, ctx.deps.topology.tenantSchema.schemas)
  if (created.length)
    ctx.deps.logger.info({ move: ctx.move.id, created }, 'created partitions on the target like the source’s')
  const tables = await ctx.tables()
  const left = await countTenantRows(ctx.target, ctx.move.tenantId, tables)
  if (left > 0) {
    ctx.deps.logger.warn(
      { move: ctx.move.id, rows: left },
      'removing leftover rows of the tenant on the target',
    )
    await deleteTenantRows(ctx.target, ctx.move.tenantId, tables, ctx.deps.topology.mover.deleteBatchRows)
  }
  return { next: 'publication' }
}
