import { Duplex } from 'node:stream'
import * as mqttPacket from 'mqtt-packet'
import { describe, expect, it } from 'vitest'
import { coalesceWrites } from '../../services/gateway/coalesce-writes.ts'

/**
 * A connection that records each batch its writer hands down (one batch is one syscall on a
 * socket) and how many pieces it had; `hold` keeps each write pending, as a socket whose peer does
 * not read.
 */
class RecordingConnection extends Duplex {
  batches: number[] = []
  bytes: Buffer[] = []
  held: Array<() => void> = []
  hold = false
  constructor(highWaterMark?: number) {
    super(highWaterMark === undefined ? {} : { writableHighWaterMark: highWaterMark })
  }
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.batches.push(1)
    this.bytes.push(chunk)
    if (this.hold) this.held.push(done)
    else done()
  }
  override _writev(chunks: Array<{ chunk: Buffer }>, done: () => void): void {
    this.batches.push(chunks.length)
    this.bytes.push(...chunks.map((c) => c.chunk))
    done()
  }
}

/** The packets a connection was given, parsed back. */
function packetsOf(conn: RecordingConnection): mqttPacket.Packet[] {
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const out: mqttPacket.Packet[] = []
  parser.on('packet', (p) => out.push(p))
  parser.parse(Buffer.concat(conn.bytes))
  return out
}

const publish = (n: number): mqttPacket.IPublishPacket => ({
  cmd: 'publish',
  topic: 'coalesce/t',
  payload: Buffer.from(`m${n}`),
  qos: 0,
  retain: false,
  dup: false,
})

const nextTurn = () => new Promise((resolve) => setImmediate(resolve))

describe('deliveries written in one turn of the event loop', () => {
  it('leave a connection in one batch, as aedes writes them (mqtt-packet writeToStream)', async () => {
    const conn = new RecordingConnection()
    coalesceWrites(conn)
    // Ten deliveries a tick apart in one turn, as publishes read in one turn reach a subscriber
    // through the broker's callbacks: mqtt-packet's own cork lasts one tick.
    for (let i = 0; i < 10; i++) {
      await new Promise((resolve) => process.nextTick(resolve))
      mqttPacket.writeToStream(publish(i), conn)
    }
    await nextTurn()
    await nextTurn()
    // mqtt-packet writes a PUBLISH in six pieces; the turn's sixty leave as one buffer.
    expect(conn.batches).toEqual([1])
    const packets = packetsOf(conn) as mqttPacket.IPublishPacket[]
    expect(packets.map((p) => p.payload.toString())).toEqual(
      Array.from({ length: 10 }, (_, i) => `m${i}`)
    )
  })

  it('a write in a later turn leaves in its own batch, without waiting for more', async () => {
    const conn = new RecordingConnection()
    coalesceWrites(conn)
    mqttPacket.writeToStream(publish(1), conn)
    await nextTurn()
    await nextTurn()
    expect(conn.batches).toHaveLength(1)
    mqttPacket.writeToStream(publish(2), conn)
    await nextTurn()
    expect(conn.batches).toHaveLength(2)
  })

  it('end() while corked still writes what was queued', async () => {
    const conn = new RecordingConnection()
    coalesceWrites(conn)
    const finished = new Promise((resolve) => conn.once('finish', resolve))
    mqttPacket.writeToStream(publish(1), conn)
    conn.end()
    await finished
    expect(packetsOf(conn)).toHaveLength(1)
    await nextTurn() // the pending flush finds nothing left: no error
  })

  it('a write past the high-water mark answers false, and drain follows once it is written', async () => {
    const conn = new RecordingConnection(100)
    coalesceWrites(conn)
    let drained = 0
    conn.on('drain', () => drained++)
    const answers = [0, 1, 2].map((i) =>
      mqttPacket.writeToStream({ ...publish(i), payload: Buffer.alloc(40, i) }, conn)
    )
    // 47 bytes per packet: the third crosses 100, as the stream itself would answer.
    expect(answers).toEqual([true, false, false])
    await nextTurn()
    await nextTurn()
    expect(drained).toBe(1)
    expect(packetsOf(conn)).toHaveLength(3)
  })

  it('while the stream is still writing a burst, a write answers false and the stream drains', async () => {
    const conn = new RecordingConnection(100)
    coalesceWrites(conn)
    conn.hold = true
    let drained = 0
    conn.on('drain', () => drained++)
    mqttPacket.writeToStream({ ...publish(0), payload: Buffer.alloc(80) }, conn)
    await nextTurn() // the first burst (87 bytes) is with the stream, not written yet
    expect(mqttPacket.writeToStream(publish(1), conn)).toBe(false)
    await nextTurn()
    expect(drained).toBe(0) // nothing was written yet: no drain
    conn.hold = false
    for (const done of conn.held.splice(0)) done()
    await nextTurn()
    await nextTurn()
    expect(drained).toBe(1)
    expect(packetsOf(conn)).toHaveLength(2)
  })

  it("calls each writer's callback once its burst is written", async () => {
    const conn = new RecordingConnection()
    coalesceWrites(conn)
    const order: string[] = []
    conn.write(Buffer.from([0xc0]), () => order.push('a'))
    conn.write('\u0000', 'utf8', () => order.push('b'))
    expect(order).toEqual([])
    await nextTurn()
    await nextTurn()
    expect(order).toEqual(['a', 'b'])
    expect(Buffer.concat(conn.bytes)).toEqual(Buffer.from([0xc0, 0x00]))
  })
})
