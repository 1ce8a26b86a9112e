import type { Aedes, Client } from 'aedes'
import type { Logger } from '../common/log.ts'
import type { AedesInternals } from './aedes-internals.ts'
import type { WirePacket } from './codec.ts'

/**
 * Deliver what a connected persistent session's queue holds but its connection never got.
 *
 * A QoS > 0 message for a persistent session is queued (in KV, replicated) and its live copy
 * travels over core NATS to the gateway holding the session. When a NATS node dies, live copies
 * routed through it are gone (core NATS is at most once), and a connected session's queue is
 * read only when it reconnects: the message was acknowledged to its publisher, kept, and not
 * delivered until the subscriber happened to reconnect (chaos: nats-node-kill, 1–3 per kill).
 * A sweep lists the queue of each connected session, a batch per tick, and hands out entries
 * old enough that their live copy is not merely late (persistence/outgoing.ts `stranded`).
 */
export interface QueueSweepOptions {
  aedes: Aedes
  stranded(clientId: string, olderThanMs: number, limit: number): Promise<WirePacket[]>
  /** Is this client still catching up on its queue (connack-gate.ts)? Its drain reads it. */
  catchingUp(client: Client): boolean
  /** Milliseconds between ticks; 0 = no sweep. */
  everyMs: number
  /** A queued entry younger than this may still have its live copy on the way. */
  olderThanMs: number
  /** Sessions listed per tick (round robin); bounds the KV requests a tick makes. */
  sessionsPerTick: number
  onRedelivered(count: number): void
  log: Logger
}

/** Entries handed out per session per tick; the rest wait for the next tick. */
const PER_SESSION = 256

export function startQueueSweep(options: QueueSweepOptions): { stop(): void } {
  const { everyMs, log } = options
  if (everyMs <= 0) return { stop() {} }
  let cursor = 0
  let running = false
  const timer = setInterval(() => {
    if (running) return // a slow tick is not stacked on
    running = true
    sweepSome(options, cursor)
      .then((next) => (cursor = next))
      .catch((err: unknown) => log.warn({ err }, 'queue sweep failed; trying again next tick'))
      .finally(() => (running = false))
  }, everyMs)
  timer.unref()
  return { stop: () => clearInterval(timer) }
}

async function sweepSome(options: QueueSweepOptions, cursor: number): Promise<number> {
  const { aedes, catchingUp, sessionsPerTick } = options
  const sessions = Object.values((aedes as unknown as AedesInternals).clients).filter(
    (c) => c.clean === false && c.id && c.connected && !catchingUp(c)
  )
  if (sessions.length === 0) return 0
  const start = cursor % sessions.length
  const picked = [...sessions, ...sessions].slice(
    start,
    start + Math.min(sessionsPerTick, sessions.length)
  )
  for (const client of picked) await sweepOne(options, client)
  return start + picked.length
}

async function sweepOne(options: QueueSweepOptions, client: Client): Promise<void> {
  const packets = await options.stranded(client.id, options.olderThanMs, PER_SESSION)
  if (packets.length === 0 || !client.connected) return
  options.log.info(
    { clientId: client.id, count: packets.length },
    'queued messages whose live copy never came: delivering them from the queue'
  )
  for (const p of packets) deliverPastDedupe(client as unknown as DedupingClient, p)
  options.onRedelivered(packets.length)
}

export type DedupingClient = Pick<Client, 'id'> & {
  duplicates: Record<string, number | undefined>
  deliverQoS(packet: WirePacket, cb: () => void): void
}

/**
 * Through aedes' own QoS delivery (grants re-checked by `authorizeForward`, the packet id
 * recorded by the persistence so the PUBACK erases the entry), past its per-client dedupe, which
 * would refuse a counter below the highest seen live from that gateway and erase the entry. The
 * record is put back as it was: the next live copy is judged as before. `deliver` is the client's
 * QoS delivery unless told (a session catching up from its queue skips its gate).
 */
export function deliverPastDedupe(
  client: DedupingClient,
  packet: WirePacket,
  deliver: (packet: WirePacket, cb: () => void) => void = (p, cb) => client.deliverQoS(p, cb)
): void {
  const origin = packet.brokerId
  if (origin === undefined) return deliver(packet, () => {})
  const seen = client.duplicates[origin]
  delete client.duplicates[origin]
  try {
    deliver(packet, () => {})
  } finally {
    // Exactly as it was, not raised: a live copy numbered between the two, still on its way,
    // would be refused as seen and its queued copy erased with it.
    if (seen === undefined) delete client.duplicates[origin]
    else client.duplicates[origin] = seen
  }
}
