import { afterEach, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { decodePacket } from '../../services/gateway/codec.ts'
import { collect, connectMqtt, eventually, sleep, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus } from '../helpers/nats.ts'
import { withQueueBucket } from './fixture.ts'

const SLOW_PUT_MS = 600

/**
 * The bus, with queue writes of messages whose payload is `slow` held back for SLOW_PUT_MS: a
 * queue write that a NATS leader election or a loaded node delays while the next one goes
 * through. Everything else is the real bus.
 */
const withSlowQueueWrites = (bus: Bus): Bus =>
  withQueueBucket(bus, (kv) => ({
    async put(key: string, value: Uint8Array) {
      if (decodePacket(value).packet.payload?.toString() === 'slow') await sleep(SLOW_PUT_MS)
      return kv.put(key, value)
    },
  }))

/**
 * A resumed session's queue is read while the gateway still writes to it; two queue writes of
 * one gateway finish in any order. The drain used to mark what it handed out in aedes' per-client
 * dedupe record, a high-water mark per gateway: a message numbered below one the drain had
 * handed out, whose queue write finished after the drain read the queue, was then refused live
 * as "already seen", and aedes erased its queued copy on that refusal. The message was lost,
 * though the gateway had acknowledged it (chaos: gateway-kill lost 8 of 1,422).
 */
describe('a resumed session whose queue is written out of order', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  it('gets a message whose queue write finished after the drain read a later one', async () => {
    const bus = await createTestNatsBus()
    closers.push(() => bus.close())
    const gw = await startTestGateway({ bus: withSlowQueueWrites(bus) })
    closers.push(() => gw.close())

    const first = await connectMqtt(gw.url, { clientId: 'ooo-session', clean: false })
    await first.subscribeAsync('ooo/#', { qos: 1 })
    await first.endAsync()

    const publisher = await connectMqtt(gw.url, { clientId: 'ooo-pub' })
    closers.push(() => publisher.end(true))
    // `slow` is numbered first, its queue write finishes last; `fast` is queued at once.
    const acked = Promise.all([
      publisher.publishAsync('ooo/a', 'slow', { qos: 1 }),
      publisher.publishAsync('ooo/b', 'fast', { qos: 1 }),
    ])
    await sleep(SLOW_PUT_MS / 3) // `fast` is in the queue, `slow` is not yet

    let got!: ReturnType<typeof collect>
    const resumed = await connectMqtt(
      gw.url,
      { clientId: 'ooo-session', clean: false },
      (c) => (got = collect(c))
    )
    closers.push(() => resumed.end(true))
    await acked
    await eventually(() => got.messages.some((m) => m.payload === 'slow'), 5_000).catch(() => {})
    expect(got.messages.map((m) => m.payload).sort()).toEqual(['fast', 'slow'])

    // And nothing of it is left in (or was wrongly erased from) the queue: a reconnect gets
    // nothing more, and `slow` was not lost on the way.
    await resumed.endAsync()
    let again!: ReturnType<typeof collect>
    const third = await connectMqtt(
      gw.url,
      { clientId: 'ooo-session', clean: false },
      (c) => (again = collect(c))
    )
    closers.push(() => third.end(true))
    await sleep(300)
    expect(again.messages.map((m) => m.payload)).toEqual([])
  }, 20_000)
})
