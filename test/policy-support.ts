import { SwitchyardError } from '../src/errors.ts'
import { classify } from '../src/router/policy.ts'

/** The error `classify` throws for `sql`; fails the test when it does not throw one. */
export function refusal(sql: string): SwitchyardError {
  try {
    classify(sql)
  } catch (error) {
    if (error instanceof SwitchyardError) return error
    throw error
  }
  throw new Error(`expected a refusal for: ${sql}`)
}
