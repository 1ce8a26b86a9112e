import { afterEach, describe, expect, it } from 'vitest'
import type { Bus, KvBucket } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { BUCKETS } from '../../services/contracts/buckets.ts'
import { collect, connectMqtt, sleep, startTestGateway } from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'

/** The bus, with every erase in the wills bucket failing as a KV timeout during a partition does. */
const withFailingWillErases = (bus: Bus): Bus =>
  Object.assign(Object.create(bus) as Bus, {
    async kv(name: string, options?: { ttlMs?: number }): Promise<KvBucket> {
      const kv = await bus.kv(name, options)
      if (name !== BUCKETS.gatewayWills) return kv
      return Object.assign(Object.create(kv) as KvBucket, {
        async erase() {
          throw new Error('timeout')
        },
      })
    },
  })

/**
 * aedes deletes a client's stored will at CONNECT with `.finally()` and no rejection handler: a
 * will delete that failed (NATS partitioned) went unhandled and stopped the gateway process.
 */
describe('a will that cannot be deleted at CONNECT', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  it('leaves the gateway serving, with no unhandled rejection', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    closers.push(() => process.off('unhandledRejection', onUnhandled))
    const bus = createInProcessBus({ prefix: uniquePrefix('will') })
    const gw = await startTestGateway({ bus: withFailingWillErases(bus) })
    closers.push(
      () => bus.close(),
      () => gw.close()
    )
    const will = { topic: 'wills/w', payload: Buffer.from('gone'), qos: 1 as const, retain: false }
    const first = await connectMqtt(gw.url, { clientId: 'w', will })
    await first.endAsync()
    // The same client again, with a will: its CONNECT deletes the stored one first, and fails to.
    const again = await connectMqtt(gw.url, { clientId: 'w', will })
    closers.push(() => again.endAsync(true))
    await sleep(200)
    expect(unhandled).toEqual([])

    const sub = await connectMqtt(gw.url, { clientId: 'after' })
    closers.push(() => sub.endAsync(true))
    await sub.subscribeAsync('after/#', { qos: 1 })
    const got = collect(sub)
    await again.publishAsync('after/x', 'still serving', { qos: 1 })
    await got.waitFor(1, 5_000)
  })
})
