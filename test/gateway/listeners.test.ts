import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import type { Bus } from '../../services/common/bus/bus.ts'
import {
  collect,
  connectMqtt,
  sleep,
  startTestGateway,
  type TestGateway,
} from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { selfSigned } from '../helpers/tls.ts'

const MAX_PACKET_BYTES = 4_096

describe('gateway listeners: TCP, WebSocket, TLS and secure WebSocket', () => {
  let bus: Bus
  let gw: TestGateway
  let ca: string
  const clients: MqttClient[] = []
  const urls = () => ({
    tcp: `mqtt://127.0.0.1:${gw.ports.mqtt}`,
    ws: `ws://127.0.0.1:${gw.ports.ws}/mqtt`,
    tls: `mqtts://localhost:${gw.ports.tls}`,
    wss: `wss://localhost:${gw.ports.wss}/mqtt`,
  })
  const open = async (url: string, clientId: string) => {
    const c = await connectMqtt(url, { clientId, ca, rejectUnauthorized: true })
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    const pem = selfSigned()
    ca = pem.cert
    bus = createInProcessBus({ prefix: uniquePrefix('listen') })
    gw = await startTestGateway({
      bus,
      wsPort: 0,
      tlsPort: 0,
      wssPort: 0,
      tls: { cert: pem.cert, key: pem.key },
      limits: { maxPacketSize: MAX_PACKET_BYTES },
    })
  })
  afterAll(async () => {
    for (const c of clients) c.end(true)
    await gw?.close()
    await bus?.close()
  })

  it('serves one broker on every transport, each on its own port', async () => {
    const u = urls()
    expect(new Set([gw.ports.mqtt, gw.ports.ws, gw.ports.tls, gw.ports.wss]).size).toBe(4)
    expect(gw.endpoints).toEqual([
      u.tcp,
      `ws://127.0.0.1:${gw.ports.ws}`,
      `mqtts://127.0.0.1:${gw.ports.tls}`,
      `wss://127.0.0.1:${gw.ports.wss}`,
    ])
    const sub = await open(u.wss, 'sub-wss')
    const got = collect(sub)
    await sub.subscribeAsync('t/#', { qos: 1 })
    for (const [name, url] of Object.entries(u)) {
      const pub = await open(url, `pub-${name}`)
      await pub.publishAsync(`t/${name}`, `over ${name}`, { qos: 1 })
    }
    const msgs = await got.waitFor(4)
    expect(msgs.map((m) => `${m.topic} ${m.payload}`).sort()).toEqual([
      't/tcp over tcp',
      't/tls over tls',
      't/ws over ws',
      't/wss over wss',
    ])
  })

  it('refuses a TLS client that does not trust the certificate', async () => {
    await expect(
      connectMqtt(urls().tls, { clientId: 'untrusting', rejectUnauthorized: true })
    ).rejects.toThrow(/self.signed|certificate/i)
  })

  it('closes a WebSocket client that sends a packet over maxPacketSize; the others carry on', async () => {
    const u = urls()
    const sub = await open(u.tcp, 'sub-big')
    const got = collect(sub)
    await sub.subscribeAsync('big/#', { qos: 0 })
    const big = await open(u.ws, 'too-big')
    const closed = new Promise<void>((resolve) => big.once('close', () => resolve()))
    big.publish('big/x', Buffer.alloc(MAX_PACKET_BYTES * 2), { qos: 0 })
    await closed
    const ok = await open(u.ws, 'fits')
    await ok.publishAsync('big/y', Buffer.alloc(100), { qos: 0 })
    const [m] = await got.waitFor(1)
    expect(m).toMatchObject({ topic: 'big/y' })
    await sleep(100)
    expect(got.messages.map((x) => x.topic)).toEqual(['big/y'])
  })
})
