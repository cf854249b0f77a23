import type { Hono } from 'hono'
import { z } from 'zod'
import { tenantId } from '../../directory/tenants.ts'
import type { SwitchyardError } from '../../errors.ts'
import { abortMove, createMove, runMove } from '../../migrate-tenant/mover.ts'
import { findMove, listMoves, parseMoveId } from '../../migrate-tenant/record.ts'
import { type Admin, readInput } from './context.ts'

const newMoveSchema = z.strictObject({
  tenant: tenantId,
  to: z.string().min(1),
})
const abortSchema = z.strictObject({ moveBack: z.boolean().default(false) })

/** `/moves`: single-tenant moves; list, show, start, resume and abort (they run on in this router). */
export function register(api: Hono, admin: Admin): void {
  const { directory, mover } = admin
  api.get('/moves', async (c) => c.json({ moves: await listMoves(directory) }))
  api.get('/moves/:id', async (c) => c.json(await findMove(directory, c.req.param('id'))))
  api.post('/moves', async (c) => {
    const body = await readInput(c, newMoveSchema)
    const move = await createMove(mover, { tenant: body.tenant, target: body.to })
    admin.inBackground(runMove(mover, move.id), move.id)
    return c.json(move, 202)
  })
  api.post('/moves/:id/resume', async (c) => {
    const move = await findMove(directory, c.req.param('id'))
    admin.inBackground(runMove(mover, move.id), move.id)
    return c.json(move, 202)
  })
  api.post('/moves/:id/abort', async (c) => {
    const body = await readInput(c, abortSchema)
    const id = parseMoveId(c.req.param('id'))
    try {
      return c.json(await abortMove(mover, id))
    } catch (error) {
      if (!body.moveBack || (error as SwitchyardError).code !== 'move_past_cutover') throw error
    }
    // Past the cutover, moving back is a whole move: it runs on in this router (GET /moves).
    admin.inBackground(abortMove(mover, id, { moveBack: true }), id)
    return c.json(await findMove(directory, id), 202)
  })
}
