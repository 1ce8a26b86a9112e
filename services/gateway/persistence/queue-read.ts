/**
 * Reading a session's queue in `gw_outgoing`: listing it within deadlines, a resumed session's
 * drain until it is caught up, and a connected session's stranded entries (outgoing.ts).
 */
import type { KvBucket } from '../../common/bus/bus.ts'
import type { Logger } from '../../common/log.ts'
import { decodePacket, keyToken, type WirePacket } from '../codec.ts'
import type { DrainPacer } from './drain-pacer.ts'

const QUEUE_LIST_ATTEMPTS = 4
// A queue longer than this is read in two passes, so its payloads are never all in memory.
const QUEUE_PAGE = 64
/**
 * A read of a session's queue that finds at most this many new entries is the drain's last but
 * one: from then on live messages are held in memory (within the connection's outbound bound;
 * past it they go back to the queue: a relapse) instead of queued and read back.
 */
export const LAST_READ_MAX = 4_096

/** What aedes sends once a QoS 2 PUBLISH was PUBRECed. */
export interface PubrelPacket {
  cmd: 'pubrel'
  messageId?: number
  brokerId?: string
  brokerCounter?: number
}

/**
 * A message's origin (broker id and counter), without absent fields. Assigned, not spread: it
 * runs per message and persistent subscriber, and conditional spreads cost ~3 % of a gateway's
 * CPU with three of them (--cpu-prof).
 */
export function originOf(p: { brokerId?: string; brokerCounter?: number }): {
  brokerId?: string
  brokerCounter?: number
} {
  const origin: { brokerId?: string; brokerCounter?: number } = {}
  if (p.brokerId !== undefined) origin.brokerId = p.brokerId
  if (p.brokerCounter !== undefined) origin.brokerCounter = p.brokerCounter
  return origin
}

export const pubrelOf = (p: WirePacket): PubrelPacket => ({
  cmd: 'pubrel',
  ...(p.messageId === undefined ? {} : { messageId: p.messageId }),
  ...originOf(p),
})

/** How a drain tells its connection where it is (connack-gate.ts). */
export interface CatchUp {
  holdLive?: () => void
  onHandedOut?: (p: { brokerId?: string; brokerCounter?: number }) => void
  /**
   * Asked after the last read: false when the connection went back to leaving live messages to
   * the queue meanwhile (too many arrived to hold), and the queue must be read again.
   */
  caughtUp?: () => boolean
  /**
   * Keys handed out on this connection already, asked at the first read: a session catching up
   * mid-connection skips what is in flight to it.
   */
  handedOut?: () => Set<string>
}

/** What reading a session's queue on reconnect needs. */
export interface QueueReader {
  kv: KvBucket
  log: Logger
  /** First deadline for listing a session's queue; doubled on each of 3 retries. */
  queueListMs: number
  pacer: DrainPacer
  /** Acknowledged, its erase still waiting for the bus: not handed out again. */
  acknowledged: (key: string) => boolean
  /** Drains under way (`clientQueue`): sessions catching up from their queue right now. */
  drains: { active: number }
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
export async function countQueue(
  { kv, queueListMs }: QueueReader,
  clientId: string
): Promise<number> {
  const keys = await listWithin(kv, clientId, queueListMs)
  if (!keys) throw new Error(`counting the queue of '${clientId}' took over ${queueListMs} ms`)
  return keys.length
}

/** What waits for a session and since when (the link health view, contracts/session-backlog.ts). */
export async function queueBacklog(
  reader: QueueReader,
  clientId: string
): Promise<{ queued: number; oldestAt: number | null }> {
  const [queued, head] = await Promise.all([
    countQueue(reader, clientId),
    reader.kv.oldest(`${keyToken(clientId)}.>`),
  ])
  return { queued, oldestAt: head?.createdAt ?? null }
}

/** `kv.keys` with a deadline and retries: a fresh listing ends where a stuck one did not. */
export async function listQueue(
  { kv, log, queueListMs, acknowledged }: QueueReader,
  clientId: string
): Promise<string[]> {
  for (let attempt = 1, waitMs = queueListMs; ; attempt++, waitMs *= 2) {
    const keys = await listWithin(kv, clientId, waitMs)
    if (keys) return keys.filter((k) => !acknowledged(k))
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
 * A read that finds at most LAST_READ_MAX new entries is the last but one: `holdLive` is called
 * and one more read hands out what came before it (without `holdLive`, that read is the last).
 * Every entry handed out takes a permit from the pacer (drain-pacer.ts).
 *
 * Why not a page (64), as it was: a drain ended only once a read found as little as a page, and
 * a drain whose share of a busy gateway's turns was about the live rate never did (npm run bench
 * -- isolation: 8 sessions resuming 1,000 messages under 2,000 msg/s each read their queue for
 * the whole stream), so every live message took the queue's costlier path: written, listed, read
 * back and decoded instead of handed over. Ending once a read found no more than the one before
 * still read each backlog three times over. Held from the first short read, a live message costs
 * the queue write alone, and the connection's outbound bound caps what waits in memory.
 *
 * `onHandedOut` learns each message handed out, so a live copy held meanwhile is not delivered a
 * second time. Not aedes' dedupe record (`client.duplicates`, the highest counter seen per
 * gateway): queue writes finish out of order, and a message below that mark that reached the
 * queue after this read was then refused live and its queued copy erased.
 */
export async function* clientQueue(
  reader: QueueReader,
  clientId: string,
  catchUp: CatchUp
): AsyncGenerator<WirePacket | PubrelPacket> {
  reader.drains.active++
  try {
    yield* drainQueue(reader, clientId, catchUp)
  } finally {
    reader.drains.active--
  }
}

async function* drainQueue(
  reader: QueueReader,
  clientId: string,
  { holdLive, onHandedOut, caughtUp = () => true, handedOut: inFlight }: CatchUp
): AsyncGenerator<WirePacket | PubrelPacket> {
  // Entries handed out in this connection and still queued (not yet acknowledged): a later read
  // skips them. Pruned at each read to what is still queued, so it never outgrows the queue.
  let handedOut: Set<string> | undefined
  for (let last = false; ;) {
    const keys = await listQueue(reader, clientId)
    handedOut ??= inFlight?.() ?? new Set<string>()
    const still = new Set<string>()
    const fresh: string[] = []
    for (const k of keys) {
      if (handedOut.has(k)) still.add(k)
      else fresh.push(k)
    }
    handedOut = still
    if (!last && fresh.length <= LAST_READ_MAX) {
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
export async function strandedIn(
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
