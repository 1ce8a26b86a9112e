import type { Duplex } from 'node:stream'

type Deliver = (packet: unknown, cb: (...args: unknown[]) => void) => void
type PacketListener = (packet: { cmd: string; qos?: number }) => void

/** The parts of an aedes client (lib/client.js) a closing gateway works with. */
export interface ClosingClient {
  id?: string | null
  clean?: boolean
  conn: Duplex
  deliver0: Deliver
  deliverQoS: Deliver
  _parser: {
    listeners(event: 'packet'): PacketListener[]
    removeListener(event: 'packet', listener: PacketListener): unknown
    on(event: 'packet', listener: PacketListener): unknown
  }
}

export interface ClientWork {
  /** QoS 1 PUBLISHes read from the client and not yet acknowledged (ack-after-store.ts). */
  publishesInFlight(client: ClosingClient): number
  /** Deliveries the client's persistent session has in flight, not yet acknowledged. */
  deliveriesInFlight(clientId: string): number
  /** A QoS 1/2 PUBLISH was left unacknowledged because the gateway is closing. */
  onRefused(): void
}

export const DEFAULT_DRAIN_MS = 2_000
const SETTLE_POLL_MS = 10

/**
 * A gateway that closes on purpose (SIGTERM, a rolling restart) lets what is in flight finish
 * before it drops its connections, so that nothing is delivered twice because of it.
 *
 * Closing at once, it cut every publisher between storing a message and writing its PUBACK (the
 * publisher then sent it again elsewhere), and every persistent session (a bridge) with a window
 * of deliveries it had not acknowledged yet (its queue then handed them out again on its next
 * gateway): a rolling restart duplicated up to ~500 messages (npm run chaos). While draining:
 * - a QoS 1/2 PUBLISH read from now on is neither processed nor acknowledged: the publisher sends
 *   it again on its next connection, where it is new, not a duplicate;
 * - the PUBLISHes being processed finish, and their PUBACKs are written and flushed;
 * - no new delivery is handed to any client: a persistent session's message stays in its queue
 *   for the gateway the client moves to;
 * - acknowledgements keep being read, so what a session has in flight is acknowledged and erased.
 * It ends when every client is settled or after `drainMs`, whichever comes first; a client that
 * does not read is then closed as before.
 */
export function createGracefulClose(work: ClientWork) {
  let draining = false

  function attach(client: ClosingClient): void {
    const held =
      (inner: Deliver): Deliver =>
      (packet, cb) =>
        draining ? setImmediate(cb) : inner(packet, cb)
    client.deliver0 = held(client.deliver0)
    client.deliverQoS = held(client.deliverQoS)
    const parser = client._parser
    for (const listener of parser.listeners('packet')) {
      parser.removeListener('packet', listener)
      parser.on('packet', function (this: unknown, packet) {
        if (draining && packet.cmd === 'publish' && (packet.qos ?? 0) > 0) return work.onRefused()
        listener.call(this, packet)
      })
    }
  }

  function settled(client: ClosingClient): boolean {
    if (client.conn.destroyed) return true
    if (work.publishesInFlight(client) > 0) return false
    if (client.clean === false && client.id && work.deliveriesInFlight(client.id) > 0) return false
    return client.conn.writableLength === 0 // the PUBACKs written are on the wire
  }

  function everySettled(clients: Iterable<ClosingClient>): boolean {
    for (const c of clients) if (!settled(c)) return false
    return true
  }

  /** Start draining; resolves when every client is settled or `drainMs` passed. */
  async function drain(clients: () => Iterable<ClosingClient>, drainMs: number): Promise<void> {
    draining = true
    const deadline = Date.now() + drainMs
    while (Date.now() < deadline) {
      if (everySettled(clients())) return
      await new Promise((r) => setTimeout(r, SETTLE_POLL_MS))
    }
  }

  return { attach, drain }
}
