import type { Duplex } from 'node:stream'
import { payloadBytes, type Detour, type OutboundLimits } from './outbound.ts'
import type { CatchUp } from './persistence/queue-read.ts'
import { filterMatches } from './topic-match.ts'

type Deliver = (packet: unknown, cb: () => void) => void

/** The parts of an aedes client (lib/client.js) the gate replaces and watches. */
export interface GatedClient {
  conn: Duplex
  deliver0: Deliver
  deliverQoS: Deliver
  /** Set by aedes from the CONNECT before any delivery. */
  clean?: boolean
  /** aedes' record of the client's filters, restored ones included. */
  subscriptions?: Record<string, { qos?: number }>
}

interface LivePacket {
  topic?: string
  qos?: number
  retain?: boolean
  brokerId?: string
  brokerCounter?: number
}

/**
 * Where a connection's deliveries are wrapped: on the client itself before its CONNECT is read
 * (subscriptions restored from the session take what is there), or, for a session that catches up
 * again mid-connection, in front of its counted deliveries (outbound.ts `detour`).
 */
const onClient = (client: GatedClient): Detour => ({
  get: () => ({ deliver0: client.deliver0, deliverQoS: client.deliverQoS }),
  set: (d) => {
    client.deliver0 = d.deliver0
    client.deliverQoS = d.deliverQoS
  },
})

/** Where a message comes from: its gateway's broker id and that gateway's counter. */
export interface Origin {
  brokerId?: string
  brokerCounter?: number
}

/**
 * Does the session's queue hold its own copy of this live message? aedes queues a QoS > 0
 * PUBLISH for every persistent session with a QoS > 0 subscription matching it, connected or not,
 * before it delivers the message (enqueueOffline before emitPacket); a retained copy is not
 * queued.
 */
export function queuedToo(client: GatedClient, packet: LivePacket): boolean {
  if (client.clean !== false || !packet.qos || packet.retain || packet.topic === undefined)
    return false
  for (const [filter, sub] of Object.entries(client.subscriptions ?? {}))
    if ((sub.qos ?? 0) > 0 && filterMatches(filter, packet.topic)) return true
  return false
}

/**
 * Hold a connecting client's deliveries until its CONNACK is written [MQTT-3.2.0-1] and its
 * resumed session's queue is drained [MQTT-4.6.0-6].
 *
 * aedes 1.2 (lib/handlers/connect.js) restores a persistent session's subscriptions before
 * storeWill, registerClient and doConnack, and its `write()` sends whenever the client is still
 * `connecting`. A message matching a restored subscription in that window, which is a few KV
 * round trips wide on our persistence, reached the socket ahead of the CONNACK (older report:
 * aedes#80). MQTT.js then answers the PUBLISH with a PUBACK that it queues until it is
 * connected, and its packet loop waits on that PUBACK, so it never reads the CONNACK behind it:
 * the client hangs until its connect timeout.
 *
 * The hold also lasts while aedes drains a resumed session's queue, which it writes after the
 * CONNACK and around `deliverQoS`: a message published on another gateway just before the
 * reconnect can reach this one live during the drain, and went out ahead of older queued ones.
 * Released after the drain, the live copy comes last, and aedes' dedupe drops it when the queue
 * already carried it (the persistence records what the drain handed out).
 *
 * A persistent session catching up does not hold what its queue already has: the drain reads the
 * queue again until a read finds at most LAST_READ_MAX new entries (persistence/queue-read.ts),
 * and until it calls `holdLive` (`drainOf(client)`) a live QoS > 0 message with a copy in the
 * queue is left to the drain. Held for a whole long drain instead, every live message waited in
 * memory and went out in a burst at the end: 8 sessions catching up on 5,000 messages each held
 * ~50,000 of them and took the loop from every other client for seconds (npm run bench --
 * isolation).
 *
 * The drain's last read holds live messages within the connection's outbound bound; if more
 * come meanwhile (a slow read on a loaded node), those with a queued copy are left to the queue
 * again and `caughtUp` tells the drain to read once more. Cut instead, a session that
 * read as fast as it was sent to lost its connection (and its reconnect, the same race again).
 *
 * The drain tells the gate each message it hands out (`onHandedOut`), by origin and counter, so a
 * live copy of one, held or arriving just after, is dropped rather than sent twice. Not aedes'
 * per-client dedupe record: that keeps the highest counter seen per gateway, and two queue
 * writes of one gateway finish in any order, so a message numbered below one the drain handed
 * out may reach the queue after the drain read it; refused as "seen" live, its queued copy was
 * erased too (aedes clears it on that refusal) and the message was lost.
 *
 * Call `hold(client)` before aedes reads the CONNECT, and `release(client)` once the connect
 * finished (aedes' `clientReady` event). If the connection closes first, held deliveries are
 * dropped and their callbacks run (a persistent session still has its QoS > 0 copies in the
 * queue). What is held counts against the connection's outbound bound (outbound.ts): a session
 * that resumes a backlog and does not read while live messages keep coming is cut as a slow
 * consumer, not left to grow. A session that catches up again mid-connection is held the same
 * way, in front of its counted deliveries (`hold(client, slot)`, queue-catch-up.ts), and released
 * when that drain ends.
 */
const RELEASE_SLICE = 64 // held deliveries written per turn of the event loop
/** How long after the release a live copy of a drained message is still recognised. */
const DRAINED_GRACE_MS = 10_000
/** Drained messages remembered per connection; past it a late live copy may go out twice. */
export const MAX_DRAINED_REMEMBERED = 100_000

/** The messages one connection's drain handed out, by origin, bounded. */
class Drained {
  private readonly byOrigin = new Map<string, Set<number>>()
  private size = 0
  /** Holds of the connection still under way: the record outlives the last one by a grace. */
  holds = 0

  /** False when the bound is reached (not remembered). */
  add(p: Origin): boolean {
    if (p.brokerId === undefined || p.brokerCounter === undefined) return true
    if (this.size >= MAX_DRAINED_REMEMBERED) return false
    let counters = this.byOrigin.get(p.brokerId)
    if (!counters) this.byOrigin.set(p.brokerId, (counters = new Set()))
    if (!counters.has(p.brokerCounter)) (counters.add(p.brokerCounter), this.size++)
    return true
  }

  /** Was this message drained? Forgotten once asked: there is one live copy per connection. */
  take(p: Origin): boolean {
    if (p.brokerId === undefined || p.brokerCounter === undefined) return false
    const found = this.byOrigin.get(p.brokerId)?.delete(p.brokerCounter) ?? false
    if (found) this.size--
    return found
  }
}

interface HeldDelivery {
  deliver: Deliver
  packet: unknown
  cb: () => void
}

/** One connection's held deliveries, in order, with their payload bytes. */
class Held {
  private items: HeldDelivery[] = []
  private bytes = 0

  size(): { messages: number; bytes: number } {
    return { messages: this.items.length, bytes: this.bytes }
  }

  fits(packet: unknown, limits: OutboundLimits): boolean {
    return (
      this.items.length + 1 <= limits.maxPendingMessages &&
      this.bytes + payloadBytes(packet) <= limits.maxPendingBytes
    )
  }

  push(h: HeldDelivery): void {
    this.items.push(h)
    this.bytes += payloadBytes(h.packet)
  }

  /** The oldest `n`, removed. */
  take(n: number): HeldDelivery[] {
    const out = this.items.splice(0, n)
    for (const h of out) this.bytes -= payloadBytes(h.packet)
    return out
  }

  /** Drop (run the callback of) each held delivery whose packet `which` picks; keep the rest. */
  drop(which: (packet: unknown) => boolean): void {
    const kept: HeldDelivery[] = []
    this.bytes = 0
    for (const h of this.items.splice(0)) {
      if (which(h.packet)) h.cb()
      else (kept.push(h), (this.bytes += payloadBytes(h.packet)))
    }
    this.items = kept
  }
}

export interface ConnackGateOptions {
  limits: OutboundLimits
  /** Undefined if the connection may take one more delivery now, else when it may. */
  room?: (client: GatedClient) => Promise<void> | undefined
  /**
   * Read the session's queue again, then `release` it: live messages came faster than a slow
   * reader took what was held (queue-catch-up.ts). False if it cannot: the session is cut.
   */
  drainAgain?: (client: GatedClient) => boolean
  onOverflow: (client: GatedClient, held: { messages: number; bytes: number }) => void
  /** A drained message was not remembered (MAX_DRAINED_REMEMBERED): its live copy may repeat. */
  onDrainedForgotten?: () => void
}

/** What every held connection of one gate shares. */
interface GateState extends Required<Omit<ConnackGateOptions, 'drainAgain'>> {
  drainAgain: ConnackGateOptions['drainAgain']
  /** Client → how to end its hold: deliver what was held (CONNACK sent) or drop it (closed). */
  holds: WeakMap<GatedClient, (deliver: boolean) => void>
  /** Clients whose live QoS > 0 messages with a queued copy are still left to the drain. */
  leftToQueue: WeakSet<GatedClient>
  /** Clients whose drain is in its last read, and those that went back to the queue meanwhile. */
  lastRead: WeakSet<GatedClient>
  relapsed: WeakSet<GatedClient>
  drainedOf: WeakMap<GatedClient, Drained>
}

export function createConnackGate({
  limits,
  onOverflow,
  onDrainedForgotten = () => {},
  room = () => undefined,
  drainAgain,
}: ConnackGateOptions) {
  const g: GateState = {
    ...{ limits, onOverflow, onDrainedForgotten, room, drainAgain },
    holds: new WeakMap(),
    leftToQueue: new WeakSet(),
    lastRead: new WeakSet(),
    relapsed: new WeakSet(),
    drainedOf: new WeakMap(),
  }
  const { holds, leftToQueue, lastRead, relapsed, drainedOf } = g

  return {
    hold: (client: GatedClient, slot: Detour = onClient(client)) => hold(g, client, slot),
    /**
     * What a drain of `client`'s queue tells the gate (persistence/queue-read.ts): each message
     * it hands out, so a live copy is not delivered too; and, for a persistent session, when its
     * last read starts (live messages are held from then on) and whether it caught up (false
     * when it went back to the queue meanwhile: the drain reads again). A clean session has
     * nothing left to its queue, so its queue is read once.
     */
    drainOf(client: GatedClient): CatchUp {
      return {
        onHandedOut: (p) => {
          if (drainedOf.get(client)?.add(p) === false) onDrainedForgotten()
        },
        ...(client.clean === false && {
          holdLive: () => (leftToQueue.delete(client), lastRead.add(client)),
          caughtUp: () => (lastRead.delete(client), !relapsed.delete(client)),
        }),
      }
    },
    release(client: GatedClient): void {
      holds.get(client)?.(true)
    },
    /** Is this client's connect (and its queue's drain) still under way? */
    holding(client: GatedClient): boolean {
      return holds.has(client)
    },
  }
}
export type ConnackGate = ReturnType<typeof createConnackGate>

function hold(g: GateState, client: GatedClient, slot: Detour): void {
  const {
    holds,
    leftToQueue,
    lastRead,
    relapsed,
    drainedOf,
    limits,
    onOverflow,
    room,
    drainAgain,
  } = g
  const drainedBefore = (packet: unknown): boolean =>
    drainedOf.get(client)?.take(packet as Origin) ?? false
  const { deliver0, deliverQoS } = slot.get()
  const held = new Held()
  let holding = true
  let overflowed = false
  const gate =
    (deliver: Deliver): Deliver =>
    (packet, cb) => {
      // Subscriptions restored before CONNACK keep this wrapper, which only forwards once
      // released; subscriptions made later get the original functions back.
      if (drainedBefore(packet)) return cb()
      if (!holding) return deliver(packet, cb)
      const queued = queuedToo(client, packet as LivePacket)
      if (leftToQueue.has(client) && queued) return cb()
      if (overflowed || !held.fits(packet, limits)) {
        // The drain's last read is slow and live messages keep coming: what has a queued copy
        // is left to the queue again and the drain reads once more, rather than cut a session
        // that reads as fast as it is sent to.
        if (!overflowed && queued && lastRead.has(client)) {
          relapse()
          return cb()
        }
        // Released slower than live messages come (the reader is slow): back to the queue,
        // and a new drain reads it (queue-catch-up.ts), rather than cut the session.
        if (!overflowed && queued && !holds.has(client) && drainAgain && readAgain()) return cb()
        if (!overflowed) onOverflow(client, held.size())
        overflowed = true
        return cb()
      }
      held.push({ deliver, packet, cb })
    }
  const relapse = () => {
    lastRead.delete(client)
    leftToQueue.add(client)
    relapsed.add(client)
    held.drop((packet) => queuedToo(client, packet as LivePacket))
  }
  const readAgain = () => {
    releasing++ // the release under way stops
    leftToQueue.add(client)
    held.drop((packet) => queuedToo(client, packet as LivePacket))
    holds.set(client, release)
    return drainAgain!(client)
  }
  slot.set({ deliver0: gate(deliver0), deliverQoS: gate(deliverQoS) })
  leftToQueue.add(client)
  // A session held again mid-connection keeps what its last drain handed out: a late live copy
  // of one is still recognised.
  const drained = drainedOf.get(client) ?? new Drained()
  drainedOf.set(client, drained)
  drained.holds++
  let onClosed!: () => void
  const closed = new Promise<void>((resolve) => (onClosed = resolve))
  const onClose = () => (onClosed(), holds.get(client)?.(false))
  client.conn.once('close', onClose)
  const open = () => {
    if (!holding) return
    holding = false
    leftToQueue.delete(client)
    slot.set({ deliver0, deliverQoS })
    // Dropped ones only run their callbacks: the socket is gone, and a persistent session
    // still has its QoS > 0 copies in the queue.
    held.drop(() => true)
    // Held again and again on one connection (a slow bridge link), it must not gather listeners.
    client.conn.off('close', onClose)
    drained.holds--
    setTimeout(() => {
      if (drained.holds === 0 && drainedOf.get(client) === drained) drainedOf.delete(client)
    }, DRAINED_GRACE_MS).unref()
  }
  // What was held goes out a slice per turn of the event loop, still in order: live messages
  // held behind a long backlog are thousands, and written at once they held every other
  // client for ~100 ms (npm run bench -- isolation). New ones queue behind them meanwhile.
  // And only while the connection has room (outbound.ts `room`): a slice written into a
  // reader slower than the release passed its bound, and the session was cut for it.
  let releasing = 0 // which release is under way: a new drain (readAgain) stops the last one
  const releaseSome = (which: number) => {
    if (which !== releasing) return
    if (client.conn.destroyed) return open()
    for (let n = 0; n < RELEASE_SLICE && held.size().messages > 0; n++) {
      const wait = room(client)
      if (wait)
        return void Promise.race([wait, closed]).then(() => setImmediate(releaseSome, which))
      const [h] = held.take(1)
      if (drainedBefore(h!.packet)) h!.cb()
      else h!.deliver(h!.packet, h!.cb)
    }
    if (held.size().messages > 0) setImmediate(releaseSome, which)
    else open()
  }
  const release = (deliver: boolean) => {
    holds.delete(client)
    if (deliver) releaseSome(++releasing)
    else open()
  }
  holds.set(client, release)
}
