/**
 * Queue writes held back while their subscriber may acknowledge first.
 *
 * A QoS 1 message to a persistent session is written to the session's queue before it is
 * delivered and erased on the session's PUBACK. For a subscriber connected to the publishing
 * gateway and keeping up (a bridge's local session: every message it forwards), both are almost
 * always wasted work: over NATS two JetStream round trips per message and subscriber, in process
 * a KV entry and its erase. Here such a write waits up to `holdMs`; a PUBACK meanwhile drops it
 * (nothing written, nothing erased). What is not acknowledged in time is written then, and at
 * once when the subscriber's connection closes or the gateway stops.
 *
 * Only a message whose publisher waits for its PUBACK is held (`expect`): the PUBACK then waits
 * until every write held for the message was dropped or written (`settle`), so an acknowledged
 * message is always with its subscriber or in the queue, and a crash in between loses only what
 * its publisher still holds and sends again. Held entries are bounded (`max`): past it, writes
 * go out at once.
 */
export interface HeldWrites {
  /** A publisher will wait for this message's writes: they may be held. Returns its waiter. */
  expect(brokerId: string, brokerCounter: number): Waiter
  /**
   * Hold a write for `clientId` under `key`, of message `origin` (`originKey`); false if it may
   * not be held (write it now).
   */
  hold(clientId: string, key: string, origin: string, write: () => Promise<void>): boolean
  /** The subscriber acknowledged (or was refused) the message: true if its write was held. */
  drop(key: string): boolean
  /** Write now what is held for a client (its connection closed). */
  flush(clientId: string): void
  /** Write now everything held, and wait for it (the gateway stops). */
  flushAll(): Promise<void>
  readonly size: number
}

export interface Waiter {
  /**
   * Resolves once each held write of the message was dropped or written; rejects if one failed.
   * Undefined when nothing is held for it.
   */
  settled(): Promise<void> | undefined
  /** The publish ended without the message (refused, failed): forget it. */
  forget(): void
}

interface Held {
  clientId: string
  origin: string
  write: () => Promise<void>
  at: number
}

interface Expected {
  held: number
  failed?: unknown
  done?: (err?: unknown) => void
}

export const DEFAULT_HOLD_MS = 20
export const DEFAULT_MAX_HELD = 50_000

/** Names one message of one gateway: what its publisher's PUBACK waits on. */
export const originKey = (p: { brokerId?: string; brokerCounter?: number }): string =>
  `${p.brokerId ?? ''}.${p.brokerCounter ?? 0}`

export function createHeldWrites({
  holdMs = DEFAULT_HOLD_MS,
  max = DEFAULT_MAX_HELD,
  now = () => performance.now(),
  onHeld = () => {},
  onDropped = () => {},
  onWritten = () => {},
  onFull = () => {},
}: {
  holdMs?: number
  max?: number
  now?: () => number
  onHeld?: () => void
  /** A held write was not needed: its subscriber acknowledged first. */
  onDropped?: () => void
  /** A held write went out (not acknowledged in time, connection closed, gateway stopping). */
  onWritten?: () => void
  /** A write was not held because `max` were held already: it went out at once. */
  onFull?: () => void
} = {}): HeldWrites {
  const held = new Map<string, Held>() // insertion order is age order: the timer reads the head
  const expected = new Map<string, Expected>()
  const writing = new Set<Promise<void>>()
  let timer: NodeJS.Timeout | undefined

  function release(origin: string, err?: unknown): void {
    const e = expected.get(origin)
    if (!e) return
    if (err !== undefined) e.failed ??= err
    if (--e.held > 0) return
    if (e.done) {
      expected.delete(origin)
      e.done(e.failed)
    }
  }

  function writeOut(key: string, h: Held): void {
    held.delete(key)
    onWritten()
    const w = h.write().then(
      () => release(h.origin),
      (err: unknown) => release(h.origin, err ?? new Error('queue write failed'))
    )
    writing.add(w)
    void w.finally(() => writing.delete(w))
  }

  function tick(): void {
    timer = undefined
    const due = now() - holdMs
    for (const [key, h] of held) {
      if (h.at > due) break
      writeOut(key, h)
    }
    schedule()
  }

  function schedule(): void {
    if (timer || held.size === 0) return
    const oldest = held.values().next().value as Held
    timer = setTimeout(tick, Math.max(1, oldest.at + holdMs - now()))
  }

  return {
    expect(brokerId, brokerCounter) {
      const origin = originKey({ brokerId, brokerCounter })
      const e: Expected = { held: 0 }
      expected.set(origin, e)
      return {
        settled() {
          if (e.held === 0) {
            if (expected.get(origin) === e) expected.delete(origin)
            // Nothing held (nearly every message): the PUBACK goes out in the same turn, as before.
            return e.failed === undefined ? undefined : Promise.reject(e.failed)
          }
          return new Promise<void>((resolve, reject) => {
            e.done = (err) => (err === undefined ? resolve() : reject(err))
          })
        },
        forget() {
          if (expected.get(origin) === e) expected.delete(origin)
        },
      }
    },
    hold(clientId, key, origin, write) {
      const e = expected.get(origin)
      if (!e || holdMs <= 0 || held.has(key)) return false
      if (held.size >= max) return (onFull(), false)
      e.held++
      held.set(key, { clientId, origin, write, at: now() })
      onHeld()
      schedule()
      return true
    },
    drop(key) {
      const h = held.get(key)
      if (!h) return false
      held.delete(key)
      onDropped()
      release(h.origin)
      return true
    },
    flush(clientId) {
      for (const [key, h] of held) if (h.clientId === clientId) writeOut(key, h)
    },
    async flushAll() {
      if (timer) clearTimeout(timer)
      timer = undefined
      for (const [key, h] of held) writeOut(key, h)
      await Promise.allSettled([...writing])
    },
    get size() {
      return held.size
    },
  }
}
