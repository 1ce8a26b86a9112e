/**
 * NATS.js (3.4) builds an Error for every request it answers: `RequestOne.resolver` settles the
 * request's promise, then calls `cancel()`, which rejects that same, already settled promise
 * with `new RequestError("cancelled")`. The rejection is a no-op; the Error and its captured
 * stack are not: on the NATS bridge path, where each queued message is a KV put and an erase
 * (two requests), they were 10 % of a gateway's CPU (after `noAsyncTraces`, which removes the
 * two Errors a request built up front for its traces, 30 % more).
 *
 * Here a request's `cancel()` after its `resolver` ran does what it did minus that rejection:
 * stop its timer and leave the mux. Any other `cancel()` (the timer fired first, a publish
 * failed, an explicit error) is the library's own. Internals are checked before anything is
 * replaced; a library whose request no longer looks like this one is left alone.
 */
import { RequestOne } from '@nats-io/nats-core/internal'

interface RequestInternals {
  timer?: { cancel(): void }
  mux?: { cancel(request: unknown): void }
  resolver(err: Error | null, msg: unknown): void
  cancel(err?: Error): void
  [answered]?: true
}

const answered = Symbol('answered')
const installed = Symbol('ub.cancelWithoutError')

/** Install once per process; true if the request class is (now) patched. */
export function cancelAnsweredRequestsWithoutError(): boolean {
  const proto = RequestOne.prototype as unknown as RequestInternals & { [installed]?: true }
  if (proto[installed]) return true
  if (typeof proto.resolver !== 'function' || typeof proto.cancel !== 'function') return false
  const { resolver, cancel } = proto
  proto.resolver = function (this: RequestInternals, err, msg) {
    this[answered] = true
    resolver.call(this, err, msg)
  }
  proto.cancel = function (this: RequestInternals, err?: Error) {
    if (err !== undefined || !this[answered] || !this.mux) return cancel.call(this, err)
    this.timer?.cancel()
    this.mux.cancel(this)
  }
  proto[installed] = true
  return true
}

/** For tests: is the request class patched? */
export const requestCostPatched = (): boolean =>
  (RequestOne.prototype as { [installed]?: true })[installed] === true
