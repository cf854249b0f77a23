import { constantList } from '../shard/connection.ts'

/**
 * The states that end a move. Written once: the directory's "one open move per tenant" index and every
 * query that asks for open moves are built from this list, so a new ending state cannot be forgotten
 * in one of them.
 */
export const FINISHED_MOVE_STATES = ['done', 'aborted', 'failed'] as const
export type FinishedMoveState = (typeof FINISHED_MOVE_STATES)[number]

/** SQL text: `not in ('done', 'aborted', 'failed')`, for `<state column> ${NOT_FINISHED}`. */
export const NOT_FINISHED = `not in ${constantList(FINISHED_MOVE_STATES)}`

/** SQL text saying the move in `column` is open, e.g. `openMove('m.state')`. */
export const openMove = (column: 'state' | 'm.state' = 'state') => `${column} ${NOT_FINISHED}`
