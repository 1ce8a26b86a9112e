import { Duplex } from 'node:stream'
import * as mqttPacket from 'mqtt-packet'
import { describe, expect, it } from 'vitest'
import { readFairly, type ReadingClient } from '../../services/gateway/fair-reads.ts'

/** A connection whose reads are counted; what is pushed into it is what the client sent. */
class Connection extends Duplex {
  reads = 0
  override _read(): void {}
  override _write(_c: Buffer, _e: BufferEncoding, done: () => void): void {
    done()
  }
  override read(size?: number): ReturnType<Duplex['read']> {
    this.reads++
    return super.read(size)
  }
}

/** A client read as aedes reads it (lib/client.js): each packet handled at once, then `_nextBatch`. */
function client(packetsPerTurn = 256) {
  const conn = new Connection()
  const handled: mqttPacket.Packet[] = []
  const c: ReadingClient = {
    conn,
    _parsingBatch: 1, // aedes starts at 1: the first 'readable' takes it to 0
    _parser: mqttPacket.parser({ protocolVersion: 4 }) as unknown as ReadingClient['_parser'],
    _nextBatch: () => {},
    emit: () => true,
  }
  c._nextBatch = () => {
    c._parsingBatch--
    if (c._parsingBatch <= 0) c._parsingBatch = 0
  }
  conn.on('readable', c._nextBatch)
  ;(c._parser as unknown as mqttPacket.Parser).on('packet', (p) => {
    handled.push(p)
    c._parsingBatch++
    c._nextBatch()
  })
  readFairly(c, packetsPerTurn)
  return { conn, handled }
}

const bytes = (p: mqttPacket.Packet) => mqttPacket.generate(p)
const ping = bytes({ cmd: 'pingreq' })
const publish = (i: number) =>
  bytes({
    cmd: 'publish',
    topic: 'fair/t',
    payload: Buffer.alloc(90, i),
    qos: 0,
    retain: false,
    dup: false,
  })
const tick = () => new Promise((resolve) => process.nextTick(resolve))
const turn = () => new Promise((resolve) => setImmediate(resolve))

describe('reading a client a batch per turn of the event loop', () => {
  it('handles a lone packet on an idle connection in the turn it came, and reads it once', async () => {
    const { conn, handled } = client()
    await turn() // the stream's own read(0) when a 'readable' listener is added
    const before = conn.reads
    conn.push(ping)
    await tick() // 'readable' is emitted on the next tick; the packet is handled then
    expect(handled.map((p) => p.cmd)).toEqual(['pingreq'])
    await turn()
    await turn()
    // The read emptied the stream; nothing asks it again until more comes.
    expect(conn.reads - before).toBe(1)
    conn.push(ping)
    await tick()
    expect(handled).toHaveLength(2)
  })

  it('reads a burst past the turn budget a batch per turn, in order', async () => {
    const { conn, handled } = client(50)
    conn.push(Buffer.concat(Array.from({ length: 1_000 }, (_, i) => publish(i % 256))))
    await tick()
    const first = handled.length
    expect(first).toBeGreaterThan(0)
    expect(first).toBeLessThan(1_000)
    for (let i = 0; i < 200 && handled.length < 1_000; i++) await turn()
    expect(handled).toHaveLength(1_000)
    handled.forEach((p, i) => expect((p as mqttPacket.IPublishPacket).payload[0]).toBe(i % 256))
  })

  it('ends the stream when the client closes after its last packet', async () => {
    const { conn, handled } = client()
    const ended = new Promise((resolve) => conn.once('end', resolve))
    conn.push(ping)
    conn.push(null)
    await ended
    expect(handled).toHaveLength(1)
  })
})
