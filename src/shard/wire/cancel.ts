/**
 * What a wait (pool, fair share) or a pipeline listens to for its cancellation. An `AbortSignal` is
 * one; the router passes its lighter `Cancellation` instead: an AbortController per request (an
 * EventTarget, its listeners and a Request built to reach its client's signal) was a visible share of
 * the router's CPU per request.
 */
export interface CancelSignal {
  readonly aborted: boolean
  readonly reason: unknown
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void
  removeEventListener(type: 'abort', listener: () => void): void
}

/** A CancelSignal and its trigger in one small object: listeners in an array, run once, in order. */
export class Cancellation implements CancelSignal {
  aborted = false
  reason: unknown = undefined
  private listeners: (() => void)[] | undefined

  abort(reason: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    const listeners = this.listeners
    this.listeners = undefined
    if (listeners) for (const listener of listeners) listener()
  }

  addEventListener(_type: 'abort', listener: () => void): void {
    if (this.aborted) return
    this.listeners ??= []
    this.listeners.push(listener)
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const at = this.listeners?.indexOf(listener) ?? -1
    if (at !== -1) this.listeners?.splice(at, 1)
  }
}
