import type { Duplex } from 'node:stream'

/**
 * The bridge's hot path on the wire, MQTT 3.1.1 [MQTT-2, MQTT-3]: a reader for the packets a
 * client receives, and a writer that gathers everything written in one turn of the event loop
 * into one buffer and one `write`. mqtt-packet's parser (a BufferList, one object per packet with
 * every field) and one `socket.write` per packet cost several times more CPU per message; on a
 * small box that CPU is taken from the brokers on either side.
 */

/** What a client receives. QoS 2 flows are not used by the bridge (it subscribes at QoS 1). */
export interface WireHandlers {
  /** `payload` is a view into the chunk read, not a copy. */
  publish(topic: string, payload: Buffer, qos: number, retain: boolean, messageId: number): void
  /** PUBACK, SUBACK and UNSUBACK: the packet id they answer. */
  ack(kind: 'puback' | 'suback' | 'unsuback', messageId: number): void
  connack(sessionPresent: boolean, returnCode: number): void
  /** A malformed packet: the connection must be closed [MQTT-4.8.0-1]. */
  error(err: Error): void
}

/** Largest packet accepted: the MQTT maximum remaining length [MQTT-2.2.3]. */
const MAX_REMAINING = 268_435_455

/**
 * One whole packet, `b[p, end)` its variable header and payload: to its handler, or `fail` when
 * it is malformed.
 */
function dispatch(
  h: WireHandlers,
  fail: (msg: string) => void,
  b: Buffer,
  type: number,
  flags: number,
  p: number,
  end: number
): void {
  switch (type) {
    case 3: {
      // PUBLISH
      if (end - p < 2) return fail('PUBLISH too short')
      const topicLen = (b[p]! << 8) | b[p + 1]!
      p += 2
      const qos = (flags >> 1) & 3
      if (qos === 3) return fail('PUBLISH with QoS 3')
      if (p + topicLen + (qos ? 2 : 0) > end) return fail('PUBLISH topic past the end')
      const topic = b.toString('utf8', p, p + topicLen)
      p += topicLen
      let id = 0
      if (qos) {
        id = (b[p]! << 8) | b[p + 1]!
        p += 2
      }
      return h.publish(topic, b.subarray(p, end), qos, (flags & 1) === 1, id)
    }
    case 4: // PUBACK
    case 9: // SUBACK
    case 11: // UNSUBACK
      if (end - p < 2) return fail('acknowledgement too short')
      return h.ack(
        type === 4 ? 'puback' : type === 9 ? 'suback' : 'unsuback',
        (b[p]! << 8) | b[p + 1]!
      )
    case 2: // CONNACK
      if (end - p < 2) return fail('CONNACK too short')
      return h.connack((b[p]! & 1) === 1, b[p + 1]!)
    default:
      return // PINGRESP; nothing else is sent to a 3.1.1 client that only uses QoS 0 and 1
  }
}

export function createWireReader(h: WireHandlers): (chunk: Buffer) => void {
  // A packet split across reads: the chunks so far, and how many bytes the packet needs (0 while
  // its length is not known yet). Joined once, when complete.
  let parts: Buffer[] = []
  let have = 0
  let need = 0
  let failed = false

  const fail = (msg: string) => {
    failed = true
    parts = []
    h.error(new Error(`malformed MQTT packet: ${msg}`))
  }

  /**
   * Parse whole packets from `b`; returns the offset of the first incomplete one and sets `need`
   * to its full size when its length is known (else 0). `lengthOnly`: only learn the first
   * packet's size (-1 when the header is incomplete).
   */
  function parse(b: Buffer, lengthOnly = false): number {
    let o = 0
    const n = b.length
    while (!failed && n - o >= (lengthOnly ? 1 : 2)) {
      let len = 0
      let mult = 1
      let i = o + 1
      let byte: number
      do {
        if (i >= n) return lengthOnly ? -1 : o
        byte = b[i++]!
        len += (byte & 0x7f) * mult
        mult *= 128
        if (mult > 128 ** 4 && byte & 0x80) {
          fail('remaining length over 4 bytes')
          return n
        }
      } while (byte & 0x80)
      if (len > MAX_REMAINING) {
        fail('remaining length too large')
        return n
      }
      if (lengthOnly || n - i < len) {
        need = i - o + len
        return o
      }
      const first = b[o]!
      dispatch(h, fail, b, first >> 4, first & 0x0f, i, i + len)
      o = i + len
    }
    return o
  }

  return (chunk: Buffer) => {
    if (failed) return
    let b = chunk
    if (have > 0) {
      // Finish the packet split across reads, copying only its own bytes, then go on in `chunk`.
      if (need === 0) {
        // Its length is not known yet: at most 5 header bytes wait; add a few from the chunk.
        const head = Buffer.concat([...parts, chunk.subarray(0, 5)])
        const o = parse(head, true)
        if (failed) return
        if (o === -1) {
          parts.push(chunk)
          have += chunk.length
          return
        }
      }
      if (have + chunk.length < need) {
        parts.push(chunk)
        have += chunk.length
        return
      }
      const take = need - have
      parts.push(chunk.subarray(0, take))
      const whole = Buffer.concat(parts, need)
      parts = []
      have = 0
      need = 0
      parse(whole)
      if (failed) return
      b = chunk.subarray(take)
    }
    need = 0
    const o = parse(b)
    if (!failed && o < b.length) {
      parts = [b.subarray(o)]
      have = b.length - o
    }
  }
}

const SLAB = 64 * 1024

/**
 * Everything written in one turn of the event loop leaves in one `write` (one syscall) at the end
 * of the turn: the PUBACKs released by every upstream read of the turn, or the PUBLISHes of
 * every local read. Packets are encoded straight into a shared slab; the part written is never
 * touched again and the next turn goes on after it.
 */
export interface WireWriter {
  /** PUBLISH [MQTT-3.3]. */
  publish(topic: string, payload: Buffer, qos: 0 | 1, retain: boolean, messageId: number): void
  /** PUBACK [MQTT-3.4]. */
  puback(messageId: number): void
  /** Any other, already encoded packet. */
  raw(buf: Buffer): void
  /** Write what was gathered now rather than at the end of the turn. */
  flush(): void
}

export function createWireWriter(socket: Duplex): WireWriter {
  let slab = Buffer.allocUnsafe(SLAB)
  let start = 0
  let pos = 0
  let ready: Buffer[] = [] // whole segments of this turn, in order, before slab[start, pos)
  let scheduled = false

  const schedule = () => {
    if (!scheduled) {
      scheduled = true
      setImmediate(flush)
    }
  }
  /** Room for `n` bytes at the returned offset of `slab`. */
  const reserve = (n: number): number => {
    if (pos + n > slab.length) {
      if (pos > start) ready.push(slab.subarray(start, pos))
      slab = Buffer.allocUnsafe(Math.max(SLAB, n))
      start = pos = 0
    }
    schedule()
    const o = pos
    pos += n
    return o
  }
  function flush() {
    scheduled = false
    if (pos > start) {
      ready.push(slab.subarray(start, pos))
      start = pos
    }
    if (ready.length === 0) return
    if (socket.destroyed) {
      ready = []
      return
    }
    if (ready.length === 1) socket.write(ready[0]!)
    else {
      socket.cork()
      for (const b of ready) socket.write(b)
      socket.uncork()
    }
    ready = []
  }

  return {
    publish(topic, payload, qos, retain, messageId) {
      const topicBytes = Buffer.byteLength(topic)
      const remaining = 2 + topicBytes + (qos ? 2 : 0) + payload.length
      const lengthBytes =
        remaining < 128 ? 1 : remaining < 16_384 ? 2 : remaining < 2_097_152 ? 3 : 4
      let o = reserve(1 + lengthBytes + remaining)
      const buf = slab
      buf[o++] = 0x30 | (qos << 1) | (retain ? 1 : 0)
      let r = remaining
      do {
        let byte = r % 128
        r = Math.floor(r / 128)
        if (r > 0) byte |= 0x80
        buf[o++] = byte
      } while (r > 0)
      buf[o++] = topicBytes >> 8
      buf[o++] = topicBytes & 0xff
      o += buf.write(topic, o, 'utf8')
      if (qos) {
        buf[o++] = messageId >> 8
        buf[o++] = messageId & 0xff
      }
      payload.copy(buf, o)
    },
    puback(messageId) {
      const o = reserve(4)
      slab[o] = 0x40
      slab[o + 1] = 0x02
      slab[o + 2] = messageId >> 8
      slab[o + 3] = messageId & 0xff
    },
    raw(b) {
      const o = reserve(b.length)
      b.copy(slab, o)
    },
    flush,
  }
}
