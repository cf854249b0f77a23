import { SwitchyardError } from '../errors.ts'
import type { MoveState } from './record.ts'

/** Where in a phase a failpoint fires: before or after its side effect, or midway through `flip`. */
export type FailpointWhen = 'before' | 'after' | 'midway'

/**
 * Fault injection for the crash tests (and for operators rehearsing a crash):
 * `SWITCHYARD_FAILPOINT=move:<state>[:after|:midway]` kills the mover with SIGKILL when it reaches
 * that state, before its side effect (or after it, before the next state is recorded: for the flip, whose
 * directory change commits with its next state, after that commit; `flip:midway`: with the shards flipped
 * and the directory not yet). Unset: no failpoint.
 */
export function failpointFromEnv(value = process.env.SWITCHYARD_FAILPOINT) {
  if (!value) return undefined
  const match = /^move:([a-z_]+)(?::(before|after|midway))?$/.exec(value)
  if (!match)
    throw new SwitchyardError(
      'invalid_input',
      `SWITCHYARD_FAILPOINT=${JSON.stringify(value)}: expected move:<state>[:before|:after|:midway]`,
    )
  const [, at, when = 'before'] = match
  return (state: MoveState, now: FailpointWhen) => {
    if (state === at && now === when) process.kill(process.pid, 'SIGKILL')
  }
}
