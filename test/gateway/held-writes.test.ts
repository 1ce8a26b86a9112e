import { afterEach, describe, expect, it } from 'vitest'
import type { Bus, KvBucket } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { ValidationError } from '../../services/common/errors.ts'
import { keyToken } from '../../services/gateway/codec.ts'
import { createAckPace } from '../../services/gateway/persistence/ack-pace.ts'
import { createHeldWrites, originKey } from '../../services/gateway/persistence/held-writes.ts'
import { collect, connectMqtt, sleep, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus, uniquePrefix } from '../helpers/nats.ts'
import { resumeSession, withQueueBucket } from './fixture.ts'
import { rawClient, rawSubscriber } from './raw.ts'

/**
 * Queue writes held for a fast subscriber's PUBACK (persistence/held-writes.ts): a persistent
 * session connected to the publishing gateway and keeping up has its messages neither written to
 * its queue nor erased, and yet an acknowledged message is always with the subscriber or in the
 * queue. Real gateway, real NATS KV; the queue bucket's writes are recorded.
 */
interface Recorded {
  puts: Array<{ key: string; at: number }>
  failPuts: boolean
}

const queuedFor = (clientId: string) => (p: { key: string }) =>
  p.key.startsWith(`${keyToken(clientId)}.`)

function recordingBus(bus: Bus, rec: Recorded): Bus {
  return withQueueBucket(bus, (kv: KvBucket) => ({
    async put(key: string, value: Uint8Array) {
      if (rec.failPuts) throw new ValidationError('queue write refused by the test')
      const revision = await kv.put(key, value)
      rec.puts.push({ key, at: performance.now() })
      return revision
    },
  }))
}

describe('queue writes held for a PUBACK', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []

  /** A persistent session that reads what it is sent and never acknowledges it. */
  async function silentSubscriber(port: number, clientId: string, topic: string) {
    const silent = await rawSubscriber(port, { clientId, clean: false, topic })
    closers.push(() => silent.end())
    return silent
  }
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  async function gateway(holdWritesMs: number) {
    const rec: Recorded = { puts: [], failPuts: false }
    const bus = await createTestNatsBus({ prefix: uniquePrefix('held') })
    closers.push(() => bus.close())
    const gw = await startTestGateway({
      bus: recordingBus(bus, rec),
      anonymous: 'always',
      holdWritesMs,
      queueSweep: { everyMs: 0 }, // only the held writes may bring a message to a resumed session
    })
    closers.push(() => gw.close())
    return { gw, rec }
  }

  it('writes nothing for a persistent subscriber that acknowledges in time', async () => {
    const { gw, rec } = await gateway(500)
    const sub = await connectMqtt(gw.url, { clientId: 'fast-sub', clean: false })
    closers.push(() => sub.end(true))
    const got = collect(sub)
    await sub.subscribeAsync('held/#', { qos: 1 })
    const pub = await connectMqtt(gw.url, { clientId: 'held-pub' })
    closers.push(() => pub.end(true))
    const COUNT = 200
    await Promise.all(
      Array.from({ length: COUNT }, (_, i) => pub.publishAsync(`held/${i}`, String(i), { qos: 1 }))
    )
    await got.waitFor(COUNT)
    const stats = gw.stats()
    // Every write is either saved or made after all, and the made ones are the bucket's puts.
    expect(stats.queueWritesHeld).toBe(COUNT)
    expect(stats.queueWritesSaved + stats.queueWritesHeldWritten).toBe(COUNT)
    expect(rec.puts.filter(queuedFor('fast-sub')).length).toBe(stats.queueWritesHeldWritten)
    // 500 ms is far longer than a PUBACK over loopback takes, even on a loaded machine.
    expect(stats.queueWritesSaved).toBeGreaterThan(COUNT / 2)
  })

  it("does not acknowledge a publisher before the message is in a silent subscriber's queue; the session gets it back", async () => {
    const { gw, rec } = await gateway(300)
    const silent = await silentSubscriber(gw.ports.mqtt, 'silent-sub', 'held/x')

    const pub = await connectMqtt(gw.url, { clientId: 'held-pub-2' })
    closers.push(() => pub.end(true))
    let ackedAt = 0
    const acked = pub
      .publishAsync('held/x', 'kept', { qos: 1 })
      .then(() => (ackedAt = performance.now()))
    const delivered = await silent.next('publish') // no PUBACK is ever sent for it
    expect(rec.puts.some(queuedFor('silent-sub'))).toBe(false) // held, not written
    await acked
    const put = rec.puts.find(queuedFor('silent-sub'))
    expect(put, 'the held write went out before the PUBACK').toBeDefined()
    expect(put!.at).toBeLessThanOrEqual(ackedAt)
    expect(gw.stats().queueWritesHeldWritten).toBe(1)

    silent.end()
    await silent.closed
    const { client, got } = await resumeSession(gw.url, 'silent-sub')
    closers.push(() => client.end(true))
    const [again] = await got.waitFor(1)
    expect(again!.payload).toBe('kept')
    expect((delivered as { payload: Buffer }).payload.toString()).toBe('kept')
  })

  it('writes what is held at once when the subscriber goes, so its next connection finds it', async () => {
    const { gw } = await gateway(1_000) // fast: acknowledges in < 500 ms, so writes are held
    const silent = await silentSubscriber(gw.ports.mqtt, 'leaving-sub', 'held/y')

    const pub = await connectMqtt(gw.url, { clientId: 'held-pub-3' })
    closers.push(() => pub.end(true))
    const acked = pub.publishAsync('held/y', 'not lost', { qos: 1 })
    await silent.next('publish')
    silent.end() // gone before its PUBACK and well before the hold runs out
    await silent.closed
    await acked
    // Resumed within the hold: the entry is there only because the close wrote it.
    const { client, got } = await resumeSession(gw.url, 'leaving-sub')
    closers.push(() => client.end(true))
    const [again] = await got.waitFor(1, 3_000)
    expect(again!.payload).toBe('not lost')
  })

  it('disconnects the publisher without a PUBACK when a held write then fails', async () => {
    const { gw, rec } = await gateway(100)
    const silent = await silentSubscriber(gw.ports.mqtt, 'stuck-sub', 'held/z')

    rec.failPuts = true
    const pub = await rawClient(gw.ports.mqtt)
    closers.push(() => pub.end())
    pub.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId: 'held-pub-4',
      keepalive: 0,
    })
    await pub.next('connack')
    pub.send({
      cmd: 'publish',
      topic: 'held/z',
      payload: Buffer.from('x'),
      qos: 1,
      retain: false,
      dup: false,
      messageId: 7,
    })
    await silent.next('publish')
    await pub.closed
    expect(pub.packets.some((p) => p.cmd === 'puback')).toBe(false)
  })
})

describe('queue writes on the in-process bus', () => {
  it('are not held by default: there a write is a map entry, and holding only made publishers wait', async () => {
    const bus = createInProcessBus({ prefix: uniquePrefix('held-ip') })
    const gw = await startTestGateway({ bus, anonymous: 'always' })
    try {
      const sub = await connectMqtt(gw.url, { clientId: 'ip-sub', clean: false })
      const got = collect(sub)
      await sub.subscribeAsync('ip/#', { qos: 1 })
      const pub = await connectMqtt(gw.url, { clientId: 'ip-pub' })
      await Promise.all(
        Array.from({ length: 50 }, (_, i) => pub.publishAsync(`ip/${i}`, String(i), { qos: 1 }))
      )
      await got.waitFor(50)
      expect(gw.stats().queueWritesHeld).toBe(0)
      await Promise.all([sub.endAsync(true), pub.endAsync(true)])
    } finally {
      await gw.close()
      await bus.close()
    }
  })
})

describe('held writes, the bookkeeping', () => {
  const o = (counter: number) => originKey({ brokerId: 'b', brokerCounter: counter })

  it('holds only what a publisher waits for, within the bound, and settles on drop or write', async () => {
    let written = 0
    let full = 0
    const held = createHeldWrites({ holdMs: 50, max: 2, onFull: () => full++ })
    const write = () => Promise.resolve(void written++)
    expect(held.hold('c', 'k0', o(0), write)).toBe(false) // nobody waits for message 0

    const w1 = held.expect('b', 1)
    expect(held.hold('c', 'k1', o(1), write)).toBe(true)
    expect(held.hold('d', 'k2', o(1), write)).toBe(true)
    expect(held.hold('e', 'k3', o(1), write)).toBe(false) // bound: 2 held
    expect(full).toBe(1)
    let settled = false
    const done = w1.settled()!.then(() => (settled = true))
    expect(held.drop('k1')).toBe(true)
    await sleep(5)
    expect(settled).toBe(false) // k2 still held
    expect(held.drop('k2')).toBe(true)
    await done
    expect(written).toBe(0)

    const w2 = held.expect('b', 2)
    held.hold('c', 'k4', o(2), write)
    await w2.settled()! // nobody acknowledges: written after 50 ms
    expect(written).toBe(1)
    expect(held.drop('k4')).toBe(false) // gone: the PUBACK then erases it from KV

    const w3 = held.expect('b', 3)
    held.hold('c', 'k5', o(3), write)
    held.hold('d', 'k6', o(3), write)
    held.flush('c')
    expect(held.size).toBe(1)
    await held.flushAll()
    expect(w3.settled()).toBeUndefined() // both written already: nothing to wait for
    expect(written).toBe(3)
    expect(held.size).toBe(0)
  })

  it('forgets the pace of the session followed longest past its bound, and counts it', () => {
    let forgotten = 0
    const pace = createAckPace({ fastMs: 10, maxClients: 2, onForgotten: () => forgotten++ })
    pace.acked('slow', 50)
    pace.acked('b', 1)
    expect(pace.fast('slow')).toBe(false)
    pace.acked('c', 1) // a third session: `slow`, followed longest, is forgotten
    expect(forgotten).toBe(1)
    expect(pace.fast('slow')).toBe(true) // fast again until measured
  })

  it("rejects a publisher's wait when a held write fails", async () => {
    const held = createHeldWrites({ holdMs: 10 })
    const w = held.expect('b', 9)
    held.hold('c', 'k', o(9), () => Promise.reject(new Error('bus away')))
    await expect(w.settled()!).rejects.toThrow('bus away')
  })
})
