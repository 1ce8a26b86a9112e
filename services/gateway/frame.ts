import type { WirePacket } from './codec.ts'

/**
 * The mq frame: a run of packets on one topic, from one gateway, in one bus message.
 * Binary, because JSON metadata per message was a visible share of the cross-gateway cost, and
 * batched, because every bus message costs a subject check, a copy and a protocol line on both
 * ends (see test/bench/gateway.ts).
 *
 *   u8 MAGIC | u8 sender length | sender (utf8) | u32 frame sequence | u16 topic length | topic
 *   | u16 packet count | packets
 *
 * and each packet:
 *
 *   u8 flags | [u8 brokerId length | brokerId] | [f64 brokerCounter]
 *   | [u16 clientId length | clientId] | [u16 messageId] | u32 payload length | payload
 *
 * A brokerId equal to the sender is written as length 0 (nearly every packet: aedes stamps its
 * own id). The sender and sequence identify the frame, which is what the receiver dedupes on:
 * NATS delivers one message once per matching subscription.
 */
export interface Frame {
  sender: string
  seq: number
  topic: string
  packets: WirePacket[]
}

// The older single-packet frame starts with the high byte of a 16-bit JSON length: it would take
// 45 KB of metadata to start with this byte, so a reader can tell the two apart.
export const FRAME_MAGIC = 0xb1
export const MAX_FRAME_PACKETS = 65_535 // the count is 16 bits

const QOS = 0b0000_0011
const RETAIN = 0b0000_0100
const DUP = 0b0000_1000
const BROKER_ID = 0b0001_0000
const COUNTER = 0b0010_0000
const CLIENT_ID = 0b0100_0000
const MESSAGE_ID = 0b1000_0000

const utf8Length = (s: string): number => Buffer.byteLength(s, 'utf8')

function packetSize(p: WirePacket, sender: string): number {
  let n = 1 + 4 + p.payload.length
  if (p.brokerId !== undefined) n += 1 + (p.brokerId === sender ? 0 : utf8Length(p.brokerId))
  if (p.brokerCounter !== undefined) n += 8
  if (p.clientId !== undefined) n += 2 + utf8Length(p.clientId)
  if (p.messageId !== undefined) n += 2
  return n
}

/** Write `s` after a length field of `lenBytes` bytes; returns the new offset. */
function writeString(buf: Buffer, at: number, s: string, lenBytes: 1 | 2): number {
  const len = buf.write(s, at + lenBytes, 'utf8')
  if (len >= 1 << (8 * lenBytes)) throw new Error(`string too long for the mq frame: ${len} bytes`)
  if (lenBytes === 1) buf[at] = len
  else buf.writeUInt16BE(len, at)
  return at + lenBytes + len
}

/** Every packet must be on `topic`: the frame carries it once. */
export function encodeFrame(
  sender: string,
  seq: number,
  topic: string,
  packets: readonly WirePacket[]
): Buffer {
  if (packets.length > MAX_FRAME_PACKETS) throw new Error('too many packets for one mq frame')
  let size = 1 + 1 + utf8Length(sender) + 4 + 2 + utf8Length(topic) + 2
  for (const p of packets) size += packetSize(p, sender)
  const buf = Buffer.allocUnsafe(size)
  buf[0] = FRAME_MAGIC
  let at = writeString(buf, 1, sender, 1)
  at = buf.writeUInt32BE(seq >>> 0, at)
  at = writeString(buf, at, topic, 2)
  at = buf.writeUInt16BE(packets.length, at)
  for (const p of packets) {
    let flags = p.qos & QOS
    if (p.retain) flags |= RETAIN
    if (p.dup) flags |= DUP
    if (p.brokerId !== undefined) flags |= BROKER_ID
    if (p.brokerCounter !== undefined) flags |= COUNTER
    if (p.clientId !== undefined) flags |= CLIENT_ID
    if (p.messageId !== undefined) flags |= MESSAGE_ID
    buf[at++] = flags
    if (p.brokerId !== undefined) {
      at = p.brokerId === sender ? ((buf[at] = 0), at + 1) : writeString(buf, at, p.brokerId, 1)
    }
    if (p.brokerCounter !== undefined) at = buf.writeDoubleBE(p.brokerCounter, at)
    if (p.clientId !== undefined) at = writeString(buf, at, p.clientId, 2)
    if (p.messageId !== undefined) at = buf.writeUInt16BE(p.messageId, at)
    at = buf.writeUInt32BE(p.payload.length, at)
    buf.set(p.payload, at)
    at += p.payload.length
  }
  return buf
}

export function isFrame(data: Uint8Array): boolean {
  return data[0] === FRAME_MAGIC
}

/** The frame's sender, read without decoding the packets: a gateway skips its own frames. */
export function frameSender(data: Uint8Array): string {
  const len = data[1] ?? 0
  return Buffer.from(data.buffer, data.byteOffset + 2, Math.min(len, data.byteLength - 2)).toString(
    'utf8'
  )
}

/** Payloads are views into `data`: the bus hands every receiver its own copy. */
export function decodeFrame(data: Uint8Array): Frame {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  if (buf[0] !== FRAME_MAGIC) throw new Error('not an mq frame')
  let at = 1
  const str = (lenBytes: 1 | 2): string => {
    const len = lenBytes === 1 ? buf[at]! : buf.readUInt16BE(at)
    at += lenBytes
    const s = buf.toString('utf8', at, at + len)
    at += len
    return s
  }
  const sender = str(1)
  const seq = buf.readUInt32BE(at)
  at += 4
  const topic = str(2)
  const count = buf.readUInt16BE(at)
  at += 2
  const packets: WirePacket[] = new Array(count)
  for (let i = 0; i < count; i++) {
    const flags = buf[at++]!
    const packet: WirePacket = {
      cmd: 'publish',
      topic,
      payload: EMPTY,
      qos: (flags & QOS) as 0 | 1 | 2,
      retain: (flags & RETAIN) !== 0,
    }
    if (flags & DUP) packet.dup = true
    if (flags & BROKER_ID) {
      const id = str(1)
      packet.brokerId = id === '' ? sender : id
    }
    if (flags & COUNTER) {
      packet.brokerCounter = buf.readDoubleBE(at)
      at += 8
    }
    if (flags & CLIENT_ID) packet.clientId = str(2)
    if (flags & MESSAGE_ID) {
      packet.messageId = buf.readUInt16BE(at)
      at += 2
    }
    const len = buf.readUInt32BE(at)
    at += 4
    if (at + len > buf.length) throw new Error('truncated mq frame')
    packet.payload = buf.subarray(at, at + len)
    at += len
    packets[i] = packet
  }
  return { sender, seq, topic, packets }
}

const EMPTY = Buffer.alloc(0)
