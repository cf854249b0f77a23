import { SwitchyardError } from '../../errors.ts'
import type { Sql } from '../../shard/connection.ts'
import { type Baseline, digestSince } from '../baseline.ts'
import { digestTenant, type HashedTable, type TableDigest } from '../rows.ts'
import { releaseBaselines } from './catch-up.ts'
import { type MoveContext, type StepResult, stillFenced } from './context.ts'

/**
 * Row count and content hash of every tenant table, equal on both sides, read while the tenant is
 * fenced. A difference goes back to catch-up, unfenced, and stops the move: it is a bug or a divergence
 * to look at, never something to cut over.
 */
export async function verify(ctx: MoveContext): Promise<StepResult> {
  if (!(await stillFenced(ctx))) return { back: 'fence', reason: 'the source is not fenced (any more)' }
  const tables = await ctx.tables()
  const started = performance.now()
  let { before, after, sidesFromBaseline } = await digestBothSides(ctx, tables, false)
  let differ = differing(before, after)
  ctx.deps.logger.info(
    {
      move: ctx.move.id,
      sidesFromBaseline,
      // Tables whose changes since the baseline are picked by key (the others are hashed in full).
      keyedTables: ctx.baselines ? [...ctx.baselines.source.keys.values()].filter(Boolean).length : 0,
      tables: tables.length,
      ms: Math.round(performance.now() - started),
      equal: differ.length === 0,
    },
    'verify hashed both sides',
  )
  if (differ.length > 0 && sidesFromBaseline > 0) {
    // Never fail a move on the shortcut alone: a difference is confirmed by hashing every row.
    ctx.deps.logger.warn(
      { move: ctx.move.id },
      'verify: the sides differ since the baseline; hashing in full',
    )
    ;({ before, after } = await digestBothSides(ctx, tables, true))
    differ = differing(before, after)
  }
  await releaseBaselines(ctx)
  if (differ.length > 0) {
    const detail = differ
      .map((d) => {
        const other = after.find((a) => a.table === d.table)
        return `${d.table}: ${d.rows} rows on the source, ${other?.rows} on the target${d.rows === other?.rows ? ' (content differs)' : ''}`
      })
      .join('; ')
    return {
      back: 'catch_up',
      reason: 'verify failed',
      error: `verify failed: ${detail}`,
      waits: new SwitchyardError('verify_failed', `the target's copy differs from the source: ${detail}`),
    }
  }
  return { next: 'flip', progress: { copiedRows: before.reduce((sum, d) => sum + d.rows, 0) } }
}

const differing = (a: TableDigest[], b: TableDigest[]) =>
  a.filter((d, i) => d.rows !== b[i]?.rows || d.hash !== b[i]?.hash)

/**
 * Both sides' digests: from the baselines when there are (and `full` is not asked), else in full (a
 * baseline that fails, e.g. its snapshot's session is gone, means a full hash of that side).
 */
async function digestBothSides(ctx: MoveContext, tables: HashedTable[], full: boolean) {
  const tenant = ctx.move.tenantId
  let sidesFromBaseline = 0
  const side = async (sql: Sql, baseline: Baseline | undefined) => {
    const since =
      baseline && !full
        ? await digestSince(baseline, sql, tenant, tables).catch((error: Error) => {
            ctx.deps.logger.warn(
              { move: ctx.move.id, error: error.message },
              'verify: baseline unusable; hashing in full',
            )
            return undefined
          })
        : undefined
    if (since) sidesFromBaseline += 1
    return since ?? digestTenant(sql, tenant, tables)
  }
  const [before, after] = await Promise.all([
    side(ctx.source, ctx.baselines?.source),
    side(ctx.target, ctx.baselines?.target),
  ])
  return { before, after, sidesFromBaseline }
}
