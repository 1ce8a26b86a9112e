import { Duplex } from 'node:stream'
import * as mqttPacket from 'mqtt-packet'
import { describe, expect, it } from 'vitest'
import { coalesceWrites } from '../../services/gateway/coalesce-writes.ts'

/** A connection that records each batch its writer hands down: one batch is one syscall on a socket. */
class RecordingConnection extends Duplex {
  batches: number[] = []
  override _read(): void {}
  override _write(_chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.batches.push(1)
    done()
  }
  override _writev(chunks: Array<{ chunk: Buffer }>, done: () => void): void {
    this.batches.push(chunks.length)
    done()
  }
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
    expect(conn.batches).toHaveLength(1)
    // mqtt-packet writes a PUBLISH in several pieces; all of them are in the one batch.
    expect(conn.batches[0]).toBeGreaterThanOrEqual(10)
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
    expect(conn.batches.reduce((a, b) => a + b, 0)).toBeGreaterThan(0)
    await nextTurn() // the pending uncork finds the stream ended: no error
  })
})
