/**
 * One SSE client's waiting events, bounded. A socket that does not drain blocks the client's
 * writes while the bus keeps delivering: past `max` waiting items the queue is dropped (freed at
 * once, `onDrop` called once) instead of growing. `park` is the loop's sleep, woken by a push,
 * a drop or `close` (a loop parked in a sleep leaks until it ends, ARCHITECTURE.md §13).
 */
export interface SseQueue<T> {
  push(item: T): void
  shift(): T | undefined
  readonly length: number
  /** True once the bound was passed. */
  readonly dropped: boolean
  /** True once closed (the client went away). */
  readonly closed: boolean
  /** Wait for an item, a drop or a close (false), or `ms` (true). */
  park(ms: number): Promise<boolean>
  close(): void
}

export function createSseQueue<T>({
  max,
  onDrop,
  queued,
}: {
  max: number
  onDrop: () => void
  /** Gauge of items waiting in all queues. */
  queued?: { inc(n?: number): void; dec(n?: number): void }
}): SseQueue<T> {
  const items: T[] = []
  let dropped = false
  let closed = false
  let wake: () => void = () => {}
  const free = () => {
    if (items.length) queued?.dec(items.length)
    items.length = 0
  }
  return {
    push(item) {
      if (dropped || closed) return
      if (items.length >= max) {
        dropped = true
        free()
        onDrop()
      } else {
        items.push(item)
        queued?.inc()
      }
      wake()
    },
    shift() {
      const item = items.shift()
      if (item !== undefined) queued?.dec()
      return item
    },
    get length() {
      return items.length
    },
    get dropped() {
      return dropped
    },
    get closed() {
      return closed
    },
    park(ms) {
      return new Promise<boolean>((resolve) => {
        if (items.length || dropped || closed) return resolve(false)
        // Cleared on wake, so a busy stream does not pile up pending sleeps.
        const timer = setTimeout(() => {
          wake = () => {}
          resolve(true)
        }, ms)
        wake = () => {
          wake = () => {}
          clearTimeout(timer)
          resolve(false)
        }
      })
    },
    close() {
      closed = true
      free()
      wake()
    },
  }
}
