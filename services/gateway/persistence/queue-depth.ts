/**
 * How deep a session's queue in `gw_outgoing` is, as far as a bound needs to know (ARCHITECTURE.md
 * §10). Every gateway enqueues for every persistent subscriber, so the depth is the bucket's, not
 * one gateway's: it is counted from KV the first time a gateway enqueues for a session, then
 * raised by this gateway's own enqueues. Acknowledgements (on any gateway) are not seen, so the
 * estimate only grows; when it reaches the bound, the queue is counted again (at most once per
 * `recountMs` per session) and the message is refused only if it really is full. A session with
 * a live reader is therefore recounted once per `max` messages, and the bound holds across
 * gateways up to what they enqueue between two recounts.
 */
export interface QueueDepthOptions {
  /** Count a session's queued entries in KV. */
  count: (clientId: string) => Promise<number>
  /** The bound for this session. */
  maxFor: (clientId: string) => number
  recountMs?: number
  /** Sessions remembered; the least recently used is forgotten (and counted again later). */
  maxTracked?: number
  now?: () => number
}

const DEFAULT_RECOUNT_MS = 1_000
const DEFAULT_MAX_TRACKED = 100_000

export function createQueueDepth({
  count,
  maxFor,
  recountMs = DEFAULT_RECOUNT_MS,
  maxTracked = DEFAULT_MAX_TRACKED,
  now = Date.now,
}: QueueDepthOptions) {
  const depths = new Map<string, { queued: number; countedAt: number }>()

  async function counted(clientId: string) {
    const queued = await count(clientId)
    const d = { queued, countedAt: now() }
    depths.delete(clientId)
    depths.set(clientId, d)
    if (depths.size > maxTracked) depths.delete(depths.keys().next().value as string)
    return d
  }

  return {
    /** True, and counted, if one more message fits in `clientId`'s queue. */
    async admit(clientId: string): Promise<boolean> {
      const max = maxFor(clientId)
      let d = depths.get(clientId) ?? (await counted(clientId))
      if (d.queued >= max && now() - d.countedAt >= recountMs) d = await counted(clientId)
      if (d.queued >= max) return false
      d.queued++
      return true
    },
    /** The session ended (clean start, expiry): its next enqueue counts afresh. */
    forget(clientId: string): void {
      depths.delete(clientId)
    },
    get tracked(): number {
      return depths.size
    },
  }
}
export type QueueDepth = ReturnType<typeof createQueueDepth>
