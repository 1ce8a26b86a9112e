type Deliver = (packet: unknown, cb: (...args: unknown[]) => void) => void

/** The parts of an aedes client (lib/client.js) whose deliveries are counted. */
export interface OutboundClient {
  id?: string | null
  deliver0: Deliver
  deliverQoS: Deliver
}

export interface OutboundLimits {
  /** Deliveries handed to a connection and not yet written to its socket. */
  maxPendingMessages: number
  /** Payload bytes of those deliveries. */
  maxPendingBytes: number
}

export interface Pending {
  messages: number
  bytes: number
}

/**
 * A bound on what one connection may have waiting to be written (ARCHITECTURE.md §10).
 *
 * aedes hands a message to each subscriber and, in mqemitter, holds one of 100 shared dispatch
 * slots until the subscriber's socket took it; a socket that stops draining held its slots, and
 * 100 of them stopped delivery to every client (aedes' own remedy, `drainTimeout`, waits 60 s).
 * Our mq releases a slot as soon as the message is handed out (mq.ts), so a slow reader costs
 * only its own memory, and this bound caps that memory. At it a QoS 0 delivery is dropped (QoS 0
 * promises nothing; Mosquitto drops it too): a bridge link carrying a QoS 0 stream faster than its
 * upstream takes it loses those messages, not its connection and everything in flight on it. A
 * QoS > 0 delivery at the bound closes the connection as a slow consumer, as NATS does. Nothing
 * QoS > 0 of a persistent session is lost by that: every such message sits in the session's queue
 * until acknowledged, and comes again on the next connection.
 */
export function createOutboundLimiter(
  limits: OutboundLimits,
  onSlowConsumer: (client: OutboundClient, pending: Pending) => void,
  onQos0Dropped: (client: OutboundClient) => void
) {
  /** Count every delivery of `client` from hand-out to written; call before the connack gate. */
  function attach(client: OutboundClient): void {
    const pending: Pending = { messages: 0, bytes: 0 }
    let cut = false
    // `atMostOnce`: aedes' deliver0, which a QoS 0 subscription calls with the packet as published
    // (its `qos` may say 1): whatever it carries goes out as QoS 0.
    const counted =
      (inner: Deliver, atMostOnce: boolean): Deliver =>
      (packet, cb) => {
        if (cut) return cb()
        const bytes = payloadBytes(packet)
        if (
          pending.messages + 1 > limits.maxPendingMessages ||
          pending.bytes + bytes > limits.maxPendingBytes
        ) {
          if (atMostOnce) {
            onQos0Dropped(client)
            return cb()
          }
          cut = true
          onSlowConsumer(client, { ...pending })
          return cb()
        }
        pending.messages++
        pending.bytes += bytes
        inner(packet, (...args) => {
          pending.messages--
          pending.bytes -= bytes
          cb(...args)
        })
      }
    const deliver0 = counted(client.deliver0, true)
    const deliverQoS = counted(client.deliverQoS, false)
    client.deliver0 = deliver0
    // aedes' deliverQoS hands QoS 0 packets to `this.deliver0`, which is counted already.
    client.deliverQoS = (packet, cb) =>
      (packet as { qos?: number }).qos === 0 ? deliver0(packet, cb) : deliverQoS(packet, cb)
  }

  return { attach }
}
export type OutboundLimiter = ReturnType<typeof createOutboundLimiter>

export function payloadBytes(packet: unknown): number {
  return (packet as { payload?: { length?: number } }).payload?.length ?? 0
}
