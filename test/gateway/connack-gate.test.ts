import { PassThrough } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { createConnackGate, type GatedClient } from '../../services/gateway/connack-gate.ts'

/**
 * The connack gate on its own, around a stream standing in for a connection: a session held
 * again and again on one connection (a bridge link whose upstream is slower than its publishers
 * catches up from its queue each time it reaches its bound, queue-catch-up.ts) must leave nothing
 * behind on the connection, and what it held goes out in order once released.
 */
describe('the connack gate', () => {
  const limits = { maxPendingMessages: 100, maxPendingBytes: 1 << 20 }

  function client(): GatedClient & { delivered: string[] } {
    const delivered: string[] = []
    const deliver = (packet: unknown, cb: () => void) => {
      delivered.push((packet as { topic: string }).topic)
      cb()
    }
    return {
      conn: new PassThrough(),
      deliver0: deliver,
      deliverQoS: deliver,
      clean: true, // nothing of it is queued: everything live is held
      subscriptions: {},
      delivered,
    }
  }

  const releasedAll = (c: { delivered: string[] }, n: number) =>
    new Promise<void>((resolve) => {
      const check = () => (c.delivered.length >= n ? resolve() : setImmediate(check))
      check()
    })

  it('holds and releases in order, and leaves no listener behind on a connection held 20 times', async () => {
    const gate = createConnackGate({ limits, onOverflow: () => {} })
    const c = client()
    const before = c.conn.listenerCount('close')
    for (let round = 0; round < 20; round++) {
      gate.hold(c)
      for (let i = 0; i < 5; i++) c.deliverQoS({ topic: `t/${round}/${i}`, qos: 1 }, () => {})
      expect(c.delivered).toHaveLength(round * 5) // held, not delivered
      gate.release(c)
      await releasedAll(c, (round + 1) * 5)
    }
    expect(c.delivered).toEqual(
      Array.from({ length: 100 }, (_, k) => `t/${Math.floor(k / 5)}/${k % 5}`)
    )
    // Before: one 'close' listener more per hold (20 here; Node warns past 10).
    expect(c.conn.listenerCount('close')).toBe(before)
  })

  it('releases no faster than the connection has room', async () => {
    let roomy = false
    let wake: (() => void) | undefined
    const gate = createConnackGate({
      limits,
      onOverflow: () => {},
      room: () => (roomy ? undefined : new Promise<void>((resolve) => (wake = resolve))),
    })
    const c = client()
    gate.hold(c)
    for (let i = 0; i < 10; i++) c.deliverQoS({ topic: `t/${i}`, qos: 1 }, () => {})
    gate.release(c)
    await new Promise((r) => setTimeout(r, 20))
    expect(c.delivered).toHaveLength(0) // no room: nothing written into a full connection
    roomy = true
    wake!()
    await releasedAll(c, 10)
    expect(c.delivered).toEqual(Array.from({ length: 10 }, (_, i) => `t/${i}`))
  })
})
