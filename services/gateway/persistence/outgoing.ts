/**
 * The outgoing queue in `gw_outgoing`: QoS > 0 messages to persistent sessions, one key per
 * queued message and subscriber, written by the publishing gateway, erased (no delete marker per
 * message) by whichever gateway gets the PUBACK or refuses the message to that session.
 */
import { Readable } from 'node:stream'
import type { KvBucket } from '../../common/bus/bus.ts'
import type { Logger } from '../../common/log.ts'
import { encodePacket, keyToken, type WirePacket } from '../codec.ts'
import type { Client } from './kv.ts'
import { createDrainPacer } from './drain-pacer.ts'
import {
  clientQueue,
  countQueue,
  listQueue,
  queueBacklog,
  originOf,
  strandedIn,
  type CatchUp,
  type PubrelPacket,
  type QueueReader,
} from './queue-read.ts'
import { createQueueDepth } from './queue-depth.ts'
import { createEraseLater } from './erase-later.ts'
import { writeQueueEntry } from './queue-write.ts'
import { createHeldWrites, originKey, type HeldWrites } from './held-writes.ts'
import { createAckPace } from './ack-pace.ts'
import { createDeliveries } from './deliveries.ts'

// A listing takes milliseconds, but a NATS KV keys() over keys that are being written and deleted
// at the same time can fail to end (seen on reconnect, while live messages for the same client
// are queued and cleared); the session then never got its queue.
export const DEFAULT_QUEUE_LIST_MS = 2_000 // 2 s
export type { CatchUp }

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
  /** An acknowledged entry's erase failed and waits for a retry (erase-later.ts). */
  onEraseDeferred?: () => void
  /** ... and was not kept for one: the bound of waiting erases was reached. */
  onEraseDropped?: () => void
  /** A queue write failed and is tried again (queue-write.ts). */
  onQueueWriteRetry?: () => void
  /** ms a queue write for a subscriber online here and keeping up waits for its PUBACK; 0 = none. */
  holdWritesMs?: number
  /**
   * Held writes (held-writes.ts): held, dropped (acknowledged first), written anyway, not held
   * for the bound, and a session's acknowledgement pace forgotten for its bound (ack-pace.ts).
   */
  onHeld?: { held(): void; dropped(): void; written(): void; full(): void; paceForgotten(): void }
}

const outKey = (clientId: string, p: { brokerId?: string; brokerCounter?: number }): string =>
  `${keyToken(clientId)}.${keyToken(p.brokerId ?? '')}.${p.brokerCounter ?? 0}`

/**
 * What a queue entry keeps of a PUBLISH: no packet id (each delivery gets its own), and a shape
 * fixed here. A copy spread from aedes' packet with its `messageId` deleted was an object in
 * dictionary mode, slower to read for every session it was queued for.
 */
function queuedCopy(p: WirePacket): WirePacket {
  const packet: WirePacket = {
    cmd: 'publish',
    topic: p.topic,
    payload: p.payload,
    qos: p.qos,
    retain: p.retain,
  }
  if (p.dup) packet.dup = true
  if (p.brokerId !== undefined) packet.brokerId = p.brokerId
  if (p.brokerCounter !== undefined) packet.brokerCounter = p.brokerCounter
  if (p.clientId !== undefined) packet.clientId = p.clientId
  return packet
}

/**
 * Queue one message for some sessions: within each one's bound, the write tried again
 * (queue-write.ts). The entry is the same bytes for every session, so it is encoded once, and
 * only if a write goes out: a QoS 1 write for a subscriber that `mayHold` picks waits for its
 * PUBACK first (held-writes.ts).
 */
function enqueuer(parts: {
  kv: KvBucket
  depth: { admit(clientId: string): Promise<boolean> }
  eraser: { erase(key: string): Promise<void> }
  held: HeldWrites
  mayHold: (clientId: string) => boolean
  onQueueFull: (clientId: string) => void
  onQueueWriteRetry: () => void
}) {
  const { kv, depth, eraser, held, mayHold, onQueueFull, onQueueWriteRetry } = parts
  return async (clientIds: readonly string[], p: WirePacket): Promise<void> => {
    const packet = queuedCopy(p)
    const at = Date.now()
    let entry: Uint8Array | undefined
    const origin = originKey(packet)
    const write = (key: string) => () =>
      // A write given up on may still land (the NATS client sends what it buffered once it is
      // back); the publisher resends the message anyway, so the entry is erased when the bus
      // answers.
      writeQueueEntry(kv, key, (entry ??= encodePacket(packet, { at })), {
        onRetry: onQueueWriteRetry,
      }).catch((err: unknown) => eraser.erase(key).then(() => Promise.reject(err)))
    const one = async (clientId: string): Promise<void> => {
      if (!(await depth.admit(clientId))) return onQueueFull(clientId)
      const key = outKey(clientId, packet)
      if (packet.qos === 1 && mayHold(clientId) && held.hold(clientId, key, origin, write(key)))
        return
      await write(key)()
    }
    await Promise.all(clientIds.map(one))
  }
}

/**
 * Who may have queue writes held (held-writes.ts): a subscriber connected here and caught up (the
 * broker says, `setLiveHere`) that acknowledges within half the hold (ack-pace.ts). With no hold
 * (the in-process bus), nobody: publishers are not asked to wait (`expect` is absent) and no
 * acknowledgement is timed, so the hot path does no work for it.
 */
function holding(holdMs: number, on: OutgoingQueueOptions['onHeld']) {
  const held = createHeldWrites({
    holdMs,
    ...(on && { onHeld: on.held, onDropped: on.dropped, onWritten: on.written, onFull: on.full }),
  })
  const pace = createAckPace({
    fastMs: holdMs / 2,
    ...(on && { onForgotten: on.paceForgotten }),
  })
  let liveHere: (clientId: string) => boolean = () => false
  const holds = holdMs > 0
  return {
    held,
    pace,
    expect: holds ? held.expect : undefined,
    mayHold: holds ? (clientId: string) => liveHere(clientId) && pace.fast(clientId) : () => false,
    setLiveHere(pick: (clientId: string) => boolean): void {
      liveHere = pick
    },
  }
}

export function createOutgoingQueue({
  kv,
  log,
  queueListMs = DEFAULT_QUEUE_LIST_MS,
  maxQueued = () => Infinity,
  onQueueFull = () => {},
  onDepthForgotten = () => {},
  onEraseDeferred,
  onEraseDropped,
  onQueueWriteRetry = () => {},
  holdWritesMs = 0,
  onHeld,
}: OutgoingQueueOptions) {
  const eraser = createEraseLater({
    kv,
    log,
    ...(onEraseDeferred && { onDeferred: onEraseDeferred }),
    ...(onEraseDropped && { onDropped: onEraseDropped }),
  })
  const reader: QueueReader = {
    kv,
    log,
    queueListMs,
    pacer: createDrainPacer(),
    acknowledged: eraser.has,
    drains: { active: 0 },
  }
  const depth = createQueueDepth({
    count: (clientId) => countQueue(reader, clientId),
    maxFor: maxQueued,
    log,
    onForgotten: onDepthForgotten,
  })

  const { held, pace, expect, mayHold, setLiveHere } = holding(holdWritesMs, onHeld)
  const enqueue = enqueuer({ kv, depth, eraser, held, mayHold, onQueueFull, onQueueWriteRetry })
  const acks = createDeliveries({ kv, eraser, held, pace, depth, outKey })

  return {
    backlog: (clientId: string) => queueBacklog(reader, clientId),
    /** Sessions catching up from their queue right now (resumed, or at their pending bound). */
    get drainsActive(): number {
      return reader.drains.active
    },
    /** Which subscribers are connected to this gateway and caught up (the broker knows). */
    setLiveHere,
    /** A publisher waits for this message's PUBACK: its writes may be held (held-writes.ts). */
    expectWrites: expect,
    /** A client's connection closed: what is held for it is written now. */
    closed(clientId: string): void {
      held.flush(clientId)
      pace.forget(clientId)
    },
    /** Deliveries handed to the connected session here and not yet acknowledged. */
    inFlight: acks.inFlight,
    /** What a session catching up on the same connection needs (queue-catch-up.ts). */
    catchUp: {
      /** The queue, read one entry at a time (`outgoingStream` reads ahead). */
      queueOf: (clientId: string, catchUp: CatchUp) => clientQueue(reader, clientId, catchUp),
      /** The queue keys in flight on its connection: the drain skips them. */
      keysInFlight: acks.handedOut,
      /** Write now what is held for it: the drain reads what the connection skips. */
      writeHeld: (clientId: string) => held.flush(clientId),
    },
    async outgoingEnqueue(sub: { clientId: string }, packet: WirePacket): Promise<void> {
      await enqueue([sub.clientId], packet)
    },
    async outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: WirePacket) {
      if (subs.length > 0)
        await enqueue(
          subs.map((s) => s.clientId),
          packet
        )
    },
    outgoingUpdate: acks.outgoingUpdate,
    outgoingClearMessageId: acks.outgoingClearMessageId,
    /**
     * A connected session's queued messages older than `olderThanMs` and not handed out on this
     * connection: their live copy never came (lost in core NATS when a node died), and the queue
     * is otherwise read only on reconnect. Oldest first; at most `limit`.
     */
    async stranded(clientId: string, olderThanMs: number, limit: number): Promise<WirePacket[]> {
      const handedOut = () => acks.handedOut(clientId)
      return strandedIn(reader, clientId, { olderThanMs, limit, handedOut })
    },
    /** Write what is held and stop retrying failed erases (the gateway is closing). */
    async stop(): Promise<void> {
      await held.flushAll()
      eraser.stop()
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
