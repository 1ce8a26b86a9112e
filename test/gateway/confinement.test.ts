import { randomBytes } from 'node:crypto'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createStoreClient } from '../../services/store/index.ts'
import { collectGatewayStats } from '../../services/gateway/index.ts'
import { connectMqtt, sleep, type TestGateway } from '../helpers/gateway.ts'
import {
  acceptedBridge as acceptBridge,
  startGatewayPair,
  subscribeGranted,
  type GatewayPair,
} from './fixture.ts'

type Got = Array<{ topic: string; payload: string }>

/**
 * A downstream's bridge gets exactly its grants on every path a message takes to it: live, a
 * resumed session's queue (on the same gateway or another), and retained messages. aedes stores a
 * whole SUBSCRIBE once any one of its filters is allowed, so a refused `#` in it came back on
 * reconnect and carried every topic; this is the reproduction from the trust-boundary review.
 */
describe('a bridge is confined to its grants', () => {
  let pair: GatewayPair
  let busA: Bus
  let a: TestGateway, b: TestGateway
  const clients: MqttClient[] = []

  const acceptedBridge = (grants: string[], identity?: { instanceId: string; secret: string }) =>
    acceptBridge(busA, grants, identity)

  /** Connect with a listener in place before the CONNACK, so a resumed queue is seen whole. */
  async function connectCollecting(gw: TestGateway, options: Parameters<typeof connectMqtt>[1]) {
    const got: Got = []
    const c = await connectMqtt(gw.url, options, (client) =>
      client.on('message', (topic, payload) => got.push({ topic, payload: payload.toString() }))
    )
    clients.push(c)
    return { c, got }
  }

  beforeAll(async () => {
    pair = await startGatewayPair('gwconf')
    ;({ busA, a, b } = pair)
  })
  afterAll(async () => {
    for (const c of clients) c.end(true)
    await pair?.close()
  })

  it.each([
    ['the same gateway', () => a],
    ['another gateway', () => b],
  ])(
    'keeps a refused filter out of a persistent session resumed on %s',
    async (_where, resumeOn) => {
      const { instanceId, secret } = await acceptedBridge(['acme/plant1'])
      const login = { username: instanceId, password: secret, clientId: `${instanceId}-s` }
      const first = await connectCollecting(a, { ...login, clean: false })
      const granted = await subscribeGranted(first.c, {
        'acme/plant1/x': { qos: 1 },
        '#': { qos: 1 },
      })
      expect(granted).toEqual([1, 128])
      await first.c.endAsync()

      const publisher = await connectMqtt(a.url)
      clients.push(publisher)
      await publisher.publishAsync('other/tenant/secret', 'queued-outside', { qos: 1 })
      await publisher.publishAsync('acme/plant1/x', 'queued-inside', { qos: 1 })

      const denied = async () =>
        (await collectGatewayStats(busA)).reduce((n, g) => n + g.deliveryDenied, 0)
      const deniedBefore = await denied()
      const resumed = await connectCollecting(resumeOn(), { ...login, clean: false })
      await publisher.publishAsync('other/tenant/secret', 'live-outside', { qos: 1 })
      await publisher.publishAsync('acme/plant1/x', 'live-inside', { qos: 1 })
      await sleep(700)
      expect(resumed.got).toEqual([
        { topic: 'acme/plant1/x', payload: 'queued-inside' },
        { topic: 'acme/plant1/x', payload: 'live-inside' },
      ])
      // The refused `#` was never stored, so nothing outside had to be held back on delivery.
      expect((await denied()) - deniedBefore).toBe(0)
    }
  )

  it('re-checks the grants on delivery when a bridge resumes a session stored under wider grants', async () => {
    // Accepted for `acme`, the bridge holds a persistent session on `acme/#`; the operator then
    // narrows it (revoke, and accept its new request for `acme/plant1` only).
    const { instanceId, secret, requestId } = await acceptedBridge(['acme'])
    const login = { username: instanceId, password: secret, clientId: `${instanceId}-w` }
    const first = await connectCollecting(a, { ...login, clean: false })
    expect(await subscribeGranted(first.c, { 'acme/#': { qos: 1 } })).toEqual([1])
    await first.c.endAsync()
    const call = createStoreClient({ bus: busA }).call
    const operator = { kind: 'operator' as const }
    await call('event', {
      machine: 'request',
      id: requestId,
      event: { type: 'request.revoke' },
      actor: operator,
    })
    await acceptedBridge(['acme/plant1'], { instanceId, secret })

    const publisher = await connectMqtt(a.url)
    clients.push(publisher)
    await publisher.publishAsync('acme/plant2/z', 'queued-outside', { qos: 1 })
    await publisher.publishAsync('acme/plant1/z', 'queued-inside', { qos: 1 })
    const before = (await collectGatewayStats(busA)).find((g) => g.gatewayId === 'a')!
    const resumed = await connectCollecting(a, { ...login, clean: false })
    await publisher.publishAsync('acme/plant2/z', 'live-outside', { qos: 1 })
    await sleep(700)
    expect(resumed.got).toEqual([{ topic: 'acme/plant1/z', payload: 'queued-inside' }])
    // The queued copy was held back on delivery; the live one never matched: a restored
    // subscription is authorized again, and `acme/#` is now refused to this bridge.
    const after = (await collectGatewayStats(busA)).find((g) => g.gatewayId === 'a')!
    expect(after.deliveryDenied - before.deliveryDenied).toBe(1)
  })

  it("refuses a bridge that presents a plant client's id, and the plant client loses nothing", async () => {
    const { instanceId, secret } = await acceptedBridge(['acme/plant1'])
    const clientId = `plant-client-${randomBytes(3).toString('hex')}`
    const plant = await connectCollecting(a, { clientId, clean: false })
    await subscribeGranted(plant.c, { 'acme/plant1/#': { qos: 1 } })
    await plant.c.endAsync()
    const publisher = await connectMqtt(a.url)
    clients.push(publisher)
    await publisher.publishAsync('acme/plant1/q', 'for-the-plant', { qos: 1 })

    for (const gw of [a, b]) {
      const refused = await connectMqtt(gw.url, {
        clientId,
        clean: false,
        username: instanceId,
        password: secret,
      }).then(
        () => null,
        (err: { code?: number }) => err.code
      )
      expect(refused).toBe(2) // CONNACK 2: identifier rejected
    }
    const back = await connectCollecting(a, { clientId, clean: false })
    await sleep(500)
    expect(back.got).toEqual([{ topic: 'acme/plant1/q', payload: 'for-the-plant' }])
    // And a connected client is not kicked by the attempt.
    const kicked = connectMqtt(a.url, { clientId, username: instanceId, password: secret })
    await expect(kicked).rejects.toMatchObject({ code: 2 })
    await sleep(200)
    expect(back.c.connected).toBe(true)
  })

  it("refuses a local client that presents a bridge session's id, so a bridge's backlog stays its own", async () => {
    const refused = await connectMqtt(a.url, { clientId: 'ub-bridge-UP1', clean: false }).then(
      () => null,
      (err: { code?: number }) => err.code
    )
    expect(refused).toBe(2)
    const ok = await connectMqtt(a.url, { clientId: '' })
    clients.push(ok)
    expect(ok.connected).toBe(true)
  })

  it('delivers no retained message outside the grants, and counts what it held back', async () => {
    const { instanceId, secret } = await acceptedBridge(['acme/plant1'])
    const publisher = await connectMqtt(a.url)
    clients.push(publisher)
    await publisher.publishAsync('other/retained', 'r-outside', { qos: 1, retain: true })
    await publisher.publishAsync('acme/plant1/r', 'r-inside', { qos: 1, retain: true })
    const before = (await collectGatewayStats(busA)).find((s) => s.gatewayId === 'a')!
    const bridge = await connectCollecting(a, {
      username: instanceId,
      password: secret,
      clientId: `${instanceId}-r`,
    })
    const granted = await subscribeGranted(bridge.c, {
      'acme/plant1/#': { qos: 1 },
      'other/#': { qos: 1 },
    })
    expect(granted).toEqual([1, 128])
    await sleep(500)
    expect(bridge.got).toEqual([{ topic: 'acme/plant1/r', payload: 'r-inside' }])
    const after = (await collectGatewayStats(busA)).find((s) => s.gatewayId === 'a')!
    expect(after.subscribeDenied - before.subscribeDenied).toBe(1)
  })
})
