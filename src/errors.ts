/**
 * One error type for everything Switchyard refuses or fails at. `code` is stable: the CLI prints it,
 * the HTTP layer maps it to a status, tests match on it.
 */
export class SwitchyardError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message)
    this.name = 'SwitchyardError'
  }
}

export const isSwitchyardError = (error: unknown): error is SwitchyardError =>
  error instanceof SwitchyardError

/** Formats a zod issue list as "field.path: message; …" so an operator sees which field is wrong. */
export function describeIssues(issues: readonly { path: readonly PropertyKey[]; message: string }[]): string {
  return issues
    .map((issue) => `${issue.path.length ? issue.path.map(String).join('.') : '(root)'}: ${issue.message}`)
    .join('; ')
}
