/**
 * Wills in `gw_wills`: one key per client, tagged with its gateway's broker id. A dead gateway's
 * wills are claimed by compare-and-set so exactly one survivor publishes each.
 */
import { Readable } from 'node:stream'
import type { KvBucket } from '../../common/bus/bus.ts'
import { KvConflictError } from '../../common/errors.ts'
import type { Logger } from '../../common/log.ts'
import { decodePacket, encodePacket, keyToken, type WirePacket } from '../codec.ts'
import type { Broker, Client } from './kv.ts'

export interface WillStoreOptions {
  kv: KvBucket
  log: Logger
  /** The aedes broker, once `setup` has handed it over. */
  broker: () => Broker | undefined
}

export function createWillStore({ kv, log, broker }: WillStoreOptions) {
  /** Wills of gateways that stopped beating, each claimed by compare-and-set: one survivor wins it. */
  async function* deadWills(
    me: string,
    brokers: Record<string, unknown>
  ): AsyncGenerator<{ key: string; will: WirePacket; revision: number }> {
    for (const key of await kv.keys()) {
      const e = await kv.get(key)
      if (!e) continue
      const { packet, extra } = decodePacket(e.value)
      if (packet.brokerId === undefined || brokers[packet.brokerId]) continue
      const claim = extra?.claim as string | undefined
      if (claim !== undefined && claim !== me && brokers[claim]) continue // a live peer has it
      let revision: number
      try {
        revision = await kv.update(key, encodePacket(packet, { claim: me }), e.revision)
      } catch (err) {
        if (err instanceof KvConflictError) continue
        throw err
      }
      yield { key, will: packet, revision }
    }
  }

  /**
   * Publish the wills this survivor won, as its own messages. aedes would publish them under the
   * dead gateway's broker id with this gateway's counter; receivers dedupe per client on
   * (broker id, counter), so wills sent by two survivors under one dead id drop each other.
   */
  async function deleteWill(
    client: Client & { brokerId?: string }
  ): Promise<WirePacket | undefined> {
    const key = keyToken(client.id)
    const e = await kv.get(key)
    if (!e) return undefined
    const will = decodePacket(e.value).packet
    // After a takeover the old gateway deletes "its" will: leave the new connection's alone.
    if (client.brokerId !== undefined && will.brokerId !== client.brokerId) return undefined
    // Only the will read above: one a new connection put meanwhile stays. Erased, not deleted:
    // a marker per client id would stay for ever (this bucket has no TTL).
    await kv.erase(key, e.revision)
    return will
  }

  let sweeping = false
  async function publishDeadWills(brokers: Record<string, unknown>): Promise<void> {
    const b = broker()
    if (sweeping || !b) return
    sweeping = true
    try {
      for await (const { key, will, revision } of deadWills(b.id, brokers)) {
        const { brokerId: _deadGateway, brokerCounter: _itsCounter, ...fresh } = will
        await new Promise<void>((resolve, reject) =>
          b.publish({ ...fresh, payload: Buffer.from(will.payload) }, (err) =>
            err ? reject(err) : resolve()
          )
        )
        // Remove only our claim: a client that reconnected meanwhile may have a new will here.
        await kv.erase(key, revision)
      }
    } finally {
      sweeping = false
    }
  }

  return {
    async putWill(client: Client, packet: WirePacket): Promise<void> {
      packet.brokerId = broker()!.id
      packet.clientId = client.id
      await kv.put(keyToken(client.id), encodePacket(packet))
    },
    async getWill(client: Client): Promise<WirePacket | undefined> {
      const e = await kv.get(keyToken(client.id))
      return e ? decodePacket(e.value).packet : undefined
    },
    // Never rejects: aedes ignores a failed delete everywhere, but its CONNECT step calls it with
    // `.finally()` and no handler, so a rejection (a KV timeout while NATS is partitioned) went
    // unhandled and stopped the gateway process (chaos gateway-nats-partition, CI). A will left
    // behind is overwritten by the client's next CONNECT or published by the sweep, as before.
    async delWill(client: Client & { brokerId?: string }): Promise<WirePacket | undefined> {
      try {
        return await deleteWill(client)
      } catch (err) {
        log.warn({ err, clientId: client.id }, 'could not delete a will')
        return undefined
      }
    },
    // aedes asks every 4 heartbeats, with the gateways it still hears. We publish the dead ones'
    // wills ourselves (see publishDeadWills) and hand aedes none.
    streamWill(brokers: Record<string, unknown> = {}): Readable {
      void publishDeadWills(brokers).catch((err: unknown) =>
        log.warn({ err }, 'could not publish the wills of a stopped gateway')
      )
      return Readable.from([])
    },
  }
}

export type WillStore = ReturnType<typeof createWillStore>
