import { describe, expect, it } from 'vitest'
import { decodePacket, encodePacket, type WirePacket } from '../../services/gateway/codec.ts'

describe('a packet as a KV value', () => {
  it('is a 16-bit length, the JSON metadata and the raw payload, and decodes back', () => {
    const packet: WirePacket = {
      cmd: 'publish',
      topic: 'plant/ü/温度', // multi-byte: the length counts bytes, not characters
      payload: Buffer.from([0, 1, 2, 255]),
      qos: 1,
      retain: true,
      brokerId: 'gw-1',
      brokerCounter: 42,
      clientId: 'c',
      messageId: 7,
    }
    const value = Buffer.from(encodePacket(packet, { at: 5 }))
    const meta = JSON.stringify({
      t: packet.topic,
      q: 1,
      r: 1,
      b: 'gw-1',
      c: 42,
      i: 'c',
      m: 7,
      x: { at: 5 },
    })
    const head = Buffer.from(meta)
    expect(value.readUInt16BE(0)).toBe(head.length)
    expect(value.subarray(2, 2 + head.length).toString('utf8')).toBe(meta)
    expect([...value.subarray(2 + head.length)]).toEqual([0, 1, 2, 255])
    expect(decodePacket(value)).toEqual({ packet, extra: { at: 5 } })
  })

  it('takes a payload that is a view into a larger buffer, and an empty one', () => {
    const big = Buffer.from('xxhelloxx')
    const view = big.subarray(2, 7)
    const one = decodePacket(
      encodePacket({ cmd: 'publish', topic: 't', payload: view, qos: 0, retain: false })
    )
    expect(one.packet.payload.toString()).toBe('hello')
    const none = decodePacket(
      encodePacket({ cmd: 'publish', topic: 't', payload: Buffer.alloc(0), qos: 0, retain: false })
    )
    expect(none.packet.payload.length).toBe(0)
  })
})
