/**
 * The outgoing queue in `gw_outgoing`: QoS > 0 messages to persistent sessions, one key per
 * queued message and subscriber, written by the publishing gateway, erased (no delete marker per
 * message) by whichever gateway gets the PUBACK or refuses the message to that session.
 */
import { Readable } from 'node:stream'
import type { KvBucket } from '../../common/bus/bus.ts'
import type { Logger } from '../../common/log.ts'
import { decodePacket, encodePacket, keyToken, type WirePacket } from '../codec.ts'
import type { Client } from './kv.ts'
import { createDrainPacer, type DrainPacer } from './drain-pacer.ts'
import { createQueueDepth } from './queue-depth.ts'

// A listing takes milliseconds, but a NATS KV keys() over keys that are being written and deleted
// at the same time can fail to end (seen on reconnect, while live messages for the same client
// are queued and cleared); the session then never got its queue.
export const DEFAULT_QUEUE_LIST_MS = 2_000 // 2 s
const QUEUE_LIST_ATTEMPTS = 4

export interface OutgoingQueueOptions {
  kv: KvBucket
  log: Logger
  /** First deadline for listing a session's queue in KV; doubled on each of 3 retries. */
  queueListMs?: number
  /** Messages a session's queue may hold; a message past it is not queued (Mosquitto's policy). */
  maxQueued?: (clientId: string) => number
  /** A message was not queued for a session because its queue was full. */
  onQueueFull?: (clientId: string) => void
  /** The depth of a session was forgotten to bound how many are followed (queue-depth.ts). */
  onDepthForgotten?: () => void
}

// A queue longer than this is read in two passes, so its payloads are never all in memory.
const QUEUE_PAGE = 64

/** What aedes sends once a QoS 2 PUBLISH was PUBRECed. */
interface PubrelPacket {
  cmd: 'pubrel'
  messageId?: number
  brokerId?: string
  brokerCounter?: number
}

interface InflightEntry {
  key: string
  brokerId?: string
  brokerCounter?: number
}

/** A message's origin (broker id and counter), without absent fields. */
const originOf = (p: { brokerId?: string; brokerCounter?: number }) => ({
  ...(p.brokerId === undefined ? {} : { brokerId: p.brokerId }),
  ...(p.brokerCounter === undefined ? {} : { brokerCounter: p.brokerCounter }),
})

const pubrelOf = (p: WirePacket): PubrelPacket => ({
  cmd: 'pubrel',
  ...(p.messageId === undefined ? {} : { messageId: p.messageId }),
  ...originOf(p),
})

const outKey = (clientId: string, p: { brokerId?: string; brokerCounter?: number }): string =>
  `${keyToken(clientId)}.${keyToken(p.brokerId ?? '')}.${p.brokerCounter ?? 0}`

export function createOutgoingQueue({
  kv,
  log,
  queueListMs = DEFAULT_QUEUE_LIST_MS,
  maxQueued = () => Infinity,
  onQueueFull = () => {},
  onDepthForgotten = () => {},
}: OutgoingQueueOptions) {
  // clientId → messageId → the queued message it stands for; PUBACKs and PUBCOMPs arrive where
  // the client is connected, which is the gateway that assigned the messageId in `outgoingUpdate`.
  const inflight = new Map<string, Map<number, InflightEntry>>()
  const reader: QueueReader = { kv, log, queueListMs, pacer: createDrainPacer() }
  const depth = createQueueDepth({
    count: (clientId) => countQueue(reader, clientId),
    maxFor: maxQueued,
    log,
    onForgotten: onDepthForgotten,
  })

  async function enqueue(clientId: string, p: WirePacket): Promise<void> {
    if (!(await depth.admit(clientId))) return onQueueFull(clientId)
    const packet: WirePacket = { ...p, cmd: 'publish' }
    delete packet.messageId
    await kv.put(outKey(clientId, packet), encodePacket(packet, { at: Date.now() }))
  }

  return {
    async outgoingEnqueue(sub: { clientId: string }, packet: WirePacket): Promise<void> {
      await enqueue(sub.clientId, packet)
    },
    async outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: WirePacket) {
      await Promise.all(subs.map((s) => enqueue(s.clientId, packet)))
    },
    async outgoingUpdate(client: Client, packet: WirePacket | PubrelPacket): Promise<void> {
      if (packet.messageId === undefined) return
      let ids = inflight.get(client.id)
      if (!ids) inflight.set(client.id, (ids = new Map()))
      const known = ids.get(packet.messageId)
      if (packet.cmd === 'pubrel' && known) {
        // PUBREC came for a queued QoS 2 message: it was delivered, and only its PUBREL is owed
        // now. The entry becomes that PUBREL, first in the queue, under the same packet id, so
        // a reconnect does not deliver the message twice [MQTT-4.3.3-1] [MQTT-4.4.0-1].
        const marker: WirePacket = {
          cmd: 'publish',
          topic: '',
          payload: Buffer.alloc(0),
          qos: 2,
          retain: false,
          messageId: packet.messageId,
          ...originOf(known),
        }
        await kv.put(known.key, encodePacket(marker, { at: 0, pubrel: true }))
        return
      }
      // A PUBLISH (or a PUBREL replayed from the queue, which carries its entry's brokerId and
      // counter): no write. A queued PUBLISH keeps no messageId, and a redelivery after a
      // reconnect gets a fresh one. Only remember where to clear it when the PUBACK/PUBCOMP comes.
      ids.set(packet.messageId, { key: outKey(client.id, packet), ...originOf(packet) })
    },
    async outgoingClearMessageId(
      client: Client,
      packet: { messageId?: number; brokerId?: string; brokerCounter?: number }
    ) {
      if (packet.messageId === undefined) {
        // aedes calls this with the live packet, which has no messageId yet, when
        // `authorizeForward` refuses it for a persistent session (no-local, split horizon): the
        // copy `outgoingEnqueueCombi` queued for that session is then named by its origin and
        // counter. Left there, it would sit in KV until the session's next reconnect.
        if (packet.brokerId === undefined || packet.brokerCounter === undefined) return undefined
        await kv.erase(outKey(client.id, packet))
        depth.release(client.id)
        return packet
      }
      const ids = inflight.get(client.id)
      const entry = ids?.get(packet.messageId)
      if (entry === undefined) return undefined // never queued (clean session or a retained copy)
      try {
        await kv.erase(entry.key)
      } finally {
        // Forgotten only once erased: a sweep (`stranded`) meanwhile must not hand it out again.
        ids!.delete(packet.messageId)
        if (ids!.size === 0) inflight.delete(client.id)
      }
      depth.release(client.id)
      return packet
    },
    /**
     * A connected session's queued messages older than `olderThanMs` and not handed out on this
     * connection: their live copy never came (lost in core NATS when a node died), and the queue
     * is otherwise read only on reconnect. Oldest first; at most `limit`.
     */
    async stranded(clientId: string, olderThanMs: number, limit: number): Promise<WirePacket[]> {
      const handedOut = () =>
        new Set([...(inflight.get(clientId)?.values() ?? [])].map((e) => e.key))
      return strandedIn(reader, clientId, { olderThanMs, limit, handedOut })
    },
    /** Erase a session's whole queue (the session expired). */
    async purge(clientId: string): Promise<number> {
      depth.forget(clientId)
      const keys = await listQueue(reader, clientId)
      for (const k of keys) await kv.erase(k)
      return keys.length
    },
    /**
     * A session's queue, read until it is caught up. `catchUp.holdLive` is called before the
     * last read: from then on the connection holds live messages rather than leave them to the
     * queue (connack-gate.ts); without it (a clean session) the queue is read once.
     * `catchUp.onHandedOut` learns every message handed out.
     */
    outgoingStream(client: Client, catchUp: CatchUp = {}): Readable {
      return Readable.from(clientQueue(reader, client.id, catchUp))
    },
  }
}

export type OutgoingQueue = ReturnType<typeof createOutgoingQueue>

/** How a drain tells its connection where it is (connack-gate.ts). */
export interface CatchUp {
  holdLive?: () => void
  onHandedOut?: (p: { brokerId?: string; brokerCounter?: number }) => void
  /**
   * Asked after the last read: false when the connection went back to leaving live messages to
   * the queue meanwhile (too many arrived to hold), and the queue must be read again.
   */
  caughtUp?: () => boolean
}

/** What reading a session's queue on reconnect needs. */
type QueueReader = Required<Pick<OutgoingQueueOptions, 'kv' | 'log' | 'queueListMs'>> & {
  pacer: DrainPacer
}

/** A session's queue keys, or undefined if KV did not answer within `waitMs`. */
async function listWithin(
  kv: KvBucket,
  clientId: string,
  waitMs: number
): Promise<string[] | undefined> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    // Queue entries are erased, never deleted (no markers): the stream's subjects are the list.
    kv.keys(`${keyToken(clientId)}.>`, { withDeleted: true }),
    new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), waitMs))),
  ]).finally(() => clearTimeout(timer))
}

/** How many entries a session's queue holds: one listing, within the first deadline. */
async function countQueue({ kv, queueListMs }: QueueReader, clientId: string): Promise<number> {
  const keys = await listWithin(kv, clientId, queueListMs)
  if (!keys) throw new Error(`counting the queue of '${clientId}' took over ${queueListMs} ms`)
  return keys.length
}

/** `kv.keys` with a deadline and retries: a fresh listing ends where a stuck one did not. */
async function listQueue(
  { kv, log, queueListMs }: QueueReader,
  clientId: string
): Promise<string[]> {
  for (let attempt = 1, waitMs = queueListMs; ; attempt++, waitMs *= 2) {
    const keys = await listWithin(kv, clientId, waitMs)
    if (keys) return keys
    if (attempt === QUEUE_LIST_ATTEMPTS) {
      throw new Error(`listing the queue of '${clientId}' did not finish in ${attempt} attempts`)
    }
    log.warn(
      { clientId, attempt, waitMs },
      'listing a session queue in KV did not finish; retrying'
    )
  }
}

/**
 * A session's queue, oldest first, read again until it is caught up: a session catching up on a
 * backlog gets what was queued meanwhile from the queue, not held in memory (connack-gate.ts).
 * A read that finds at most a page of new entries is the last but one: `holdLive` is called and
 * one more read hands out what came before it (without `holdLive`, that read is the last). Every entry handed out takes a permit from the
 * pacer (drain-pacer.ts).
 *
 * `onHandedOut` learns each message handed out, so a live copy held meanwhile is not delivered a
 * second time. Not aedes' dedupe record (`client.duplicates`, the highest counter seen per
 * gateway): queue writes finish out of order, and a message below that mark that reached the
 * queue after this read was then refused live and its queued copy erased.
 */
async function* clientQueue(
  reader: QueueReader,
  clientId: string,
  { holdLive, onHandedOut, caughtUp = () => true }: CatchUp
): AsyncGenerator<WirePacket | PubrelPacket> {
  // Entries handed out in this connection and still queued (not yet acknowledged): a later read
  // skips them. Pruned at each read to what is still queued, so it never outgrows the queue.
  let handedOut = new Set<string>()
  for (let last = false; ;) {
    const keys = await listQueue(reader, clientId)
    const still = new Set<string>()
    const fresh: string[] = []
    for (const k of keys) {
      if (handedOut.has(k)) still.add(k)
      else fresh.push(k)
    }
    handedOut = still
    if (!last && fresh.length <= QUEUE_PAGE) {
      last = true
      if (holdLive) {
        holdLive()
        continue
      }
    }
    for await (const { key, q } of inOrder(reader.kv, fresh)) {
      await reader.pacer.permit()
      handedOut.add(key)
      // A QoS 2 message the client already received (PUBREC): what is owed is its PUBREL,
      // with the packet id the client knows [MQTT-4.4.0-1].
      if (q.extra?.pubrel === true) yield pubrelOf(q.packet)
      else {
        onHandedOut?.(q.packet)
        yield q.packet
      }
    }
    if (last) {
      if (caughtUp()) return
      last = false
    }
  }
}

/**
 * A connected session's queued entries older than `olderThanMs` and not handed out on its
 * connection (`handedOut`, asked before and after the read: a live copy may go out meanwhile),
 * oldest first, at most `limit`. A PUBREL marker is owed on the connection already; a young
 * entry's live copy may still be on its way.
 */
async function strandedIn(
  reader: QueueReader,
  clientId: string,
  {
    olderThanMs,
    limit,
    handedOut,
  }: { olderThanMs: number; limit: number; handedOut: () => Set<string> }
): Promise<WirePacket[]> {
  const listed = handedOut()
  const keys = (await listQueue(reader, clientId)).filter((k) => !listed.has(k))
  const before = Date.now() - olderThanMs
  const found: Array<{ key: string; q: Queued }> = []
  for (let i = 0; i < keys.length && found.length < limit; i += QUEUE_PAGE) {
    for (const entry of await readPage(reader.kv, keys.slice(i, i + QUEUE_PAGE))) {
      const { extra } = entry.q
      if (extra?.pubrel !== true && (extra?.at as number) <= before) found.push(entry)
    }
  }
  const now = handedOut()
  return found
    .filter(({ key }) => !now.has(key))
    .sort((a, b) => arrival(orderOf(a.q), orderOf(b.q)))
    .slice(0, limit)
    .map(({ q }) => q.packet)
}

type Queued = ReturnType<typeof decodePacket>

/** Arrival order across publishers; per-publisher order by its counter [MQTT-4.6.0-6]. */
const arrival = (a: { at: number; counter: number }, b: { at: number; counter: number }): number =>
  a.at - b.at || a.counter - b.counter

const orderOf = (q: Queued) => ({
  at: q.extra?.at as number,
  counter: q.packet.brokerCounter ?? 0,
})

/**
 * A session's queued entries in arrival order. A short queue is read and sorted at once; a long
 * one (a bridge's backlog after an outage) in two passes, a page at a time: first only each
 * entry's order is kept, then the entries are read again in that order as the client takes them,
 * so memory holds keys and one page, never the whole backlog.
 */
async function* inOrder(kv: KvBucket, keys: string[]): AsyncGenerator<{ key: string; q: Queued }> {
  if (keys.length <= QUEUE_PAGE) {
    const read = await readPage(kv, keys)
    yield* read.sort((a, b) => arrival(orderOf(a.q), orderOf(b.q)))
    return
  }
  const order: Array<{ key: string; at: number; counter: number }> = []
  for (let i = 0; i < keys.length; i += QUEUE_PAGE) {
    for (const { key, q } of await readPage(kv, keys.slice(i, i + QUEUE_PAGE)))
      order.push({ key, ...orderOf(q) })
  }
  order.sort(arrival)
  for (let i = 0; i < order.length; i += QUEUE_PAGE) {
    const page = await readPage(
      kv,
      order.slice(i, i + QUEUE_PAGE).map((o) => o.key)
    )
    yield* page // erased meanwhile (acknowledged elsewhere, as the leader says): skipped
  }
}

async function readPage(kv: KvBucket, keys: string[]): Promise<Array<{ key: string; q: Queued }>> {
  // A page at a time, each after the event loop's other work: on the in-process bus a read
  // completes within the same tick, and a backlog read in one go held every other client's
  // delivery for its whole length (npm run bench -- isolation).
  await new Promise((resolve) => setImmediate(resolve))
  const entries = await Promise.all(keys.map((k) => kv.get(k)))
  // A miss is asked again of the stream's leader: the replica that answered may not have the
  // entry yet, and skipping it lost the message when the gate had left its live copy to this
  // drain (connack-gate.ts): it stayed queued, undelivered, until the session's next reconnect.
  // Only a miss the leader confirms was erased meanwhile (acknowledged elsewhere).
  await Promise.all(
    entries.map(async (e, i) => {
      if (e === null) entries[i] = await kv.get(keys[i]!, { latest: true })
    })
  )
  const out: Array<{ key: string; q: Queued }> = []
  entries.forEach((e, i) => {
    if (e !== null) out.push({ key: keys[i]!, q: decodePacket(e.value) })
  })
  return out
}
