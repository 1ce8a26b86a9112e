import { afterEach, describe, expect, it } from 'vitest'
import { collect, connectMqtt, eventually, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus } from '../helpers/nats.ts'

/**
 * A gateway hands its own messages to subscribers in the order it numbered them (emit-order.ts).
 * A QoS 1 message waits for its queue writes to persistent sessions (a NATS round trip), a QoS 0
 * one does not; left to overtake, the QoS 0 message numbered after it reached every subscriber
 * first, and aedes' per-client dedupe then dropped the QoS 1 one as already seen.
 */
describe('a mix of QoS 0 and QoS 1 from one gateway', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  it('reaches a live subscriber whole while persistent sessions make QoS 1 wait for NATS', async () => {
    const bus = await createTestNatsBus()
    closers.push(() => bus.close())
    const gw = await startTestGateway({ bus })
    closers.push(() => gw.close())

    // A persistent session: every QoS 1 message on `mix/#` is queued for it in NATS KV first.
    const offline = await connectMqtt(gw.url, { clientId: 'mix-offline', clean: false })
    await offline.subscribeAsync('mix/#', { qos: 1 })
    await offline.endAsync()

    const live = await connectMqtt(gw.url, { clientId: 'mix-live' })
    closers.push(() => live.end(true))
    await live.subscribeAsync('mix/#', { qos: 1 })
    const got = collect(live)

    const publisher = await connectMqtt(gw.url, { clientId: 'mix-pub' })
    closers.push(() => publisher.end(true))
    const COUNT = 400
    await Promise.all(
      Array.from({ length: COUNT }, (_, i) =>
        publisher.publishAsync(`mix/${i % 3}`, String(i), { qos: (i % 2) as 0 | 1 })
      )
    )
    await eventually(() => got.messages.length >= COUNT, 10_000).catch(() => {})
    const missing = Array.from({ length: COUNT }, (_, i) => i).filter(
      (i) => !got.messages.some((m) => m.payload === String(i))
    )
    expect(missing).toEqual([])
    // Clean the persistent session's queue up.
    const clean = await connectMqtt(gw.url, { clientId: 'mix-offline', clean: true })
    await clean.endAsync()
  }, 30_000)
})
