import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import type { Bus } from '../../services/common/bus/bus.ts'
import { fitsTheBus } from '../../services/gateway/auth.ts'
import {
  collect,
  connectMqtt,
  sleep,
  startTestGateway,
  type TestGateway,
} from '../helpers/gateway.ts'
import { createTestNatsBus, destroyBucketsWithPrefix, uniquePrefix } from '../helpers/nats.ts'

/**
 * Lengths are judged on the form NATS sees. A topic's retained KV key is base64 (4/3 of it, and
 * more for short levels) and its subject escapes some bytes threefold; past NATS's 4 KB control
 * line, the server closes the gateway's whole bus connection. Only the offending client may pay.
 */
describe('topic and client id lengths on a NATS bus', () => {
  const prefix = uniquePrefix('gwlen')
  let bus: Bus
  let gw: TestGateway
  const clients: MqttClient[] = []

  beforeAll(async () => {
    bus = await createTestNatsBus({ prefix })
    gw = await startTestGateway({ bus, gatewayId: 'len' })
  })
  afterAll(async () => {
    for (const c of clients) c.end(true)
    await gw?.close()
    await bus?.close()
    await destroyBucketsWithPrefix(prefix)
  })

  it('drops a retained publish whose KV key NATS would refuse, and the others carry on', async () => {
    const sub = await connectMqtt(gw.url)
    clients.push(sub)
    const got = collect(sub)
    await sub.subscribeAsync('ok/#', { qos: 1 })
    const offender = await connectMqtt(gw.url)
    clients.push(offender)
    // 3,000 bytes, under the old raw limit; its retained KV key is 4,001 characters.
    await offender.publishAsync('x'.repeat(3_000), 'x', { qos: 1, retain: true })
    await sleep(300)
    const pub = await connectMqtt(gw.url)
    clients.push(pub)
    await pub.publishAsync('ok/after', 'still here', { qos: 1, retain: true })
    await got.waitFor(1, 5_000)
    expect(got.messages.map((m) => m.payload)).toEqual(['still here'])
    expect(gw.stats().publishDenied).toBe(1)
    expect(offender.connected).toBe(true) // acknowledged and dropped, like any refused publish
  })

  it('refuses a client id too long for a KV key with CONNACK 2, and the others carry on', async () => {
    const sub = await connectMqtt(gw.url)
    clients.push(sub)
    const got = collect(sub)
    await sub.subscribeAsync('ok2/#', { qos: 1 })
    const refused = await connectMqtt(gw.url, { clientId: 'c'.repeat(4_000), clean: false }).then(
      async (c) => {
        clients.push(c)
        await c.subscribeAsync('x/#', { qos: 1 }).catch(() => undefined)
        return 0
      },
      (err: { code?: number }) => err.code ?? -1
    )
    expect(refused).toBe(2)
    const pub = await connectMqtt(gw.url)
    clients.push(pub)
    await pub.publishAsync('ok2/after', 'still here', { qos: 1 })
    await got.waitFor(1, 5_000)
    expect(got.messages.map((m) => m.payload)).toEqual(['still here'])
  })

  it('judges a topic by the subject and key it becomes, not by its MQTT length', () => {
    expect(fitsTheBus('plant/line/press/temperature')).toBe(true)
    expect(fitsTheBus('x'.repeat(2_000))).toBe(true) // key 'b' + 2,668 base64 characters
    expect(fitsTheBus('x'.repeat(2_400))).toBe(false) // key past 3,072 though the topic is not
    expect(fitsTheBus(Array.from({ length: 600 }, () => 'a').join('/'))).toBe(true)
    expect(fitsTheBus(Array.from({ length: 1_400 }, () => 'a').join('/'))).toBe(false)
    expect(fitsTheBus('.'.repeat(1_000))).toBe(true) // '.' → '//' in a subject: 2,000 bytes
    expect(fitsTheBus('.'.repeat(1_600))).toBe(false) // 3,200 bytes as a subject
  })
})
