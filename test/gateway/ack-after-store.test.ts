import { afterEach, describe, expect, it } from 'vitest'
import { connectMqtt, sleep, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus, natsUrl, uniquePrefix } from '../helpers/nats.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'
import { resumeSession } from './fixture.ts'

/**
 * A QoS 1 PUBACK means the message is stored: a gateway that loses NATS while messages come in
 * acknowledges none it could not queue, so the publisher sends them again (ack-after-store.ts).
 * aedes acknowledged first and queued after; each queue write that failed while NATS was away
 * lost a message the publisher held a PUBACK for (a NATS node kill lost 8 to 40 in a fault run).
 */
describe('a gateway that loses NATS while a publisher sends QoS 1', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  it('acknowledges only what it stored: every acknowledged message reaches the persistent session', async () => {
    const url = new URL(natsUrl())
    const proxy = await startTcpProxy({ targetHost: url.hostname, targetPort: Number(url.port) })
    closers.push(() => proxy.close())
    const bus = await createTestNatsBus({ url: proxy.url('nats'), prefix: uniquePrefix('ack') })
    closers.push(() => bus.close())
    const gw = await startTestGateway({ bus })
    closers.push(() => gw.close())

    const session = await connectMqtt(gw.url, { clientId: 'offline-sub', clean: false })
    await session.subscribeAsync('ack/#', { qos: 1 })
    await session.endAsync()

    // A publisher that reconnects and resends what was not acknowledged, as MQTT.js does.
    const publisher = await connectMqtt(gw.url, {
      clientId: 'ack-pub',
      clean: false,
      reconnectPeriod: 250,
      connectTimeout: 2_000,
    })
    closers.push(() => publisher.end(true))
    const acknowledged = new Set<number>()
    const COUNT = 300
    const sending = (async () => {
      const sent: Array<Promise<unknown>> = []
      for (let i = 0; i < COUNT; i++) {
        sent.push(
          publisher.publishAsync(`ack/${i % 5}`, String(i), { qos: 1 }).then(
            () => acknowledged.add(i),
            () => {} // given up with the connection: never acknowledged, so it may be missing
          )
        )
        await sleep(10)
      }
      await Promise.all(sent)
    })()
    await sleep(800)
    proxy.cut() // NATS is gone for the gateway: queue writes fail or time out
    await sleep(3_000)
    proxy.restore()
    await sending

    expect(acknowledged.size).toBeGreaterThan(0)
    const { client, got } = await resumeWhenBack(gw.url, 'offline-sub')
    closers.push(() => client.end(true))
    const deadline = Date.now() + 20_000
    const received = () => new Set(got.messages.map((m) => Number(m.payload)))
    while ([...acknowledged].some((n) => !received().has(n)) && Date.now() < deadline)
      await sleep(100)
    const lost = [...acknowledged].filter((n) => !received().has(n))
    expect(lost).toEqual([])
  }, 60_000)
})

/** Resume the session once the gateway answers again (it needs NATS to read the session). */
async function resumeWhenBack(url: string, clientId: string) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await resumeSession(url, clientId, { connectTimeout: 2_000 })
    } catch (err) {
      if (attempt === 10) throw err
      await sleep(500)
    }
  }
}
