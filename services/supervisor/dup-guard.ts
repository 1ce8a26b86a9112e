/**
 * A bounded guard against stray cycles (ARCHITECTURE.md §9, the duplicate guard): MQTT 3.1.1
 * carries no origin, so a message caught in a loop of bridges comes back again and again,
 * milliseconds apart. The guard counts identical messages (topic, payload, retain) per link
 * within a short window and drops one once it passed through more than `threshold` times, which
 * breaks the cycle.
 *
 * It is not a correctness mechanism: identical legitimate messages exist (an unchanged reading),
 * so the threshold sits far above any sane repeat rate (default: 20 identical within 200 ms, i.e.
 * 100 Hz of the very same payload on one topic). Memory: at most `maxEntries` keys, oldest first out.
 */
export interface DupGuard {
  /** True when this message should be dropped. */
  check(topic: string, payload: Buffer, retain: boolean): boolean
  readonly dropped: number
}

export const DEFAULT_DUP_THRESHOLD = 20
export const DEFAULT_DUP_WINDOW_MS = 200
const DEFAULT_MAX_ENTRIES = 10_000

// FNV-1a, 32 bit: fast, and good enough to tell payloads apart for a counter that only trips on
// storms; a collision costs nothing unless the same pair also repeats 20 times in 200 ms.
function fnv1a(buf: Buffer): number {
  let h = 0x811c9dc5
  for (let i = 0; i < buf.length; i++) {
    h ^= buf[i]!
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

export function createDupGuard({
  threshold = DEFAULT_DUP_THRESHOLD,
  windowMs = DEFAULT_DUP_WINDOW_MS,
  maxEntries = DEFAULT_MAX_ENTRIES,
  now = Date.now,
}: {
  threshold?: number
  windowMs?: number
  maxEntries?: number
  now?: () => number
} = {}): DupGuard {
  // Map keeps insertion order: re-inserting a key makes it the newest, the first key the oldest.
  const seen = new Map<string, { since: number; count: number }>()
  let dropped = 0
  return {
    check(topic, payload, retain) {
      const key = `${retain ? 1 : 0}${payload.length}:${fnv1a(payload)}:${topic}`
      const t = now()
      const e = seen.get(key)
      if (e && t - e.since < windowMs) {
        e.count++
        seen.delete(key)
        seen.set(key, e)
        if (e.count > threshold) {
          dropped++
          return true
        }
        return false
      }
      seen.delete(key)
      seen.set(key, { since: t, count: 1 })
      if (seen.size > maxEntries) seen.delete(seen.keys().next().value!)
      return false
    },
    get dropped() {
      return dropped
    },
  }
}
