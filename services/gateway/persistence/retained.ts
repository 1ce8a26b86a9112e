/**
 * Retained messages in `gw_retained`: one key per topic; last writer wins in KV order, on every
 * gateway. SUBSCRIBEs read a local tree that the bucket's watch keeps current.
 */
import { Readable } from 'node:stream'
import type { KvBucket, Subscription } from '../../common/bus/bus.ts'
import { decodePacket, encodePacket, keyTopic, topicKey, type WirePacket } from '../codec.ts'
import { createRetainedTree } from '../retained-tree.ts'
import { createVersioned, mirrorBucket } from './kv.ts'

export function createRetainedStore({ kv }: { kv: KvBucket }) {
  const retained = createRetainedTree<WirePacket>()
  const applyRetained = createVersioned<WirePacket>((key, p) => {
    if (p) retained.set(p.topic, p)
    else retained.delete(keyTopic(key))
  })

  function onRetained(key: string, value: Uint8Array | null, revision: number): void {
    const packet = value === null ? null : decodePacket(value).packet
    applyRetained(key, packet && packet.payload.length > 0 ? packet : null, revision)
  }

  async function storeRetained(p: WirePacket): Promise<void> {
    // [MQTT-3.3.1-10]: a zero-byte retained message removes the retained message. It is
    // written as an empty entry rather than a KV delete, because a put returns its revision
    // and the caches on every gateway must apply clears and sets in the same (KV) order.
    const key = topicKey(p.topic)
    const packet: WirePacket = {
      cmd: 'publish',
      topic: p.topic,
      payload: Buffer.from(p.payload),
      qos: p.qos,
      retain: true,
    }
    const revision = await kv.put(key, encodePacket(packet))
    applyRetained(key, packet.payload.length > 0 ? packet : null, revision)
  }

  function createRetainedStreamCombi(patterns: string[]): Readable {
    return Readable.from(retained.match(patterns))
  }

  return {
    load: (watches: Subscription[]): Promise<void> => mirrorBucket(kv, onRetained, watches),
    get size(): number {
      return retained.size
    },
    storeRetained,
    createRetainedStreamCombi,
    createRetainedStream(pattern: string): Readable {
      return createRetainedStreamCombi([pattern])
    },
  }
}

export type RetainedStore = ReturnType<typeof createRetainedStore>
