import { SwitchyardError } from '../../errors.ts'
import type { Consistency } from '../routing.ts'

/** What a protocol reads from the HTTP request besides its body. */
export type HeaderOf = (name: string) => string | undefined

/** `x-switchyard-consistency`: session (the default), strong or eventual. */
export function consistencyOf(header: HeaderOf): Consistency {
  const value = header('x-switchyard-consistency') ?? 'session'
  if (value === 'session' || value === 'strong' || value === 'eventual') return value
  throw new SwitchyardError('invalid_input', 'x-switchyard-consistency must be session, strong or eventual')
}
