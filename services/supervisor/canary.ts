import type { CanaryPublisher } from './canary-publisher.ts'

/**
 * The link's end-to-end canary. A link can be connected and still carry nothing (a lost
 * subscription, a delivery path stuck on the gateway, a window whose upstream stopped
 * acknowledging), and look healthy by its state alone, as HiveMQ Edge's do (hivemq-edge#1290).
 * So a QoS 1 message is published to the link's canary topic on the local gateway every
 * `intervalMs` (canary-publisher.ts); the gateway delivers it to the link's session like any
 * message (queue, delivery, persistent session), and the link puts it in its forwarding window
 * in arrival order. It
 * completes when its turn is released, that is once every message that arrived before it was
 * acknowledged upstream. A canary outstanding for longer than `timeoutMs` flags the link silent.
 * The topic is a `$` topic: no wildcard subscriber sees it [MQTT-4.7.2-1], and only the
 * fabric's own supervisor may publish it.
 */
export interface CanaryStatus {
  /** A canary has been outstanding for longer than the timeout while the link was up. */
  silent: boolean
  /** Round trip of the last completed canary, ms: its publish to its release. */
  lastRoundTripMs: number | null
  /** When the last canary completed (ms since the epoch). */
  lastOkAt: number | null
  sent: number
}

export interface LinkCanary {
  readonly topic: string
  /** The link is up: send a canary now and every interval. */
  start(): void
  /** The link is down: no more canaries; what is outstanding no longer counts. */
  stop(): void
  /** A canary arrived through the local session: call the result once its turn is released. */
  arrived(payload: Buffer): () => void
  status(): CanaryStatus
}

const OUTSTANDING_MAX = 64 // a silent link keeps at most this many sent times; the oldest is what matters

export function createLinkCanary({
  topic,
  intervalMs,
  publisher,
  timeoutMs = Math.max(2 * intervalMs, 1_000),
  now = Date.now,
}: {
  topic: string
  intervalMs: number
  publisher: CanaryPublisher
  timeoutMs?: number
  now?: () => number
}): LinkCanary {
  let timer: NodeJS.Timeout | undefined
  let run = 0 // which start() a canary belongs to: one from before a reconnect is not waited for
  const outstanding = new Map<string, number>() // nonce → sent at
  let lastRoundTripMs: number | null = null
  let lastOkAt: number | null = null
  let sent = 0

  const send = (myRun: number) => {
    if (myRun !== run) return
    const nonce = `${myRun}-${sent}`
    const at = now()
    const body = Buffer.from(JSON.stringify({ nonce, at }))
    const sending = publisher.publish(topic, body, (err) => {
      // Not taken by the gateway: nothing will come back, and that says nothing of the link.
      if (err) outstanding.delete(nonce)
    })
    if (!sending) return
    sent++
    if (outstanding.size >= OUTSTANDING_MAX) {
      // Keep the oldest (it decides silence); drop the newest before it.
      const newest = [...outstanding.keys()].pop()
      if (newest !== undefined) outstanding.delete(newest)
    }
    outstanding.set(nonce, at)
  }

  return {
    topic,
    start() {
      this.stop()
      const myRun = run
      send(myRun)
      timer = setInterval(() => send(myRun), intervalMs)
      timer.unref()
    },
    stop() {
      run++
      clearInterval(timer)
      timer = undefined
      outstanding.clear()
    },
    arrived(payload) {
      let nonce: unknown
      try {
        nonce = (JSON.parse(payload.toString()) as { nonce?: unknown }).nonce
      } catch {
        nonce = undefined
      }
      return () => {
        const at = typeof nonce === 'string' ? outstanding.get(nonce) : undefined
        if (at === undefined) return // from an earlier run, or not ours
        outstanding.delete(nonce as string)
        lastOkAt = now()
        lastRoundTripMs = lastOkAt - at
      }
    },
    status() {
      const oldest = Math.min(...outstanding.values())
      return {
        silent: timer !== undefined && now() - oldest > timeoutMs,
        lastRoundTripMs,
        lastOkAt,
        sent,
      }
    },
  }
}
