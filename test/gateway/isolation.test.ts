import type { MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import type { BrokerLimits } from '../../services/gateway/index.ts'
import {
  collect,
  connectMqtt,
  eventually,
  startTestGateway,
  type TestGateway,
} from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { resumeSession } from './fixture.ts'
import { connectPacket, rawClient, rawSubscriber, type RawClient } from './raw.ts'

/**
 * One client that stops reading must not stop delivery to the others (ARCHITECTURE.md §10):
 * a subscriber whose socket is full, and a persistent session that resumes a backlog and never
 * reads. The first is cut as a slow consumer once its connection's pending deliveries pass the
 * bound; the second is still catching up, so what comes meanwhile stays in its queue. Either way
 * its persistent session keeps every QoS 1 message for its next connection.
 */
describe('a client that stops reading', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  const PAYLOAD = Buffer.alloc(32 * 1024, 0x61) // 32 KiB: a few hundred fill any socket buffer
  const COUNT = 400

  async function setUp(
    limits: Partial<BrokerLimits> = { maxPendingMessages: 100, maxPendingBytes: 1 << 30 }
  ) {
    const bus: Bus = createInProcessBus({ prefix: uniquePrefix('iso') })
    const gw: TestGateway = await startTestGateway({ bus, limits })
    closers.push(
      () => bus.close(),
      () => gw.close()
    )
    const healthy = await connectMqtt(gw.url, { clientId: 'healthy' })
    const publisher = await connectMqtt(gw.url, { clientId: 'publisher' })
    closers.push(
      () => healthy.end(true),
      () => publisher.end(true)
    )
    await healthy.subscribeAsync('t/#', { qos: 1 })
    return { gw, healthy, publisher, got: collect(healthy) }
  }

  /** A persistent session on `t/#` from a bare socket, so the test decides when it reads. */
  async function stalledSubscriber(
    gw: TestGateway,
    clientId: string,
    { clean = false, qos = 1 }: { clean?: boolean; qos?: 0 | 1 } = {}
  ): Promise<RawClient> {
    const raw = await rawSubscriber(gw.ports.mqtt, { clientId, clean, topic: 't/#', qos })
    closers.push(() => raw.end())
    return raw
  }

  function publishAll(publisher: MqttClient, from: number, count: number) {
    return Promise.all(
      Array.from({ length: count }, (_, i) =>
        publisher.publishAsync(`t/${from + i}`, PAYLOAD, { qos: 1 })
      )
    )
  }

  it('does not stall the others while subscribed, and catches up from its queue on the same connection', async () => {
    const { gw, publisher, got } = await setUp()
    const stalled = await stalledSubscriber(gw, 'stalled-live')
    stalled.socket.pause() // stops reading: its receive window fills

    const sent = publishAll(publisher, 0, COUNT)
    // Without the bound, 100 deliveries waiting for the stalled socket held every dispatch slot
    // and the healthy subscriber got nothing more until aedes' 60 s drain timeout.
    await got.waitFor(COUNT, 15_000)
    await sent
    // At the bound its messages are left to its queue, not held in memory, and it is not cut
    // (before: cut as a slow consumer, and a bridge link so cut dialled again every ~10,000).
    await eventually(() => gw.stats().queueCatchUps === 1, 5_000)
    expect(gw.stats().slowConsumers).toBe(0)

    // Reading again, on the same connection: every message once, in the order published.
    stalled.socket.resume()
    const published = () => stalled.packets.filter((p) => p.cmd === 'publish')
    await eventually(() => published().length >= COUNT, 20_000)
    await new Promise((r) => setTimeout(r, 300)) // a duplicate would come now
    expect(published().map((p) => (p as { topic: string }).topic)).toEqual(
      Array.from({ length: COUNT }, (_, i) => `t/${i}`)
    )
    expect(stalled.socket.destroyed).toBe(false)
    expect(gw.stats().slowConsumers).toBe(0)
  }, 40_000)

  it('cuts a clean session that stops reading at the bound: nothing else holds its messages', async () => {
    const { gw, publisher, got } = await setUp()
    const raw = await stalledSubscriber(gw, 'stalled-clean', { clean: true })
    raw.socket.pause()

    await publishAll(publisher, 0, COUNT)
    await got.waitFor(COUNT, 15_000)
    await eventually(() => gw.stats().slowConsumers === 1, 5_000)
    expect(gw.stats().queueCatchUps).toBe(0)
  }, 40_000)

  it('does not stall the others while it resumes a backlog it never reads', async () => {
    const { gw, publisher, got } = await setUp()
    const stalled = await stalledSubscriber(gw, 'stalled-resume')
    stalled.end()
    await publishAll(publisher, 0, COUNT) // its backlog
    await got.waitFor(COUNT, 15_000)

    const again = await rawClient(gw.ports.mqtt)
    closers.push(() => again.end())
    again.send(connectPacket({ clientId: 'stalled-resume', clean: false, keepalive: 0 }))
    again.socket.pause() // resumes its session and never reads the backlog
    await eventually(() => gw.stats().clients >= 3, 5_000)

    // Live messages for the resuming session stay in its queue behind its backlog (it is still
    // catching up, connack-gate.ts); they must not hold anyone else's deliveries.
    const sent = publishAll(publisher, COUNT, COUNT)
    await got.waitFor(2 * COUNT, 15_000)
    await sent
    // Nothing for it waits in the gateway's memory, so it need not be cut.
    expect(gw.stats().slowConsumers).toBe(0)
    again.end()

    const back = await reconnect(gw, 'stalled-resume')
    await back.waitFor(2 * COUNT, 20_000)
    expect(new Set(back.messages.map((m) => m.topic)).size).toBe(2 * COUNT)
  }, 40_000)

  it('drops QoS 0 past the bound for a subscriber that stops reading, and keeps its connection', async () => {
    const { gw, publisher, got } = await setUp()
    const raw = await stalledSubscriber(gw, 'stalled-qos0', { clean: true, qos: 0 })
    raw.socket.pause() // its receive window fills, then its pending deliveries reach the bound

    await publishAll(publisher, 0, COUNT)
    await got.waitFor(COUNT, 15_000)
    // What it could not take was QoS 0: dropped and counted, and it was not cut for it (a bridge
    // link carrying QoS 0 faster than its upstream took it lost its connection, not the messages).
    await eventually(() => gw.stats().qos0Dropped > 0, 5_000)
    expect(gw.stats().slowConsumers).toBe(0)

    raw.socket.resume()
    raw.send({ cmd: 'pingreq' })
    await raw.next('pingresp', 10_000)
    const delivered = raw.packets.filter((p) => p.cmd === 'publish').length
    expect(delivered + gw.stats().qos0Dropped).toBe(COUNT)
  }, 40_000)

  // Below the pending bound, nothing else ends a connection whose peer takes nothing: a peer gone
  // without a FIN, with keep-alive 0, held its deliveries until TCP gave up (~15 min), or forever.
  const unbounded = { maxPendingMessages: 1_000_000, maxPendingBytes: 1 << 30 }

  it('closes a connection whose socket takes nothing for writeStallMs; its session keeps every message', async () => {
    const { gw, publisher, got } = await setUp({ ...unbounded, writeStallMs: 500 })
    const stalled = await stalledSubscriber(gw, 'stalled-stuck')
    stalled.socket.pause()

    const stuckAt = Date.now()
    await publishAll(publisher, 0, COUNT)
    await got.waitFor(COUNT, 15_000)
    await eventually(() => gw.stats().writeStalls === 1, 5_000)
    // Not before the deadline: what it had pending was not written for 500 ms.
    expect(Date.now() - stuckAt).toBeGreaterThanOrEqual(500)
    await eventually(() => gw.stats().clients === 2, 5_000) // the healthy one and the publisher
    expect(gw.stats().slowConsumers).toBe(0)
    stalled.end()

    const back = await reconnect(gw, 'stalled-stuck')
    await back.waitFor(COUNT, 20_000)
    expect(new Set(back.messages.map((m) => m.topic)).size).toBe(COUNT)
    // The closed connection is not followed again (its failed writes come after its close).
    await new Promise((r) => setTimeout(r, 1_000))
    expect(gw.stats().writeStalls).toBe(1)
  }, 40_000)

  it('keeps a reader that pauses for less than writeStallMs, and one when the deadline is off', async () => {
    const { gw, publisher, got } = await setUp({ ...unbounded, writeStallMs: 1_000 })
    const slow = await stalledSubscriber(gw, 'pausing')
    // Reads for 50 ms, stops for 300: slow, but its socket takes something each time.
    const pacing = setInterval(() => {
      slow.socket.resume()
      setTimeout(() => slow.socket.pause(), 50)
    }, 350)
    closers.push(() => clearInterval(pacing))
    slow.socket.pause()
    await publishAll(publisher, 0, COUNT)
    await got.waitFor(COUNT, 15_000)
    const published = () => slow.packets.filter((p) => p.cmd === 'publish').length
    await eventually(() => published() >= COUNT, 30_000)
    expect(gw.stats().writeStalls).toBe(0)
    expect(slow.socket.destroyed).toBe(false)

    const off = await setUp({ ...unbounded, writeStallMs: 0 })
    const stuck = await stalledSubscriber(off.gw, 'stuck-no-deadline')
    stuck.socket.pause()
    await publishAll(off.publisher, 0, COUNT)
    await off.got.waitFor(COUNT, 15_000)
    await new Promise((r) => setTimeout(r, 1_500))
    expect(off.gw.stats().writeStalls).toBe(0)
    expect(off.gw.stats().clients).toBe(3)
  }, 60_000)

  async function reconnect(gw: TestGateway, clientId: string) {
    const { client, got } = await resumeSession(gw.url, clientId)
    closers.push(() => client.end(true))
    return got
  }
})
