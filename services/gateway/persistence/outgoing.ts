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
}

interface InflightEntry {
  key: string
  brokerId?: string
  brokerCounter?: number
}

const outKey = (clientId: string, p: { brokerId?: string; brokerCounter?: number }): string =>
  `${keyToken(clientId)}.${keyToken(p.brokerId ?? '')}.${p.brokerCounter ?? 0}`

/**
 * Queue one message for some sessions: within each one's bound, the write tried again
 * (queue-write.ts). The entry is the same bytes for every session, so it is encoded once.
 */
function enqueuer(parts: {
  kv: KvBucket
  depth: { admit(clientId: string): Promise<boolean> }
  eraser: { erase(key: string): Promise<void> }
  onQueueFull: (clientId: string) => void
  onQueueWriteRetry: () => void
}) {
  const { kv, depth, eraser, onQueueFull, onQueueWriteRetry } = parts
  return async (clientIds: readonly string[], p: WirePacket): Promise<void> => {
    const packet: WirePacket = { ...p, cmd: 'publish' }
    delete packet.messageId
    const entry = encodePacket(packet, { at: Date.now() })
    const one = async (clientId: string): Promise<void> => {
      if (!(await depth.admit(clientId))) return onQueueFull(clientId)
      const key = outKey(clientId, packet)
      // A write given up on may still land (the NATS client sends what it buffered once it is
      // back); the publisher resends the message anyway, so the entry is erased when the bus
      // answers.
      await writeQueueEntry(kv, key, entry, { onRetry: onQueueWriteRetry }).catch((err: unknown) =>
        eraser.erase(key).then(() => Promise.reject(err))
      )
    }
    await Promise.all(clientIds.map(one))
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
}: OutgoingQueueOptions) {
  // clientId → messageId → the queued message it stands for; PUBACKs and PUBCOMPs arrive where
  // the client is connected, which is the gateway that assigned the messageId in `outgoingUpdate`.
  const inflight = new Map<string, Map<number, InflightEntry>>()
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
  }
  const depth = createQueueDepth({
    count: (clientId) => countQueue(reader, clientId),
    maxFor: maxQueued,
    log,
    onForgotten: onDepthForgotten,
  })

  const enqueue = enqueuer({ kv, depth, eraser, onQueueFull, onQueueWriteRetry })

  return {
    backlog: (clientId: string) => queueBacklog(reader, clientId),
    /** Deliveries handed to the connected session here and not yet acknowledged. */
    inFlight: (clientId: string) => inflight.get(clientId)?.size ?? 0,
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
    async outgoingUpdate(client: Client, packet: WirePacket | PubrelPacket): Promise<void> {
      if (packet.messageId === undefined) return
      let ids = inflight.get(client.id)
      if (!ids) inflight.set(client.id, (ids = new Map()))
      const known = ids.get(packet.messageId)
      if (packet.cmd === 'pubrel' && known) {
        await kv.put(known.key, pubrelMarker(packet.messageId, known))
        return
      }
      // A PUBLISH (or a PUBREL replayed from the queue, which carries its entry's brokerId and
      // counter): no write. A queued PUBLISH keeps no messageId, and a redelivery after a
      // reconnect gets a fresh one. Only remember where to clear it when the PUBACK/PUBCOMP comes.
      const entry: InflightEntry = originOf(packet) as InflightEntry
      entry.key = outKey(client.id, packet)
      ids.set(packet.messageId, entry)
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
        await eraser.erase(outKey(client.id, packet))
        depth.release(client.id)
        return packet
      }
      const ids = inflight.get(client.id)
      const entry = ids?.get(packet.messageId)
      if (entry === undefined) return undefined // never queued (clean session or a retained copy)
      await eraser.erase(entry.key) // never throws: a failed erase is retried (erase-later.ts)
      // Forgotten only once erased: a sweep (`stranded`) meanwhile must not hand it out again.
      ids!.delete(packet.messageId)
      if (ids!.size === 0) inflight.delete(client.id)
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
    /** Stop retrying failed erases (the gateway is closing). */
    stop: eraser.stop,
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

/**
 * PUBREC came for a queued QoS 2 message: it was delivered, and only its PUBREL is owed now. The
 * entry becomes that PUBREL, first in the queue, under the same packet id, so a reconnect does
 * not deliver the message twice [MQTT-4.3.3-1] [MQTT-4.4.0-1].
 */
function pubrelMarker(messageId: number, known: InflightEntry): Uint8Array {
  const marker: WirePacket = {
    cmd: 'publish',
    topic: '',
    payload: Buffer.alloc(0),
    qos: 2,
    retain: false,
    messageId,
    ...originOf(known),
  }
  return encodePacket(marker, { at: 0, pubrel: true })
}
