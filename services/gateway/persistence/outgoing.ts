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
}

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
}: OutgoingQueueOptions) {
  // clientId → messageId → the queued message it stands for; PUBACKs and PUBCOMPs arrive where
  // the client is connected, which is the gateway that assigned the messageId in `outgoingUpdate`.
  const inflight = new Map<string, Map<number, InflightEntry>>()
  const reader: QueueReader = { kv, log, queueListMs }

  function enqueue(clientId: string, p: WirePacket): Promise<number> {
    const packet: WirePacket = { ...p, cmd: 'publish' }
    delete packet.messageId
    return kv.put(outKey(clientId, packet), encodePacket(packet, { at: Date.now() }))
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
        return packet
      }
      const ids = inflight.get(client.id)
      const entry = ids?.get(packet.messageId)
      if (entry === undefined) return undefined // never queued (clean session or a retained copy)
      ids!.delete(packet.messageId!)
      if (ids!.size === 0) inflight.delete(client.id)
      await kv.erase(entry.key)
      return packet
    },
    outgoingStream(client: Client): Readable {
      return Readable.from(clientQueue(reader, client.id, client.duplicates))
    },
  }
}

export type OutgoingQueue = ReturnType<typeof createOutgoingQueue>

/** What reading a session's queue on reconnect needs. */
type QueueReader = Required<OutgoingQueueOptions>

/** `kv.keys` with a deadline and retries: a fresh listing ends where a stuck one did not. */
async function listQueue(
  { kv, log, queueListMs }: QueueReader,
  clientId: string
): Promise<string[]> {
  for (let attempt = 1, waitMs = queueListMs; ; attempt++, waitMs *= 2) {
    let timer: NodeJS.Timeout | undefined
    const keys = await Promise.race([
      kv.keys(`${keyToken(clientId)}.>`),
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), waitMs))),
    ]).finally(() => clearTimeout(timer))
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
 * A session's queue, oldest first. `delivered` (the connection's dedupe record) learns each
 * message handed out, so the live copy of a message published just before the reconnect,
 * held until the queue is drained (see connack-gate.ts), is not delivered a second time.
 */
async function* clientQueue(
  reader: QueueReader,
  clientId: string,
  delivered?: Record<string, number>
): AsyncGenerator<WirePacket | PubrelPacket> {
  const keys = await listQueue(reader, clientId)
  const entries = await Promise.all(keys.map((k) => reader.kv.get(k)))
  const queued = entries
    .filter((e) => e !== null)
    .map((e) => decodePacket(e.value))
    // Arrival order across publishers; per-publisher order by its counter [MQTT-4.6.0-6].
    .sort(
      (a, b) =>
        (a.extra?.at as number) - (b.extra?.at as number) ||
        (a.packet.brokerCounter ?? 0) - (b.packet.brokerCounter ?? 0)
    )
  for (const q of queued) {
    // A QoS 2 message the client already received (PUBREC): what is owed is its PUBREL,
    // with the packet id the client knows [MQTT-4.4.0-1].
    if (q.extra?.pubrel === true) yield pubrelOf(q.packet)
    else {
      const { brokerId, brokerCounter } = q.packet
      if (delivered && brokerId !== undefined && brokerCounter !== undefined)
        delivered[brokerId] = Math.max(delivered[brokerId] ?? 0, brokerCounter)
      yield q.packet
    }
  }
}
