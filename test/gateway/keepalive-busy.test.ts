import { afterEach, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { connectMqtt, sleep, startTestGateway } from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/**
 * A client busy publishing QoS 1 sends nothing else: MQTT.js moves its PINGREQ on with every
 * packet it sends. Its PUBLISHes are what keeps it alive [MQTT-3.1.2-24]. The gateway's QoS 1
 * path (ack-after-store.ts) bypassed aedes' keep-alive refresh, and cut such a publisher 1.5 ×
 * keep-alive after its CONNECT (npm run chaos: both publishers at +15 s with keep-alive 10 s,
 * resending their unacknowledged window as duplicates).
 */
it('keeps a publisher alive on its QoS 1 PUBLISHes alone', async () => {
  const bus = createInProcessBus({ prefix: uniquePrefix('busy-ka') })
  const gw = await startTestGateway({ bus, anonymous: 'always' })
  cleanups.push(
    () => bus.close(),
    () => gw.close()
  )
  const pub = await connectMqtt(gw.url, { clientId: 'busy-ka', keepalive: 1 })
  cleanups.push(() => pub.endAsync(true))
  let pings = 0
  pub.on('packetsend', (p) => void (p.cmd === 'pingreq' && pings++))
  let closed = false
  pub.on('close', () => (closed = true))
  const until = Date.now() + 3_000 // twice past 1.5 × keep-alive
  for (let n = 0; Date.now() < until && !closed; n++) {
    await pub.publishAsync('busy/ka', String(n), { qos: 1 })
    await sleep(20)
  }
  expect(pings, 'the client sent no PINGREQ: only its PUBLISHes kept it alive').toBe(0)
  expect(closed, 'cut for keep-alive while publishing').toBe(false)
}, 20_000)
