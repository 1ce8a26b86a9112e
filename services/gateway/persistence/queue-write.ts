import type { KvBucket } from '../../common/bus/bus.ts'
import { NotFoundError, ValidationError } from '../../common/errors.ts'

/** How long a queue write is tried before the PUBLISH fails (and its publisher must resend). */
export const QUEUE_WRITE_DEADLINE_MS = 15_000
const FIRST_PAUSE_MS = 50
const MAX_PAUSE_MS = 1_000

/**
 * A queue entry's write, tried again while the bus fails it, until `deadlineMs`.
 *
 * A write that timed out may still have landed: the request reached a NATS node that died or lost
 * its leadership before it answered. Failing the PUBLISH then was worse than waiting: its PUBACK
 * is refused, the publisher is disconnected and resends its whole window, and every message of
 * that window already stored and delivered went upstream twice (npm run chaos, rolling restart of
 * the NATS nodes: 500–700 duplicates, all behind one write that timed out after 5 s). Writing the
 * same key and value again is harmless whether the first write landed or not: each message and
 * subscriber has its own key (the entry is only delivered once this write returned). Refusals that
 * a retry cannot change (a malformed key, a bucket gone) fail at once.
 */
export async function writeQueueEntry(
  kv: Pick<KvBucket, 'put'>,
  key: string,
  value: Uint8Array,
  { deadlineMs = QUEUE_WRITE_DEADLINE_MS, onRetry = () => {} } = {}
): Promise<void> {
  const deadline = Date.now() + deadlineMs
  for (let pause = FIRST_PAUSE_MS; ; pause = Math.min(pause * 2, MAX_PAUSE_MS)) {
    try {
      await kv.put(key, value)
      return
    } catch (err) {
      if (err instanceof ValidationError || err instanceof NotFoundError) throw err
      if (Date.now() + pause >= deadline) throw err
      onRetry()
      await new Promise((r) => setTimeout(r, pause))
    }
  }
}
