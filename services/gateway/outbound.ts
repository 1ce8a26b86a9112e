import { createWriteStallWatch, type WriteStallWatch } from './write-stall.ts'

type Deliver = (packet: unknown, cb: (...args: unknown[]) => void) => void

/** The parts of an aedes client (lib/client.js) whose deliveries are counted. */
export interface OutboundClient {
  id?: string | null
  deliver0: Deliver
  deliverQoS: Deliver
  /** Its connection: while deliveries wait for it, whether it closed (write-stall.ts). */
  conn?: { once(event: 'close', listener: () => void): unknown; destroy(): unknown }
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
 * QoS > 0 delivery at the bound to a persistent session is in the session's queue already: the
 * session then catches up from its queue on the same connection, as it does when it resumes
 * (queue-catch-up.ts), and nothing of it waits in memory meanwhile. Any other QoS > 0 delivery at
 * the bound closes the connection as a slow consumer, as NATS does.
 */
export function createOutboundLimiter(
  limits: OutboundLimits,
  onSlowConsumer: (client: OutboundClient, pending: Pending) => void,
  onQos0Dropped: (client: OutboundClient) => void,
  /**
   * At the bound, before cutting: may this client catch up from its queue instead (a persistent
   * session whose copy of `packet` is queued, queue-catch-up.ts)? True if it now does.
   */
  catchUpInstead: (client: OutboundClient, packet: unknown) => boolean = () => false,
  /** Closes a connection whose socket took nothing for a while with deliveries waiting. */
  stalls: WriteStallWatch<OutboundClient> = createWriteStallWatch({
    stallMs: 0,
    onStalled: () => {},
  })
) {
  const states = new WeakMap<OutboundClient, Counted>()

  /** Count every delivery of `client` from hand-out to written; call before the connack gate. */
  function attach(client: OutboundClient): void {
    const state = new Counted(limits)
    states.set(client, state)
    client.conn?.once('close', () => stalls.forget(client))
    const counted =
      (inner: Deliver, atMostOnce: boolean): Deliver =>
      (packet, cb) => {
        if (state.cut) return cb()
        const bytes = payloadBytes(packet)
        if (!state.fits(bytes)) {
          if (atMostOnce) {
            onQos0Dropped(client)
            return cb()
          }
          // Left to the queue, which holds it: nothing is lost, and the session is not cut.
          if (catchUpInstead(client, packet)) return cb()
          state.cut = true
          onSlowConsumer(client, { ...state.pending })
          return cb()
        }
        state.add(bytes)
        if (state.pending.messages === 1) stalls.waiting(client)
        inner(packet, (...args) => {
          state.remove(bytes)
          stalls.progressed(client, state.pending.messages > 0)
          cb(...args)
        })
      }
    const deliver0 = counted(client.deliver0, true)
    const deliverQoS = counted(client.deliverQoS, false)
    // aedes' deliverQoS hands QoS 0 packets to `this.deliver0`, which is counted already.
    const countedQoS: Deliver = (packet, cb) =>
      (packet as { qos?: number }).qos === 0 ? deliver0(packet, cb) : deliverQoS(packet, cb)
    state.counted = { deliver0, deliverQoS: countedQoS }
    // aedes keeps the function a SUBSCRIBE found on the client, so a detour set later (a session
    // catching up from its queue mid-connection) is taken here, not by replacing these.
    client.deliver0 = (packet, cb) => (state.route ?? state.counted).deliver0(packet, cb)
    client.deliverQoS = (packet, cb) => (state.route ?? state.counted).deliverQoS(packet, cb)
  }

  return {
    attach,
    /**
     * Where `client`'s deliveries go next: `set` a wrapper of `get()` (the counted deliveries) to
     * put something in front of them; setting `get()` back removes it. For the connack gate.
     */
    detour(client: OutboundClient): Detour | undefined {
      const state = states.get(client)
      if (!state) return undefined
      return {
        get: () => state.counted,
        set: (d) => void (state.route = d === state.counted ? undefined : d),
      }
    },
    /**
     * Undefined while `client` has at most half the bound pending, else a promise of when it
     * has: a drain or a release hands it one more message only then, so it never reaches the
     * bound itself. Never settles for a connection that stops reading: race it with its close.
     */
    room(client: OutboundClient): Promise<void> | undefined {
      return states.get(client)?.room()
    },
  }
}

export interface Deliveries {
  deliver0: Deliver
  deliverQoS: Deliver
}

/** The pair of deliver functions one connection's deliveries go through next. */
export interface Detour {
  get(): Deliveries
  set(d: Deliveries): void
}

/** One connection's pending deliveries, and who waits for room among them. */
class Counted {
  readonly pending: Pending = { messages: 0, bytes: 0 }
  cut = false
  counted!: Deliveries
  route: Deliveries | undefined
  private waiting: Array<() => void> = []

  constructor(private readonly limits: OutboundLimits) {}

  fits(bytes: number): boolean {
    return (
      this.pending.messages + 1 <= this.limits.maxPendingMessages &&
      this.pending.bytes + bytes <= this.limits.maxPendingBytes
    )
  }

  add(bytes: number): void {
    this.pending.messages++
    this.pending.bytes += bytes
  }

  remove(bytes: number): void {
    this.pending.messages--
    this.pending.bytes -= bytes
    if (this.waiting.length > 0 && this.roomy()) for (const w of this.waiting.splice(0)) w()
  }

  room(): Promise<void> | undefined {
    if (this.roomy() || this.cut) return undefined
    return new Promise((resolve) => this.waiting.push(resolve))
  }

  private roomy(): boolean {
    return (
      this.pending.messages <= this.limits.maxPendingMessages / 2 &&
      this.pending.bytes <= this.limits.maxPendingBytes / 2
    )
  }
}

export type OutboundLimiter = ReturnType<typeof createOutboundLimiter>

export function payloadBytes(packet: unknown): number {
  return (packet as { payload?: { length?: number } }).payload?.length ?? 0
}
