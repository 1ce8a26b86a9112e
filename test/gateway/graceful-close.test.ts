import { connect } from 'node:net'
import mqtt, { type MqttClient } from 'mqtt'
import * as mqttPacket from 'mqtt-packet'
import { afterEach, expect, it } from 'vitest'
import { collect, connectMqtt, eventually, sleep } from '../helpers/gateway.ts'
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus, uniquePrefix } from '../helpers/nats.ts'
import { connectPacket } from './raw.ts'

/**
 * A gateway stopped on purpose (SIGTERM in a rolling restart) lets what is in flight finish
 * before it drops its connections (graceful-close.ts). Closing at once, it sent things twice:
 * a publisher's message stored but not yet acknowledged was published again on the next
 * gateway, and a persistent session's unacknowledged window was delivered again there.
 */
const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const N = 3_000

async function twoGateways(tag: string): Promise<[TestGateway, TestGateway]> {
  // On NATS: a queue write is a round trip, as in a fabric, so a message spends a while between
  // its arrival and its PUBACK.
  const bus = await createTestNatsBus({ prefix: uniquePrefix(tag) })
  const a = await startTestGateway({ bus, anonymous: 'always' })
  const b = await startTestGateway({ bus, anonymous: 'always' })
  cleanups.push(
    () => bus.close(),
    () => a.close(),
    () => b.close()
  )
  return [a, b]
}

/** MQTT.js that moves to the other gateway when its own goes away (as a client behind a load balancer). */
function roaming(first: TestGateway, then: TestGateway, options: mqtt.IClientOptions) {
  const client = mqtt.connect({
    protocolVersion: 4,
    servers: [first, then].map((g) => ({ host: '127.0.0.1', port: g.ports.mqtt! })),
    reconnectPeriod: 50,
    ...options,
  })
  client.on('error', () => {})
  cleanups.push(() => client.endAsync(true))
  return client
}

function publishAll(pub: MqttClient, topic: string, inFlight: number) {
  let next = 0
  return Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < N) await pub.publishAsync(topic, String(next++), { qos: 1 })
    })
  )
}

function duplicatesOf(payloads: string[]) {
  return payloads.length - new Set(payloads).size
}

// Not a regression test (closing at once did not duplicate here): it checks that what a closing
// gateway leaves unacknowledged is sent again elsewhere, so nothing is lost and nothing doubled.
it("a publisher's messages in flight while its gateway closes arrive once", async () => {
  const [a, b] = await twoGateways('gclose-pub')
  const sub = await connectMqtt(b.url, { clientId: 'gclose-sub', clean: false })
  cleanups.push(() => sub.endAsync(true))
  const got = collect(sub)
  await sub.subscribeAsync('g/pub', { qos: 1 })

  const pub = roaming(a, b, { clientId: 'gclose-pub' })
  const publishing = publishAll(pub, 'g/pub', 64)
  await eventually(() => got.messages.length >= N / 4, 10_000)
  await a.close()
  await publishing
  await got.waitFor(N, 20_000)
  await eventually(() => new Set(got.messages.map((m) => m.payload)).size === N, 10_000)
  const payloads = got.messages.map((m) => m.payload)
  expect(duplicatesOf(payloads), 'published twice').toBe(0)
}, 60_000)

/**
 * A persistent session that acknowledges each message 100 ms after it came, many at once (as a
 * bridge with a window does; MQTT.js acknowledges one message at a time), on one gateway and,
 * once that one closed, on the other.
 */
function windowedSession(gateways: TestGateway[], clientId: string, seen: string[]) {
  let stopped = false
  const connectTo = (i: number): void => {
    if (stopped || i >= gateways.length) return
    const socket = connect(gateways[i]!.ports.mqtt!, '127.0.0.1')
    socket.on('error', () => {})
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    parser.on('packet', (p: mqttPacket.Packet) => {
      if (p.cmd === 'connack' && i === 0)
        socket.write(
          mqttPacket.generate({
            cmd: 'subscribe',
            messageId: 1,
            subscriptions: [{ topic: 'g/win', qos: 1 }],
          })
        )
      if (p.cmd !== 'publish') return
      seen.push(String(p.payload))
      const ack = () =>
        socket.writable &&
        socket.write(mqttPacket.generate({ cmd: 'puback', messageId: p.messageId! }))
      setTimeout(ack, 100)
    })
    socket.on('data', (d) => parser.parse(d))
    socket.once('close', () => connectTo(i + 1))
    socket.write(mqttPacket.generate(connectPacket({ clientId, clean: false })))
    cleanups.push(() => void ((stopped = true), socket.destroy()))
  }
  connectTo(0)
}

it("a persistent session's window in flight is acknowledged, not delivered again", async () => {
  const [a, b] = await twoGateways('gclose-sub')
  const seen: string[] = []
  windowedSession([a, b], 'gclose-window', seen)
  const pub = await connectMqtt(b.url, { clientId: 'gclose-winpub' })
  cleanups.push(() => pub.endAsync(true))
  // Counted from when B knows the session's subscription (subscriptions travel over the bus).
  for (let probe = 0; !seen.includes(`probe${probe - 1}`); probe++) {
    await pub.publishAsync('g/win', `probe${probe}`, { qos: 1 })
    await sleep(50)
  }
  seen.length = 0
  const publishing = publishAll(pub, 'g/win', 16)
  await eventually(() => seen.length >= N / 4, 10_000)
  await a.close()
  await publishing
  await eventually(() => new Set(seen.filter((p) => !p.startsWith('probe'))).size === N, 20_000)
  expect(duplicatesOf(seen.filter((p) => !p.startsWith('probe'))), 'delivered twice').toBe(0)
}, 60_000)
