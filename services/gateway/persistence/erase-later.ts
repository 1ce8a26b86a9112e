import type { KvBucket } from '../../common/bus/bus.ts'
import type { Logger } from '../../common/log.ts'

/** Queue entries whose erase failed, kept for a retry; past it an entry may be delivered twice. */
export const MAX_ERASES_PENDING = 100_000
// Tried again every 100 ms (one pass at a time: while the bus is away each pass waits out one
// request's timeout). A queue write given up on in a partition lands after the heal and is erased
// here; until then another gateway's queue sweep may deliver it (one duplicate run of 257 with
// 1 s here; the window is now a tenth of that).
const RETRY_MS = 100

export interface EraseLater {
  /** Erase now; if the bus fails, keep the key and erase it later. Never throws. */
  erase(key: string): Promise<void>
  /** Acknowledged but not yet erased: a read of the queue skips it. */
  has(key: string): boolean
  readonly pending: number
  stop(): void
}

/**
 * Erases of acknowledged queue entries that outlive a bus fault.
 *
 * The PUBACK is the client's word that it has the message; a failed erase (the stream without a
 * leader for a few seconds while a NATS node dies) used to fail the PUBACK, and aedes then
 * closed the connection. The client reconnected and got every entry whose erase had failed
 * again: a bridge forwarded up to ~1,000 duplicates per NATS node kill. Now the key waits here,
 * skipped by this gateway's reads of the queue, and is erased once the bus answers again.
 */
export function createEraseLater({
  kv,
  log,
  onDeferred = () => {},
  onDropped = () => {},
}: {
  kv: KvBucket
  log: Logger
  /** An erase failed and waits for a retry. */
  onDeferred?: () => void
  /** An erase failed with MAX_ERASES_PENDING waiting: it is not retried. */
  onDropped?: () => void
}): EraseLater {
  const waiting = new Set<string>()
  let timer: NodeJS.Timeout | undefined
  let retrying = false

  async function retry(): Promise<void> {
    if (retrying) return
    retrying = true
    const count = waiting.size
    try {
      for (const key of [...waiting]) {
        await kv.erase(key)
        waiting.delete(key)
      }
      if (count) log.info({ count }, 'acknowledged queue entries erased after the bus came back')
    } catch {
      // Still failing: the rest waits for the next round.
    } finally {
      retrying = false
      if (waiting.size === 0) (clearInterval(timer), (timer = undefined))
    }
  }

  return {
    async erase(key) {
      try {
        await kv.erase(key)
      } catch (err) {
        if (waiting.size >= MAX_ERASES_PENDING) return onDropped()
        if (waiting.size === 0)
          log.warn({ err }, 'erasing an acknowledged queue entry failed; retrying every second')
        waiting.add(key)
        onDeferred()
        timer ??= setInterval(() => void retry(), RETRY_MS).unref()
      }
    },
    has: (key) => waiting.has(key),
    get pending() {
      return waiting.size
    },
    stop() {
      clearInterval(timer)
      timer = undefined
    },
  }
}
