import { createPublication } from '../artifacts.ts'
import type { MoveContext, StepResult } from './context.ts'

/** The source publishes the tenant's rows of every tenant table (a row filter on its id). */
export async function publication(ctx: MoveContext): Promise<StepResult> {
  await createPublication(ctx.source, ctx.name, ctx.move.tenantId, await ctx.tables())
  return { next: 'subscription' }
}
