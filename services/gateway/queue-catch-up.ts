import type { Duplex } from 'node:stream'
import type { Logger } from '../common/log.ts'
import type { WirePacket } from './codec.ts'
import { queuedToo, type ConnackGate, type GatedClient } from './connack-gate.ts'
import type { OutboundClient, OutboundLimiter } from './outbound.ts'
import type { CatchUp } from './persistence/queue-read.ts'
import { deliverPastDedupe, type DedupingClient } from './queue-sweep.ts'

/**
 * A persistent session that reaches its pending bound catches up from its queue on the same
 * connection instead of being cut (ARCHITECTURE.md §10).
 *
 * Every QoS > 0 message for a persistent session is in its queue before it is delivered, so a
 * delivery it cannot take yet need not wait in memory, and the session need not be cut for it:
 * a bridge link whose upstream is slower than its publishers was cut every ~10,000 messages,
 * dialled again, and got what was in flight twice (npm run bench -- bridge, 1 KiB). Here the
 * session is held as a resuming one is (connack-gate.ts: live messages with a queued copy are
 * left to the queue, the last read holds them in memory, then they are released in order), and a
 * drain hands it its queue, skipping what is in flight on the connection, whenever it has room
 * (at most half the bound pending). A session that never reads again costs its socket's buffer
 * and nothing more. Whatever has no queued copy (clean sessions, QoS 0, retained deliveries) is
 * still cut or dropped by the bound as before (outbound.ts).
 */
export interface QueueCatchUpOptions {
  connackGate: ConnackGate
  /** The limiter asks this module at its bound, so it is made after: looked up when needed. */
  outbound: () => OutboundLimiter
  persistence: {
    /**
     * The session's queue read one entry at a time: a stream reads ahead, and its last read's
     * `caughtUp` came while entries it had read still waited for a slow connection.
     */
    queueOf(clientId: string, catchUp: CatchUp): AsyncGenerator<WirePacket | { cmd: 'pubrel' }>
    keysInFlight(clientId: string): Set<string>
    writeHeld(clientId: string): void
  }
  onCatchUp(): void
  log: Logger
}

interface CatchingClient extends GatedClient {
  id: string
  conn: Duplex
  connected: boolean
  closed: boolean
  duplicates: DedupingClient['duplicates']
}

/**
 * `catchUpInstead` for the limiter (true if the client now catches up from its queue), and
 * `drainAgain` for the gate (a session being released reads its queue once more).
 */
export function createQueueCatchUp(o: QueueCatchUpOptions) {
  const catching = new WeakSet<object>()
  const drainFor = (client: CatchingClient, slot = o.outbound().detour(client)): boolean => {
    if (!slot) return false
    catching.add(client)
    void drain(o, client, slot.get().deliverQoS).finally(() => catching.delete(client))
    return true
  }
  // False while a drain of it still runs: the gate then cuts it as a slow consumer (counted).
  const drainAgain = (gated: GatedClient): boolean =>
    !catching.has(gated) && drainFor(gated as CatchingClient)
  const catchUpInstead = (outboundClient: OutboundClient, packet: unknown): boolean => {
    const client = outboundClient as unknown as CatchingClient
    if (catching.has(client) || !client.connected || client.closed || client.conn.destroyed)
      return false
    if (!queuedToo(client, packet as Parameters<typeof queuedToo>[1])) return false
    // Still resuming: its gate holds already, and what it held is what passed the bound.
    if (o.connackGate.holding(client)) return false
    const slot = o.outbound().detour(client)
    if (!slot) return false
    // Held writes (NATS) go to the queue now: the drain reads what the connection skips.
    o.persistence.writeHeld(client.id)
    o.connackGate.hold(client, slot)
    o.onCatchUp()
    o.log.info(
      { clientId: client.id },
      'session at its pending bound: catching up from its queue on the same connection'
    )
    return drainFor(client, slot)
  }
  return { catchUpInstead, drainAgain }
}

async function drain(
  o: QueueCatchUpOptions,
  client: CatchingClient,
  deliver: (packet: unknown, cb: () => void) => void
): Promise<void> {
  let onClosed!: () => void
  const closed = new Promise<void>((resolve) => (onClosed = resolve))
  client.conn.once('close', onClosed)
  // aedes hands a delivery out at setImmediate (lib/client.js), where it gets its packet id: those
  // already on their way are then in flight, and the drain's first read skips them.
  await new Promise((resolve) => setImmediate(resolve))
  const queue = o.persistence.queueOf(client.id, {
    ...o.connackGate.drainOf(client),
    handedOut: () => o.persistence.keysInFlight(client.id),
  })
  try {
    for await (const p of queue) {
      // A PUBREL owed on this connection went out already; it is sent again only on reconnect.
      if (p.cmd === 'pubrel') continue
      const room = o.outbound().room(client)
      if (room) await Promise.race([room, closed])
      if (client.conn.destroyed) break
      deliverPastDedupe(client as unknown as DedupingClient, p, deliver)
    }
  } catch (err) {
    // Cut instead: the next connection resumes from the queue, which lost nothing.
    o.log.warn({ clientId: client.id, err }, 'catching up from the queue failed; closing')
    client.conn.destroy()
  }
  client.conn.off('close', onClosed)
  o.connackGate.release(client)
}
