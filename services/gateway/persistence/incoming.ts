/**
 * Inbound QoS 2 state (a PUBLISH held until its PUBREL), kept per gateway: a QoS 2 sender that
 * reconnects to another gateway may deliver its message twice (as QoS 1 would), a documented
 * limit.
 */
import type { WirePacket } from '../codec.ts'
import type { Client } from './kv.ts'

export function createIncomingStore() {
  const incoming = new Map<string, Map<number, WirePacket>>()

  return {
    async incomingStorePacket(client: Client, packet: WirePacket): Promise<void> {
      let m = incoming.get(client.id)
      if (!m) incoming.set(client.id, (m = new Map()))
      m.set(packet.messageId!, { ...packet })
    },
    async incomingGetPacket(client: Client, packet: WirePacket): Promise<WirePacket> {
      const p = incoming.get(client.id)?.get(packet.messageId!)
      if (!p) throw new Error('no such packet')
      return p
    },
    async incomingDelPacket(client: Client, packet: WirePacket): Promise<void> {
      const m = incoming.get(client.id)
      if (!m?.delete(packet.messageId!)) throw new Error('no such packet')
    },
    async cleanIncoming(client: Client): Promise<void> {
      incoming.delete(client.id)
    },
  }
}

export type IncomingStore = ReturnType<typeof createIncomingStore>
