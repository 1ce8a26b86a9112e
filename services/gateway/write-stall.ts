/**
 * A connection whose socket has taken nothing for `stallMs` while deliveries wait for it is
 * closed (NATS' write deadline; Mosquitto has none). The pending bound caps what such a
 * connection holds, but not for how long: a peer that is gone without a FIN (a cut cable, a
 * NAT that forgot it) with keep-alive 0, or a client that stopped reading, held its pending
 * deliveries, its socket buffers and, for a persistent session catching up, a drain waiting for
 * room, until TCP gave up retransmitting (about 15 minutes on Linux), or forever. A persistent
 * session loses nothing by it: its QoS > 0 messages are in its queue for the next connection.
 *
 * Only connections with something pending are followed (at most one entry per connection), and
 * one sweep looks at them, so a healthy connection costs two map operations when its pending
 * deliveries go from none to some and back.
 */
export interface WriteStallWatch<C> {
  /** `client` had nothing pending and now has: its clock starts. */
  waiting(client: C): void
  /** A write of `client`'s completed: the clock starts again, or stops if nothing is pending. */
  progressed(client: C, stillPending: boolean): void
  /** `client` is gone. */
  forget(client: C): void
  /** Connections followed now (for tests; bounded by the connections). */
  readonly followed: number
  stop(): void
}

export function createWriteStallWatch<C>({
  stallMs,
  onStalled,
  now = Date.now,
}: {
  /** 0 = never. */
  stallMs: number
  /** Close it; called once per stall, after which the client is no longer followed. */
  onStalled: (client: C, stalledMs: number) => void
  now?: () => number
}): WriteStallWatch<C> {
  // Since when each followed connection has had deliveries pending and none written.
  const since = new Map<C, number>()
  const sweep =
    stallMs > 0
      ? setInterval(
          () => {
            const t = now()
            for (const [client, from] of since) {
              if (t - from < stallMs) continue
              since.delete(client)
              onStalled(client, t - from)
            }
          },
          // A stall is seen at most a quarter of the deadline late (and at least every second).
          Math.max(50, Math.min(1_000, stallMs / 4))
        )
      : undefined
  sweep?.unref()
  if (!sweep) return { waiting() {}, progressed() {}, forget() {}, followed: 0, stop() {} } as const
  return {
    waiting(client) {
      if (!since.has(client)) since.set(client, now())
    },
    progressed(client, stillPending) {
      if (stillPending) since.set(client, now())
      else since.delete(client)
    },
    forget(client) {
      since.delete(client)
    },
    get followed() {
      return since.size
    },
    stop() {
      clearInterval(sweep)
      since.clear()
    },
  }
}
