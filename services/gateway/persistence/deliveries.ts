/**
 * Deliveries of queued messages handed to sessions connected here, by messageId, until their
 * PUBACK (or PUBCOMP) erases the queue entry, or drops its held write (held-writes.ts).
 */
import type { KvBucket } from '../../common/bus/bus.ts'
import { encodePacket, type WirePacket } from '../codec.ts'
import type { AckPace } from './ack-pace.ts'
import type { EraseLater } from './erase-later.ts'
import type { HeldWrites } from './held-writes.ts'
import type { Client } from './kv.ts'
import { originOf, type PubrelPacket } from './queue-read.ts'

interface InflightEntry {
  key: string
  brokerId?: string
  brokerCounter?: number
  sentAt: number
}

type Origin = { brokerId?: string; brokerCounter?: number }

export function createDeliveries({
  kv,
  eraser,
  held,
  pace,
  depth,
  outKey,
}: {
  kv: KvBucket
  eraser: Pick<EraseLater, 'erase'>
  held: HeldWrites
  pace: AckPace
  depth: { release(clientId: string): void }
  outKey: (clientId: string, p: Origin) => string
}) {
  // clientId → messageId → the queued message it stands for; PUBACKs and PUBCOMPs arrive where
  // the client is connected, which is the gateway that assigned the messageId in `outgoingUpdate`.
  const inflight = new Map<string, Map<number, InflightEntry>>()
  return {
    inFlight: (clientId: string) => inflight.get(clientId)?.size ?? 0,
    /** The queue keys handed out to a client's connection here and not yet acknowledged. */
    handedOut: (clientId: string) =>
      new Set([...(inflight.get(clientId)?.values() ?? [])].map((e) => e.key)),
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
      entry.sentAt = performance.now()
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
        const key = outKey(client.id, packet)
        if (!held.drop(key)) await eraser.erase(key)
        depth.release(client.id)
        return packet
      }
      const ids = inflight.get(client.id)
      const entry = ids?.get(packet.messageId)
      if (entry === undefined) return undefined // never queued (clean session or a retained copy)
      pace.acked(client.id, performance.now() - entry.sentAt)
      // Never throws: a failed erase is retried (erase-later.ts).
      if (!held.drop(entry.key)) await eraser.erase(entry.key)
      // Forgotten only once erased: a sweep (`stranded`) meanwhile must not hand it out again.
      ids!.delete(packet.messageId)
      if (ids!.size === 0) inflight.delete(client.id)
      depth.release(client.id)
      return packet
    },
  }
}

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
