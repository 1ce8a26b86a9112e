import * as mqttPacket from 'mqtt-packet'
import { afterEach, describe, expect, it } from 'vitest'
import { collect, connectMqtt, eventually, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus } from '../helpers/nats.ts'
import { connectPacket, rawClient } from './raw.ts'

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

  it('acknowledges QoS 1 PUBLISHes in the order they came [MQTT-4.6.0-2], slow queue writes or not', async () => {
    const bus = await createTestNatsBus()
    closers.push(() => bus.close())
    const gw = await startTestGateway({ bus })
    closers.push(() => gw.close())
    // Only `slow/#` has a persistent session: its messages wait for a NATS queue write.
    const offline = await connectMqtt(gw.url, { clientId: 'order-offline', clean: false })
    await offline.subscribeAsync('slow/#', { qos: 1 })
    await offline.endAsync()

    const raw = await rawClient(gw.ports.mqtt)
    closers.push(() => raw.end())
    raw.send(connectPacket({ clientId: 'order-pub' }))
    await raw.next('connack')
    const COUNT = 200
    const burst = Array.from({ length: COUNT }, (_, i) => ({
      cmd: 'publish' as const,
      topic: i % 2 === 0 ? `slow/${i}` : `fast/${i}`,
      payload: Buffer.from(String(i)),
      qos: 1 as const,
      dup: false,
      retain: false,
      messageId: i + 1,
    }))
    raw.write(Buffer.concat(burst.map((p) => mqttPacket.generate(p)))) // one write: one read batch
    const acked: number[] = []
    for (let i = 0; i < COUNT; i++) acked.push((await raw.next('puback', 10_000)).messageId!)
    expect(acked).toEqual(burst.map((p) => p.messageId))
    const clean = await connectMqtt(gw.url, { clientId: 'order-offline', clean: true })
    await clean.endAsync()
  }, 30_000)
})
