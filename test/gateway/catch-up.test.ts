import { afterEach, describe, expect, it } from 'vitest'
import type { Bus, KvBucket } from '../../services/common/bus/bus.ts'
import { connectMqtt, eventually, sleep, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus, uniquePrefix } from '../helpers/nats.ts'
import { resumeSession, startGatewayPair, withQueueBucket, type GatewayPair } from './fixture.ts'
import { rawSubscriber } from './raw.ts'

/** Publish `count` numbered QoS 1 messages from `from` on, paced at `perMs` per ms. */
async function publishNumbered(
  url: string,
  from: number,
  count: number,
  perMs = Infinity,
  padTo = 0
) {
  const publisher = await connectMqtt(url, { clientId: `pub-${from}` })
  const started = Date.now()
  const sent: Array<Promise<unknown>> = []
  for (let i = 0; i < count; i++) {
    const due = started + i / perMs
    if (due - Date.now() > 1) await sleep(due - Date.now())
    const payload = String(from + i).padEnd(padTo) // trailing spaces: Number() still reads it
    sent.push(publisher.publishAsync(`c/${(from + i) % 7}`, payload, { qos: 1 }))
  }
  await Promise.all(sent)
  await publisher.endAsync()
}

/** A persistent session subscribed to `c/#` at QoS 1, then offline: what comes is queued. */
async function subscribeAndLeave(url: string, clientId: string): Promise<void> {
  const s = await connectMqtt(url, { clientId, clean: false })
  await s.subscribeAsync('c/#', { qos: 1 })
  await s.endAsync()
}

/**
 * A persistent session that resumes a backlog catches up from its queue: what is published while
 * it drains is read from the queue after the backlog, not held in the gateway's memory
 * (connack-gate.ts, persistence/outgoing.ts). Held, it passed the connection's outbound bound
 * and the session was cut as a slow consumer though it read as fast as it was sent to, and
 * every live message of every session catching up went out in one burst at the end.
 */
describe('a session catching up on its queue', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  const BACKLOG = 2_000
  const LIVE = 1_500

  async function pair(wrapBusB?: (bus: Bus) => Bus): Promise<GatewayPair> {
    // A small outbound bound on `b`: everything held for one connection counts against it.
    const limits = { maxPendingMessages: 50, maxPendingBytes: 1 << 30 }
    const p = await startGatewayPair('catch-up', { b: { limits }, ...(wrapBusB && { wrapBusB }) })
    closers.push(() => p.close())
    return p
  }

  it('gets its backlog and then what came meanwhile, in order, without being cut', async () => {
    const { a, b } = await pair()
    await subscribeAndLeave(a.url, 'catching-up')
    await publishNumbered(a.url, 0, BACKLOG)

    // Live messages start before the session is back, and go on while it drains and after.
    const live = publishNumbered(a.url, BACKLOG, LIVE, 2)
    await sleep(100)
    const { client, got } = await resumeSession(b.url, 'catching-up')
    closers.push(() => client.end(true))
    await live
    await got.waitFor(BACKLOG + LIVE, 20_000)

    // Each message at least once; first arrivals in publish order (one publisher at a time).
    const firsts: number[] = []
    const seen = new Set<number>()
    for (const m of got.messages) {
      const n = Number(m.payload)
      if (!seen.has(n)) firsts.push(n)
      seen.add(n)
    }
    expect(seen.size).toBe(BACKLOG + LIVE)
    expect(firsts).toEqual([...firsts].sort((x, y) => x - y))
    expect(b.stats().slowConsumers).toBe(0)
    expect(client.connected).toBe(true)
    // Its drain ended (ub_gateway_queue_drains).
    await eventually(() => b.stats().queueDrains === 0, 5_000)
  }, 40_000)

  it('counts a drain under way until it ends, also when its connection closes mid-drain', async () => {
    const { a, b } = await pair()
    await subscribeAndLeave(a.url, 'leaves')
    await publishNumbered(a.url, 0, BACKLOG)
    // Resumes and reads nothing: its drain waits for room behind the 50 it may have pending.
    const sub = await rawSubscriber(b.ports.mqtt, {
      clientId: 'leaves',
      clean: false,
      topic: 'c/#',
    })
    sub.socket.pause()
    await eventually(() => b.stats().queueDrains === 1, 10_000)
    sub.end()
    await eventually(() => b.stats().queueDrains === 0, 10_000)
    expect(b.stats().queueDrains).toBe(0)
  }, 40_000)

  it('loses nothing published around the moment it catches up', async () => {
    const { a, b } = await pair()
    for (let round = 0; round < 3; round++) {
      const id = `edge-${round}`
      await subscribeAndLeave(a.url, id)
      await publishNumbered(a.url, 0, 100 * (round + 1)) // short backlogs: the last read comes soon
      const live = publishNumbered(a.url, 10_000, 600, 1)
      await sleep(50 * round)
      const { client, got } = await resumeSession(b.url, id)
      await live
      await got.waitFor(100 * (round + 1) + 600, 15_000)
      const numbers = new Set(got.messages.map((m) => Number(m.payload)))
      for (let n = 10_000; n < 10_600; n++) expect(numbers.has(n)).toBe(true)
      await client.endAsync(true)
      // The next round starts with no session.
      const clean = await connectMqtt(b.url, { clientId: id, clean: true })
      await clean.endAsync()
    }
  }, 60_000)

  it('is not cut when its last read is slow and more live messages come than it may hold', async () => {
    // Every second listing of a session queue on `b` takes 400 ms (a loaded node): the drain
    // reads, finds little new after a quick listing and holds live messages for its last read,
    // whose slow listing lets ~100 arrive for a connection that may hold 50. They were held
    // until the bound cut the session as a slow consumer (CI: "got 517 of 900").
    const { a, b } = await pair(withSlowQueueListings(400))
    await subscribeAndLeave(a.url, 'slow-read')
    await publishNumbered(a.url, 0, 100)
    const live = publishNumbered(a.url, 10_000, 600, 0.25)
    await sleep(100)
    const { client, got } = await resumeSession(b.url, 'slow-read')
    closers.push(() => client.end(true))
    await live
    await got.waitFor(700, 20_000)
    const numbers = new Set(got.messages.map((m) => Number(m.payload)))
    for (let n = 10_000; n < 10_600; n++) expect(numbers.has(n)).toBe(true)
    expect(b.stats().slowConsumers).toBe(0)
    expect(client.connected).toBe(true)
  }, 40_000)
})

const small = { maxPendingMessages: 50, maxPendingBytes: 1 << 30 }

/** Two gateways on NATS, `b` with a small outbound bound. */
async function natsPair(tag: string) {
  const prefix = uniquePrefix(tag)
  const busA = await createTestNatsBus({ prefix })
  const busB = await createTestNatsBus({ prefix })
  const a = await startTestGateway({ bus: busA, gatewayId: 'a' })
  const b = await startTestGateway({ bus: busB, gatewayId: 'b', limits: small })
  return {
    a,
    b,
    async close() {
      await Promise.all([a.close(), b.close()])
      await Promise.all([busA.close(), busB.close()])
    },
  }
}

const layouts = [
  ['in process', () => startGatewayPair('pause', { b: { limits: small } })],
  // Over NATS a queue write for a subscriber keeping up is held for its PUBACK (held-writes.ts):
  // at the bound those are written, so the drain finds them.
  ['over NATS', () => natsPair('pause')],
] as const

for (const [layout, start] of layouts) {
  describe(`a connected session that stops reading for a while (${layout})`, () => {
    const closers: Array<() => Promise<unknown> | unknown> = []
    afterEach(async () => {
      for (const close of closers.splice(0).reverse()) await close()
    })

    it('catches up from its queue on the same connection: every message once, in order', async () => {
      const { a, b, close } = await start()
      closers.push(close)
      // A subscriber on `b` that acknowledges what it reads, and can stop reading.
      const sub = await rawSubscriber(b.ports.mqtt, {
        clientId: 'pauses',
        clean: false,
        topic: 'c/#',
      })
      closers.push(() => sub.end())
      const received = () =>
        sub.packets.filter((p) => p.cmd === 'publish') as Array<{
          payload: Buffer
          messageId: number
        }>
      let acked = 0
      const acker = setInterval(() => {
        const got = received()
        for (; acked < got.length; acked++)
          sub.send({ cmd: 'puback', messageId: got[acked]!.messageId })
      }, 5)
      closers.push(() => clearInterval(acker))

      // 16 KiB each, published on `a` throughout; `sub` stops reading in the middle until its
      // socket's buffers are full and its deliveries pass the bound (on an idle machine ~1.5 s,
      // ~24 MB; a fixed 1.5 s was too short on a loaded one, and nothing passed the bound).
      const COUNT = 2_000
      const live = publishNumbered(a.url, 0, COUNT, 1, 16_384)
      await eventually(() => received().length >= 50, 20_000)
      sub.socket.pause()
      await eventually(() => b.stats().queueCatchUps >= 1, 20_000)
      expect(b.stats().queueDrains).toBe(1) // ub_gateway_queue_drains
      sub.socket.resume()
      await live
      await eventually(() => received().length >= COUNT, 20_000)
      await sleep(300) // a duplicate would come now

      const numbers = received().map((p) => Number(p.payload.toString()))
      expect(numbers).toEqual(Array.from({ length: COUNT }, (_, i) => i))
      // Before: cut as a slow consumer at the bound; a bridge link so cut dialled again.
      expect(b.stats().queueCatchUps).toBeGreaterThanOrEqual(1)
      expect(b.stats().slowConsumers).toBe(0)
      expect(b.stats().queueDrains).toBe(0)
      expect(sub.socket.destroyed).toBe(false)
      // Everything was acknowledged: nothing is left in its queue for a next connection.
      sub.end()
      const { client, got } = await resumeSession(b.url, 'pauses')
      closers.push(() => client.end(true))
      await sleep(500)
      expect(got.messages).toHaveLength(0)
    }, 40_000)
  })
}

/** The bus, with every second listing of the outgoing queue bucket `ms` late. */
function withSlowQueueListings(ms: number) {
  let listings = 0
  return (bus: Bus): Bus =>
    withQueueBucket(bus, (kv) => ({
      async keys(...args: Parameters<KvBucket['keys']>) {
        if (++listings % 2 === 0) await sleep(ms)
        return kv.keys(...args)
      },
    }))
}
