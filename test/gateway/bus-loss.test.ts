import mqtt from 'mqtt'
import { afterEach, expect, it } from 'vitest'
import { connectMqtt, eventually, sleep, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus, natsUrl, uniquePrefix } from '../helpers/nats.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/**
 * A gateway cut off from NATS by a silent partition (no reset: its NATS client notices only after
 * minutes of missed pings) kept its clients. A persistent session on it received nothing while
 * the other gateway queued its messages and sent their live copies to a gateway that never got
 * them (npm run chaos, gateway-nats-partition: 14,065 acknowledged messages undelivered at the
 * end of the run). Now the gateway drops its clients once three round trips to the bus failed
 * (bus-loss.ts), refuses new ones meanwhile, and the session resumes on the other gateway.
 */
it('drops its clients when it stops reaching the bus, so a session moves to a gateway that does', async () => {
  const prefix = uniquePrefix('busloss')
  const natsPort = Number(new URL(natsUrl()).port || 4222)
  const path = await startTcpProxy({ targetPort: natsPort })
  cleanups.push(() => path.close())
  const busB = await createTestNatsBus({ prefix })
  cleanups.push(() => busB.close())
  const busA = await createTestNatsBus({ prefix, url: `nats://127.0.0.1:${path.port}` })
  cleanups.push(() => busA.close().catch(() => {}))
  const a = await startTestGateway({ bus: busA, anonymous: 'always', busCheckMs: 300 })
  cleanups.push(() => a.close())
  const b = await startTestGateway({ bus: busB, anonymous: 'always' })
  cleanups.push(() => b.close())

  const received = new Set<string>()
  const sub = mqtt.connect({
    protocolVersion: 4,
    clientId: 'busloss-sub',
    clean: false,
    servers: [a, b].map((g) => ({ host: '127.0.0.1', port: g.ports.mqtt! })),
    reconnectPeriod: 100,
  })
  sub.on('error', () => {})
  cleanups.push(() => sub.endAsync(true))
  sub.on('message', (_t, payload) => received.add(payload.toString()))
  await new Promise<void>((r) => sub.once('connect', () => r()))
  await sub.subscribeAsync('busloss/n', { qos: 1 })

  const pub = await connectMqtt(b.url, { clientId: 'busloss-pub' })
  cleanups.push(() => pub.endAsync(true))
  // Counted from when B knows the subscription (subscriptions travel over the bus).
  for (let probe = 0; !received.has(`probe${probe - 1}`); probe++) {
    await pub.publishAsync('busloss/n', `probe${probe}`, { qos: 1 })
    await sleep(50)
  }
  const acked: string[] = []
  let stop = false
  const publishing = (async () => {
    for (let n = 0; !stop; n++) {
      await pub.publishAsync('busloss/n', String(n), { qos: 1 })
      acked.push(String(n))
      await sleep(20)
    }
  })()
  await eventually(() => acked.length >= 20, 5_000)
  path.stall() // A's NATS connection stays open and carries nothing
  cleanups.push(() => path.unstall())
  await sleep(3_000)
  stop = true
  await publishing
  await eventually(() => acked.every((n) => received.has(n)), 15_000).catch(() => {})
  const missing = acked.filter((n) => !received.has(n))
  expect(missing.length, `${missing.length} of ${acked.length} acknowledged never arrived`).toBe(0)
  expect(a.stats().busLossDisconnects).toBeGreaterThan(0)

  // Once the bus answers again, the gateway takes clients again.
  path.unstall()
  let back = false
  for (const deadline = Date.now() + 30_000; !back && Date.now() < deadline; await sleep(250)) {
    back = await connectMqtt(a.url, { clientId: 'busloss-back', connectTimeout: 2_000 }).then(
      (c) => (c.end(true), true),
      () => false
    )
  }
  expect(back, 'gateway A accepts clients again after the heal').toBe(true)
}, 90_000)
