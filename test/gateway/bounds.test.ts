import type { IClientOptions } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import {
  collect,
  connectMqtt,
  eventually,
  startTestGateway,
  type TestGateway,
} from '../helpers/gateway.ts'
import { INTERNAL_USERNAME, internalCredential } from '../../services/common/internal-credential.ts'
import type { GatewayOptions } from '../../services/gateway/index.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { resumeSession, startGatewayPair } from './fixture.ts'
import { connectPacket, rawClient } from './raw.ts'

/** The bounds on shared state (README, Bounds): each with its policy and its counter. */
describe('bounds on what clients can make the gateways keep', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  /** One gateway on its own in-process bus, closed after the test. */
  async function gateway(tag: string, options: Partial<GatewayOptions> = {}) {
    const bus = createInProcessBus({ prefix: uniquePrefix(tag) })
    const gw = await startTestGateway({ bus, ...options })
    closers.push(
      () => bus.close(),
      () => gw.close()
    )
    return { bus, gw }
  }

  async function client(gw: TestGateway, clientId: string, clean = true) {
    const c = await connectMqtt(gw.url, { clientId, clean })
    closers.push(() => c.end(true))
    return c
  }

  async function resume(gw: TestGateway, clientId: string, options: IClientOptions = {}) {
    const { client, got } = await resumeSession(gw.url, clientId, options)
    closers.push(() => client.end(true))
    return got
  }

  async function offlineSession(gw: TestGateway, clientId: string, filter: string) {
    const c = await client(gw, clientId, false)
    await c.subscribeAsync(filter, { qos: 1 })
    await c.endAsync()
  }

  it('a full session queue takes no more, across gateways, and counts what it refused', async () => {
    const pair = await startGatewayPair('bq', {
      a: { storeLimits: { sessionMaxQueued: 10 } },
      b: { storeLimits: { sessionMaxQueued: 10 } },
    })
    closers.push(() => pair.close())
    await offlineSession(pair.a, 'sleeper', 'q/#')
    const onA = await client(pair.a, 'pub-a')
    const onB = await client(pair.b, 'pub-b')
    for (let i = 0; i < 8; i++) await onA.publishAsync(`q/${i}`, 'x', { qos: 1 })
    // Gateway b counts the queue gateway a filled: 2 more fit, 6 are refused there.
    for (let i = 8; i < 16; i++) await onB.publishAsync(`q/${i}`, 'x', { qos: 1 })
    // (aedes acknowledges a QoS 1 PUBLISH before its queue writes finish: wait for the count.)
    await eventually(() => pair.b.stats().queueFull === 6)

    const got = await resume(pair.b, 'sleeper')
    await got.waitFor(10)
    await new Promise((r) => setTimeout(r, 300))
    // The oldest ten: a full queue drops new messages, as Mosquitto's does. (Order holds per
    // publisher; two gateways' messages within one millisecond may come either way.)
    const topics = got.messages.map((m) => Number(m.topic.slice(2)))
    expect([...topics].sort((x, y) => x - y)).toEqual(Array.from({ length: 10 }, (_, i) => i))
    expect(topics.filter((i) => i < 8)).toEqual([0, 1, 2, 3, 4, 5, 6, 7])
  })

  it('a bridge backlog has its own, larger bound', async () => {
    const { gw } = await gateway('bb', { storeLimits: { sessionMaxQueued: 2 } })
    await offlineSession(gw, 'plain', 'q/#')
    const pub = await client(gw, 'pub')
    for (let i = 0; i < 5; i++) await pub.publishAsync(`q/${i}`, 'x', { qos: 1 })
    await eventually(() => gw.stats().queueFull === 3)
  })

  it('a long queue comes back whole and in order, read a page at a time', async () => {
    const { gw } = await gateway('bp')
    await offlineSession(gw, 'long', 'p/#')
    const pub = await client(gw, 'pub')
    const n = 1_300 // more than two pages of 512
    await Promise.all(
      Array.from({ length: n }, (_, i) => pub.publishAsync(`p/${i % 7}`, String(i), { qos: 1 }))
    )
    const got = await resume(gw, 'long')
    await got.waitFor(n, 15_000)
    expect(got.messages.map((m) => Number(m.payload))).toEqual(
      Array.from({ length: n }, (_, i) => i)
    )
  })

  it('retained messages stop at the bound on every gateway; replacing one still works', async () => {
    const pair = await startGatewayPair('br', {
      a: { storeLimits: { maxRetainedMessages: 5 } },
      b: { storeLimits: { maxRetainedMessages: 5 } },
    })
    closers.push(() => pair.close())
    const onA = await client(pair.a, 'ra')
    for (let i = 0; i < 5; i++) await onA.publishAsync(`r/${i}`, `v${i}`, { qos: 1, retain: true })
    await eventually(() => pair.b.stats().retained === 5)
    const onB = await client(pair.b, 'rb')
    await onB.publishAsync('r/new', 'no room', { qos: 1, retain: true })
    await onB.publishAsync('r/0', 'replaced', { qos: 1, retain: true })
    expect(pair.b.stats().retainedRefused).toBe(1)

    const reader = await client(pair.a, 'reader')
    const got = collect(reader)
    await reader.subscribeAsync('r/#', { qos: 1 })
    await got.waitFor(5)
    await new Promise((r) => setTimeout(r, 200))
    expect(got.messages.map((m) => `${m.topic}=${m.payload}`).sort()).toEqual([
      'r/0=replaced',
      'r/1=v1',
      'r/2=v2',
      'r/3=v3',
      'r/4=v4',
    ])
  })

  it('a client holding more QoS 2 messages than allowed without PUBREL is cut, alone', async () => {
    const { gw } = await gateway('b2', { limits: { maxInboundQos2: 3 } })
    const bystander = await client(gw, 'bystander')
    const got = collect(bystander)
    await bystander.subscribeAsync('z/#', { qos: 1 })

    const hoarder = await rawClient(gw.ports.mqtt)
    closers.push(() => hoarder.end())
    hoarder.send(connectPacket({ clientId: 'hoarder' }))
    await hoarder.next('connack')
    for (let id = 1; id <= 4; id++) {
      hoarder.send({
        cmd: 'publish',
        topic: 'h/x',
        payload: Buffer.alloc(1000),
        qos: 2,
        retain: false,
        dup: false,
        messageId: id,
      })
    }
    await hoarder.closed
    expect(gw.stats().inboundQos2Exceeded).toBe(1)
    const pub = await client(gw, 'pub')
    await pub.publishAsync('z/1', 'still here', { qos: 1 })
    await got.waitFor(1)
  })

  it('a persistent session unseen past sessionExpirySec ends; connected ones and bridges stay', async () => {
    const { bus, gw } = await gateway('bx', { limits: { sessionExpiryMs: 400 } })
    await offlineSession(gw, 'gone', 'x/#')
    const bridgeId = 'ub-bridge-kept'
    const bridge = await connectMqtt(gw.url, {
      clientId: bridgeId,
      clean: false,
      username: INTERNAL_USERNAME,
      password: await internalCredential(bus),
    })
    await bridge.subscribeAsync('x/#', { qos: 1 })
    await bridge.endAsync()
    const staying = await client(gw, 'staying', false)
    await staying.subscribeAsync('x/#', { qos: 1 })
    const stayingGot = collect(staying)
    const pub = await client(gw, 'pub')
    await pub.publishAsync('x/1', 'queued', { qos: 1 })

    await eventually(() => gw.stats().sessionsExpired === 1, 5_000)
    await new Promise((r) => setTimeout(r, 600)) // more sweeps: still only the one
    expect(gw.stats().sessionsExpired).toBe(1)

    // The expired session comes back empty: no session, no queue.
    const backGot = await resume(gw, 'gone')
    // The connected one kept its subscription throughout.
    await pub.publishAsync('x/2', 'live', { qos: 1 })
    await stayingGot.waitFor(2)
    await new Promise((r) => setTimeout(r, 200))
    expect(backGot.messages).toEqual([])
    const bridgeGot = await resume(gw, bridgeId, {
      username: INTERNAL_USERNAME,
      password: await internalCredential(bus),
    })
    await bridgeGot.waitFor(2)
  })
})
