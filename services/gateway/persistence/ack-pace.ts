/**
 * How fast each persistent subscriber acknowledges what it is sent: a moving average of the time
 * from a delivery to its PUBACK. A queue write is held for a subscriber only while that average
 * is under `fastMs` (held-writes.ts): a subscriber that lags (a bridge over a slow link, a busy
 * device) would let every held write run out its time and then be written anyway, holding its
 * publishers' PUBACKs for nothing. A subscriber not yet measured counts as fast; one that slows
 * down is measured all the same (its deliveries are still acknowledged), so it comes back.
 */
export const MAX_PACED_CLIENTS = 100_000
const WEIGHT = 1 / 16 // of the newest delay in the average: ~16 acknowledgements of memory

export function createAckPace({
  fastMs,
  maxClients = MAX_PACED_CLIENTS,
  onForgotten = () => {},
}: {
  fastMs: number
  maxClients?: number
  /** A session's pace was forgotten to keep `maxClients`. */
  onForgotten?: () => void
}) {
  const average = new Map<string, number>()
  return {
    acked(clientId: string, delayMs: number): void {
      if (fastMs <= 0) return // no hold: nobody is asked whether they are fast
      const before = average.get(clientId)
      if (before === undefined && average.size >= maxClients) {
        // The longest-followed client is forgotten: it counts as fast until measured again.
        average.delete(average.keys().next().value as string)
        onForgotten()
      }
      average.set(clientId, before === undefined ? delayMs : before + (delayMs - before) * WEIGHT)
    },
    fast(clientId: string): boolean {
      return (average.get(clientId) ?? 0) < fastMs
    },
    forget(clientId: string): void {
      average.delete(clientId)
    },
  }
}

export type AckPace = ReturnType<typeof createAckPace>
