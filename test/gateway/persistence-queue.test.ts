import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { afterEach, describe, expect, it } from 'vitest'
import type { Bus, KvBucket } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { silentLogger } from '../../services/common/log.ts'
import type { WirePacket } from '../../services/gateway/codec.ts'
import { createBusPersistence } from '../../services/gateway/persistence.ts'
import { LAST_READ_MAX } from '../../services/gateway/persistence/queue-read.ts'
import { INTERNAL_USERNAME, internalCredential } from '../../services/common/internal-credential.ts'
import { collect, connectMqtt, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus, natsUrl, uniquePrefix } from '../helpers/nats.ts'

/** A bus whose `gw_outgoing` bucket answers the first `stuck` keys() calls never. */
function withStuckListing(bus: Bus, stuck: number): Bus {
  return Object.assign(Object.create(bus) as Bus, {
    async kv(name: string, options?: { ttlMs?: number }): Promise<KvBucket> {
      const kv = await bus.kv(name, options)
      if (name !== 'gw_outgoing') return kv
      let calls = 0
      return Object.assign(Object.create(kv) as KvBucket, {
        keys(filter?: string) {
          return ++calls <= stuck ? new Promise<string[]>(() => {}) : kv.keys(filter)
        },
      })
    },
  })
}

async function drain(stream: AsyncIterable<WirePacket>): Promise<WirePacket[]> {
  const out: WirePacket[] = []
  for await (const p of stream) out.push(p)
  return out
}

describe('a session queue whose KV listing does not finish', () => {
  const buses: Bus[] = []
  afterEach(async () => {
    await Promise.all(buses.splice(0).map((b) => b.close()))
  })

  const queued: WirePacket = {
    cmd: 'publish',
    topic: 'q/1',
    payload: Buffer.from('kept'),
    qos: 1,
    retain: false,
    brokerId: 'b1',
    brokerCounter: 1,
  }

  it('is listed again and delivered', async () => {
    const bus = createInProcessBus({ prefix: uniquePrefix('pq') })
    buses.push(bus)
    const p = await createBusPersistence({
      bus: withStuckListing(bus, 2),
      log: silentLogger(),
      queueListMs: 20,
    })
    await p.outgoingEnqueueCombi([{ clientId: 'c1' }], queued)
    const got = await drain(p.outgoingStream({ id: 'c1' }))
    expect(got).toEqual([{ ...queued, payload: Buffer.from('kept') }])
  })

  it('fails the stream rather than hanging when every listing is stuck', async () => {
    const bus = createInProcessBus({ prefix: uniquePrefix('pq') })
    buses.push(bus)
    const p = await createBusPersistence({
      bus: withStuckListing(bus, Infinity),
      log: silentLogger(),
      queueListMs: 5,
    })
    await expect(drain(p.outgoingStream({ id: 'c1' }))).rejects.toThrow(/did not finish/)
  })
})

describe('a message authorizeForward refuses to a persistent session', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  // aedes queues a QoS 1 message for every persistent subscriber before delivery, and asks the
  // persistence to clear it, by origin and counter, when `authorizeForward` then refuses it live.
  it('leaves nothing queued for it (no-local of a bridge session)', async () => {
    const bus = createInProcessBus({ prefix: uniquePrefix('pq') })
    const gw = await startTestGateway({ bus, anonymous: 'always' })
    cleanups.push(
      () => bus.close(),
      () => gw.close()
    )
    const bridge = await connectMqtt(gw.url, {
      clientId: 'ub-bridge-U1',
      clean: false,
      username: INTERNAL_USERNAME,
      password: await internalCredential(bus),
    })
    cleanups.push(() => bridge.endAsync(true))
    const got = collect(bridge)
    await bridge.subscribeAsync('x/#', { qos: 1 })
    const other = await connectMqtt(gw.url, { clientId: 'other', clean: false })
    cleanups.push(() => other.endAsync(true))
    const otherGot = collect(other)
    await other.subscribeAsync('x/#', { qos: 1 })

    for (let i = 0; i < 20; i++) await bridge.publishAsync(`x/${i}`, String(i), { qos: 1 })
    // The last one, from another client, reaches the bridge: everything before it was decided.
    await other.publishAsync('x/end', 'end', { qos: 1 })
    await otherGot.waitFor(20)
    await got.waitFor(1)
    expect(got.messages.map((m) => m.topic)).toEqual(['x/end'])

    // Both sessions acknowledged everything they got: no queued copy may remain.
    const outgoing = await bus.kv('gw_outgoing')
    let left = await outgoing.keys()
    for (let i = 0; i < 50 && left.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 20))
      left = await outgoing.keys()
    }
    expect(left).toEqual([])
  })
})

describe('a persistent session on NATS, once it acknowledged everything', () => {
  const cleanups: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c()
  })

  // A KV delete leaves a marker per key until the bucket's 7-day max age: one per message, which
  // at 1,000 msg/s would be ~14 GB a day on the NATS server. Erased entries leave nothing.
  it('leaves no message in the queue bucket, not even delete markers', async () => {
    const bus = await createTestNatsBus({ prefix: uniquePrefix('pqnats') })
    const gw = await startTestGateway({ bus, anonymous: 'always' })
    const nc = await connect({ servers: natsUrl() })
    cleanups.push(
      () => nc.close(),
      () => bus.close(),
      () => gw.close()
    )
    const sub = await connectMqtt(gw.url, { clientId: 'pq-persistent', clean: false })
    cleanups.push(() => sub.endAsync(true))
    const got = collect(sub)
    await sub.subscribeAsync('pq/#', { qos: 1 })
    const pub = await connectMqtt(gw.url)
    cleanups.push(() => pub.endAsync(true))
    for (let i = 0; i < 200; i++) await pub.publishAsync('pq/x', String(i), { qos: 1 })
    await got.waitFor(200)

    const jsm = await jetstreamManager(nc)
    const stream = `KV_${(await bus.kv('gw_outgoing')).name}`
    let messages = Infinity
    for (let i = 0; i < 100 && messages > 0; i++) {
      messages = (await jsm.streams.info(stream)).state.messages
      if (messages > 0) await new Promise((r) => setTimeout(r, 20))
    }
    expect(messages).toBe(0)
  })
})

describe('a drain with live messages coming', () => {
  const buses: Bus[] = []
  afterEach(async () => {
    await Promise.all(buses.splice(0).map((b) => b.close()))
  })

  /**
   * Drain `queued` messages of c1 while live ones come, one for every `handedPerLive` handed
   * out: as the gate does, a live message is left to the queue until the last read starts, held
   * after.
   */
  async function drainWithLive(queued: number, handedPerLive: number) {
    const bus = createInProcessBus({ prefix: uniquePrefix('pq') })
    buses.push(bus)
    const p = await createBusPersistence({ bus, log: silentLogger() })
    let counter = 0
    const next = (): WirePacket => ({
      cmd: 'publish',
      topic: 'q/live',
      payload: Buffer.from('x'),
      qos: 1,
      retain: false,
      brokerId: 'b1',
      brokerCounter: ++counter,
    })
    for (let i = 0; i < queued; i++) await p.outgoingEnqueueCombi([{ clientId: 'c1' }], next())
    let holding = false
    const handedOut: number[] = []
    const held: number[] = []
    const queue = p.queueCatchUp.queueOf('c1', {
      holdLive: () => (holding = true),
      caughtUp: () => true,
    })
    for await (const q of queue) {
      handedOut.push((q as WirePacket).brokerCounter!)
      if (handedOut.length % handedPerLive !== 0) continue
      const live = next()
      if (holding) held.push(live.brokerCounter!)
      else await p.outgoingEnqueueCombi([{ clientId: 'c1' }], live)
      if (handedOut.length >= 50_000) break
    }
    const all = Array.from({ length: counter }, (_, i) => i + 1)
    return { holding, handedOut, held, all }
  }

  it('reads a queue of at most LAST_READ_MAX once: live messages are held from its start', async () => {
    // One live message for each one handed out: a drain that never gains on them by itself.
    const { holding, handedOut, held, all } = await drainWithLive(1_000, 1)
    expect(holding).toBe(true)
    // Before, the last read began at a page (64) of new entries, or at no more than the read
    // before: 3,000 handed out, every live message queued and read back.
    expect(handedOut).toHaveLength(1_000)
    expect(held).toHaveLength(1_000)
    expect([...handedOut, ...held]).toEqual(all)
  })

  it('reads a longer queue until a read finds at most LAST_READ_MAX, every message once and in order', async () => {
    // One live message for every two handed out: each read finds half as many as the one before.
    // Nothing is acknowledged here: the queue and what comes meanwhile stay within its bound
    // (sessionMaxQueued, 10,000).
    const queued = LAST_READ_MAX + 2_000
    const { holding, handedOut, held, all } = await drainWithLive(queued, 2)
    expect(holding).toBe(true)
    expect(handedOut.length).toBeGreaterThan(queued)
    expect(handedOut.length).toBeLessThan(queued * 2)
    expect([...handedOut, ...held]).toEqual(all)
  })
})
