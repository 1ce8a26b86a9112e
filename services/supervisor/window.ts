/**
 * The forwarding window of one link (ARCHITECTURE.md §4, §8, §13): up to `size` QoS 1 publishes in
 * flight upstream at once, and each local message acknowledged only once the upstream
 * acknowledged every copy of it, in the order the messages arrived. A crash anywhere therefore
 * loses nothing: what was not acknowledged locally is redelivered by the gateway's persistent
 * session. Memory is bounded: past `2 × size` waiting messages the local socket is paused, so
 * the gateway keeps the rest.
 */
export interface WindowMessage {
  payload: Buffer
  qos: 0 | 1
  retain: boolean
  /** Local message id, acknowledged once every target acked; absent for QoS 0. */
  messageId?: number
}

export interface ForwardWindowOptions {
  size: number
  /** Publish upstream; `done` fires on PUBACK for QoS 1, on write for QoS 0. */
  publish: (
    topic: string,
    payload: Buffer,
    opts: { qos: 0 | 1; retain: boolean },
    done: (err?: Error) => void
  ) => void
  ack: (messageId: number) => void
  pause: () => void
  resume: () => void
  onError: (err: Error) => void
  now?: () => number
}

export interface ForwardWindow {
  /** `onReleased`: the message's turn came (everything before it was acknowledged upstream). */
  push(msg: WindowMessage, targets: readonly string[], onReleased?: () => void): void
  /** Received and not yet acknowledged upstream. */
  readonly waiting: number
  /** Completed: every target acknowledged (QoS 1) or written (QoS 0). */
  readonly forwarded: number
  /** Age of the oldest waiting message: how far forwarding lags behind arrival. */
  lagMs(): number
  /** Forget everything; late callbacks are ignored (the link is being torn down). */
  close(): void
}

interface Entry {
  messageId: number | undefined
  routed: boolean
  remaining: number
  receivedAt: number
  onReleased: (() => void) | undefined
}

interface Send {
  entry: Entry
  topic: string
  payload: Buffer
  qos: 0 | 1
  retain: boolean
}

export function createForwardWindow({
  size,
  publish,
  ack,
  pause,
  resume,
  onError,
  now = Date.now,
}: ForwardWindowOptions): ForwardWindow {
  const entries: Entry[] = [] // receive order; the head is the next PUBACK to send
  let head = 0
  const sends: Send[] = []
  let sendHead = 0
  let inflight = 0
  let forwarded = 0
  let paused = false
  let closed = false
  const highWater = size * 2

  const waiting = () => entries.length - head

  function compact() {
    // Shift the arrays only now and then: `shift()` per message would be O(n) each.
    if (head > 1_024 && head * 2 > entries.length) {
      entries.splice(0, head)
      head = 0
    }
    if (sendHead > 1_024 && sendHead * 2 > sends.length) {
      sends.splice(0, sendHead)
      sendHead = 0
    }
  }

  function release() {
    while (head < entries.length && entries[head]!.remaining === 0) {
      const e = entries[head++]!
      if (e.routed) forwarded++
      if (e.messageId !== undefined) ack(e.messageId)
      e.onReleased?.()
    }
    compact()
    if (paused && waiting() <= size) {
      paused = false
      resume()
    }
  }

  function pump() {
    while (!closed && sendHead < sends.length && inflight < size) {
      const s = sends[sendHead++]!
      if (s.qos === 1) inflight++
      publish(s.topic, s.payload, { qos: s.qos, retain: s.retain }, (err) => {
        if (closed) return
        if (err) return onError(err)
        if (s.qos === 1) inflight--
        s.entry.remaining--
        release()
        pump()
      })
    }
    compact()
  }

  return {
    push(msg, targets, onReleased) {
      if (closed) return
      const entry: Entry = {
        messageId: msg.messageId,
        routed: targets.length > 0,
        remaining: targets.length,
        receivedAt: now(),
        onReleased,
      }
      entries.push(entry)
      for (const topic of targets) {
        sends.push({ entry, topic, payload: msg.payload, qos: msg.qos, retain: msg.retain })
      }
      if (targets.length === 0) release()
      else pump()
      if (!paused && waiting() >= highWater) {
        paused = true
        pause()
      }
    },
    get waiting() {
      return waiting()
    },
    get forwarded() {
      return forwarded
    },
    lagMs() {
      return head < entries.length ? Math.max(0, now() - entries[head]!.receivedAt) : 0
    },
    close() {
      closed = true
      entries.length = 0
      sends.length = 0
      head = sendHead = 0
    },
  }
}
