/**
 * Retained messages in `gw_retained`: one key per topic; last writer wins in KV order, on every
 * gateway. SUBSCRIBEs read a local tree that the bucket's watch keeps current.
 */
import { Readable } from 'node:stream'
import type { KvBucket, Subscription } from '../../common/bus/bus.ts'
import { decodePacket, encodePacket, keyTopic, topicKey, type WirePacket } from '../codec.ts'
import { createRetainedTree } from '../retained-tree.ts'
import { createVersioned, mirrorBucket } from './kv.ts'

export interface RetainedLimits {
  /** Retained topics, cluster-wide (every gateway holds them all in memory). */
  maxRetainedMessages: number
  /** Topic and payload bytes of them all. */
  maxRetainedBytes: number
}

const UNBOUNDED: RetainedLimits = { maxRetainedMessages: Infinity, maxRetainedBytes: Infinity }

export function createRetainedStore({
  kv,
  limits = UNBOUNDED,
  onRefused = () => {},
}: {
  kv: KvBucket
  limits?: RetainedLimits
  /** A retained message was not kept because the bound was reached. */
  onRefused?: (topic: string) => void
}) {
  const retained = createRetainedTree<WirePacket>()
  // Bytes per retained topic, and their sum: what `maxRetainedBytes` bounds.
  const bytesOf = new Map<string, number>()
  let bytes = 0
  const sizeOf = (p: WirePacket) => Buffer.byteLength(p.topic) + p.payload.length
  const applyRetained = createVersioned<WirePacket>((key, p) => {
    const topic = p?.topic ?? keyTopic(key)
    bytes -= bytesOf.get(topic) ?? 0
    bytesOf.delete(topic)
    if (p) {
      retained.set(topic, p)
      bytesOf.set(topic, sizeOf(p))
      bytes += sizeOf(p)
    } else retained.delete(topic)
  })

  /**
   * Does `p` fit beside what is retained? The count and bytes are the cluster's, as this
   * gateway's copy shows them, so the bound holds across gateways (up to a watch's delay).
   */
  function fits(p: WirePacket): boolean {
    const had = bytesOf.get(p.topic)
    const count = retained.size + (had === undefined ? 1 : 0)
    return (
      count <= limits.maxRetainedMessages &&
      bytes - (had ?? 0) + sizeOf(p) <= limits.maxRetainedBytes
    )
  }

  function onRetained(key: string, value: Uint8Array | null, revision: number): void {
    const packet = value === null ? null : decodePacket(value).packet
    applyRetained(key, packet && packet.payload.length > 0 ? packet : null, revision)
  }

  async function storeRetained(p: WirePacket): Promise<void> {
    // [MQTT-3.3.1-10]: a zero-byte retained message removes the retained message. It is
    // written as an empty entry rather than a KV delete, because a put returns its revision
    // and the caches on every gateway must apply clears and sets in the same (KV) order.
    const key = topicKey(p.topic)
    if (p.payload.length > 0 && !fits(p)) {
      onRefused(p.topic)
      // Not kept; an older value on the topic is cleared rather than left standing as current.
      if (!bytesOf.has(p.topic)) return
      p = { ...p, payload: Buffer.alloc(0) }
    }
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
