import { afterEach, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import type * as mqttPacket from 'mqtt-packet'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import {
  collect,
  connectMqtt,
  eventually,
  sleep,
  startTestGateway,
  type TestGateway,
} from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { connectPacket, rawClient, type RawClient } from './raw.ts'

type DelWill = (client: { id: string }) => Promise<unknown>

/**
 * aedes restores a persistent session's subscriptions (restoreSubs) before it writes CONNACK
 * (storeWill and registerClient come in between), so a message published in that window used
 * to reach the socket first. MQTT.js then answers the PUBLISH with a PUBACK that it holds until
 * it is connected, and its packet loop never reads the CONNACK behind it: "connack timeout".
 * Each test holds the window open by delaying `delWill` and publishes while it is open.
 */
describe('a persistent session resumed while a message for it arrives', () => {
  let gw: TestGateway | undefined
  let close: (() => Promise<void>) | undefined
  const clients: MqttClient[] = []
  const raws: RawClient[] = []
  afterEach(async () => {
    for (const c of clients.splice(0)) c.end(true)
    for (const r of raws.splice(0)) r.end()
    await close?.()
  })

  async function setup(clientId: string, topic: string): Promise<TestGateway> {
    const bus = createInProcessBus({ prefix: uniquePrefix('connack') })
    gw = await startTestGateway({ bus })
    const g = gw
    close = async () => {
      await g.close()
      await bus.close()
    }
    const first = await connectMqtt(gw.url, { clientId, clean: false })
    await first.subscribeAsync(topic, { qos: 1 })
    first.end(true)
    await sleep(50)
    // Open the window: publish while aedes is between restoreSubs and doConnack.
    const persistence = (gw.broker.aedes as unknown as { persistence: { delWill: DelWill } })
      .persistence
    const delWill = persistence.delWill.bind(persistence)
    persistence.delWill = async (client) => {
      if (client.id === clientId) {
        g.broker.aedes.publish(
          {
            cmd: 'publish',
            topic,
            payload: Buffer.from('early'),
            qos: 1,
            retain: false,
            dup: false,
          },
          () => {}
        )
        await sleep(100) // long enough for a delivery to be written, if it is not held back
      }
      return delWill(client)
    }
    return gw
  }

  it('writes CONNACK before any PUBLISH [MQTT-3.2.0-1]', async () => {
    const g = await setup('early-raw', 'early/raw')
    const raw = await rawClient(g.ports.mqtt)
    raws.push(raw)
    raw.send(connectPacket({ clientId: 'early-raw', clean: false }))
    await eventually(() => raw.packets.some((p) => p.cmd === 'publish'))
    const [connack, publish] = raw.packets as [mqttPacket.IConnackPacket, mqttPacket.IPublishPacket]
    expect(connack).toMatchObject({ cmd: 'connack', returnCode: 0, sessionPresent: true })
    expect(publish).toMatchObject({ cmd: 'publish', topic: 'early/raw', qos: 1 })
    expect(publish.payload.toString()).toBe('early')
  })

  it('lets MQTT.js connect and receive the message', async () => {
    const g = await setup('early-js', 'early/js')
    let got!: ReturnType<typeof collect>
    const back = await connectMqtt(g.url, { clientId: 'early-js', clean: false }, (c) => {
      got = collect(c)
    })
    clients.push(back)
    const msgs = await got.waitFor(1)
    expect(msgs).toEqual([{ topic: 'early/js', payload: 'early', retain: false, qos: 1 }])
  })
})

describe('a persistent session resumed while messages for it keep arriving', () => {
  const done: Array<() => Promise<void> | void> = []
  afterEach(async () => {
    for (const d of done.splice(0).reverse()) await d()
  })

  // Plain aedes writes live deliveries while it drains the queue, so they overtake older queued
  // messages; the gate holds them until the drain is done.
  it('delivers the queue first, then the live messages, each once, in order [MQTT-4.6.0-6]', async () => {
    const bus = createInProcessBus({ prefix: uniquePrefix('drain') })
    const gw = await startTestGateway({ bus })
    done.push(
      () => bus.close(),
      () => gw.close()
    )
    const sub = await connectMqtt(gw.url, { clientId: 'drain-sub', clean: false })
    await sub.subscribeAsync('drain/seq', { qos: 1 })
    sub.end(true)
    const pub = await connectMqtt(gw.url)
    done.push(() => void pub.end(true))
    let n = 0
    const publish = async (count: number) => {
      for (let i = 0; i < count; i++) await pub.publishAsync('drain/seq', String(n++), { qos: 1 })
    }
    await publish(1_000)
    let got!: ReturnType<typeof collect>
    const resuming = connectMqtt(gw.url, { clientId: 'drain-sub', clean: false }, (c) => {
      got = collect(c)
    })
    let resumed = false
    void resuming.then(() => (resumed = true))
    // Publish through the reconnect and the drain.
    while (!resumed) await publish(5)
    await publish(300)
    done.push(async () => void (await resuming).end(true))
    const msgs = await got.waitFor(n, 15_000)
    const seq = msgs.map((m) => Number(m.payload))
    expect(new Set(seq).size).toBe(n)
    expect(seq.filter((v, i) => seq.indexOf(v) === i)).toEqual(
      Array.from({ length: n }, (_, i) => i)
    )
  })
})
