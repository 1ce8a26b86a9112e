import { afterEach, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { BUCKETS } from '../../services/contracts/buckets.ts'
import { collect, connectMqtt, eventually, sleep, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus } from '../helpers/nats.ts'
import { withQueueBucket } from './fixture.ts'

/** The bus, with every erase in the outgoing queue failing while `failing.now` is set. */
const withFailingErases = (bus: Bus, failing: { now: boolean }): Bus =>
  withQueueBucket(bus, (kv) => ({
    async erase(key: string, revision?: number) {
      if (failing.now) throw new Error('timeout (the stream has no leader)')
      return kv.erase(key, revision)
    },
  }))

/**
 * A PUBACK erases the message's queue entry. While a NATS node dies, the queue's stream may have
 * no leader for seconds: the erase failed, aedes failed the PUBACK and closed the connection,
 * and the reconnected session got every message it had acknowledged again (chaos: a bridge
 * forwarded ~1,000 duplicates per NATS node kill).
 */
describe('an acknowledged message whose queue entry cannot be erased yet', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  it('keeps the connection, is not delivered again, and is erased once the bus answers', async () => {
    const bus = await createTestNatsBus()
    closers.push(() => bus.close())
    const failing = { now: false }
    // No held queue writes (on by default on NATS): a write dropped by a PUBACK within the hold
    // has no entry to erase, and this test is about the erase.
    const gw = await startTestGateway({ bus: withFailingErases(bus, failing), holdWritesMs: 0 })
    closers.push(() => gw.close())

    let got!: ReturnType<typeof collect>
    const session = await connectMqtt(
      gw.url,
      { clientId: 'acks-in-fault', clean: false },
      (c) => (got = collect(c))
    )
    closers.push(() => session.end(true))
    await session.subscribeAsync('f/#', { qos: 1 })
    const publisher = await connectMqtt(gw.url, { clientId: 'fault-pub' })
    closers.push(() => publisher.end(true))

    failing.now = true
    for (let i = 0; i < 20; i++) await publisher.publishAsync('f/x', String(i), { qos: 1 })
    await got.waitFor(20)
    await sleep(300) // the PUBACKs reach the gateway and their erases fail
    expect(session.connected).toBe(true)
    expect(gw.stats().queueEraseDeferred).toBe(20)

    // A reconnect while the erases still wait: nothing is delivered again.
    await session.endAsync()
    let again!: ReturnType<typeof collect>
    const resumed = await connectMqtt(
      gw.url,
      { clientId: 'acks-in-fault', clean: false },
      (c) => (again = collect(c))
    )
    closers.push(() => resumed.end(true))
    await sleep(300)
    expect(again.messages).toEqual([])

    // The bus answers again: the waiting erases go through and the queue is empty.
    failing.now = false
    const outgoing = await bus.kv(BUCKETS.gatewayOutgoing)
    await eventually(async () => (await outgoing.keys('>', { withDeleted: true })).length === 0)
  }, 20_000)
})
