/**
 * How deep a session's queue in `gw_outgoing` is, as far as a bound needs to know (ARCHITECTURE.md
 * §10). Every gateway enqueues for every persistent subscriber, so the depth is the bucket's, not
 * one gateway's. A gateway's estimate starts from a count of the session's keys in KV, taken in
 * the background the first time it enqueues for the session (a publish never waits for it),
 * and then follows its own enqueues and erasures. Erasures on other gateways (the session is
 * connected there) are not seen, so the estimate can only run high; when it reaches the bound,
 * the queue is counted again before anything is refused (at most once per `recountMs` per
 * session), so a healthy session is never refused on a stale figure. The bound therefore holds
 * across gateways up to what they enqueue between two counts.
 *
 * A count that fails (KV unavailable, a listing past its deadline) admits the message and is
 * retried at the next one: the bound must not turn a KV hiccup into lost messages.
 */
import type { Logger } from '../../common/log.ts'

export interface QueueDepthOptions {
  /** Count a session's queued entries in KV. */
  count: (clientId: string) => Promise<number>
  /** The bound for this session. */
  maxFor: (clientId: string) => number
  log: Logger
  recountMs?: number
  /** Sessions remembered; the least recently used is forgotten (and counted again later). */
  maxTracked?: number
  /** A session was forgotten to keep `maxTracked`. */
  onForgotten?: () => void
  now?: () => number
}

const DEFAULT_RECOUNT_MS = 1_000
const DEFAULT_MAX_TRACKED = 100_000

interface Depth {
  queued: number
  countedAt: number
  /** A count in flight: what it finds replaces `queued`, plus what changed meanwhile. */
  counting?: Promise<void>
  changedSinceCount: number
}

export function createQueueDepth({
  count,
  maxFor,
  log,
  recountMs = DEFAULT_RECOUNT_MS,
  maxTracked = DEFAULT_MAX_TRACKED,
  onForgotten = () => {},
  now = Date.now,
}: QueueDepthOptions) {
  const depths = new Map<string, Depth>()
  // The session moved to the back last: a bridge link's session gets nearly every message, and
  // moving it again each time was 1.4 % of the co-located bridge path's CPU (now < 0.1 %).
  let latest: Depth | undefined

  function track(clientId: string): Depth {
    let d = depths.get(clientId)
    if (d) {
      if (d !== latest) {
        depths.delete(clientId) // least recently used last out
        depths.set(clientId, d)
        latest = d
      }
      return d
    }
    d = { queued: 0, countedAt: -Infinity, changedSinceCount: 0 }
    depths.set(clientId, d)
    latest = d
    if (depths.size > maxTracked) {
      depths.delete(depths.keys().next().value as string)
      onForgotten()
    }
    recount(clientId, d)
    return d
  }

  function recount(clientId: string, d: Depth): Promise<void> {
    d.counting ??= (async () => {
      d.changedSinceCount = 0
      try {
        const found = await count(clientId)
        d.queued = Math.max(0, found + d.changedSinceCount)
        d.countedAt = now()
      } catch (err) {
        log.warn(
          { err, clientId },
          'could not count a session queue; its bound waits for the next count'
        )
      } finally {
        d.counting = undefined
      }
    })()
    return d.counting
  }

  return {
    /** True, and counted, if one more message fits in `clientId`'s queue. */
    async admit(clientId: string): Promise<boolean> {
      const max = maxFor(clientId)
      const d = track(clientId)
      if (d.queued >= max && now() - d.countedAt >= recountMs) await recount(clientId, d)
      // Still at the bound on a figure that is fresh (or on one that could not be had): refuse
      // only on a real count.
      if (d.queued >= max && d.countedAt > -Infinity) return false
      d.queued++
      d.changedSinceCount++
      return true
    },
    /** This gateway erased one of `clientId`'s entries (acknowledged or refused). */
    release(clientId: string): void {
      const d = depths.get(clientId)
      if (!d) return
      d.queued = Math.max(0, d.queued - 1)
      d.changedSinceCount--
    },
    /** The session ended (clean start, expiry): its next enqueue counts afresh. */
    forget(clientId: string): void {
      if (depths.get(clientId) === latest) latest = undefined
      depths.delete(clientId)
    },
  }
}
export type QueueDepth = ReturnType<typeof createQueueDepth>
