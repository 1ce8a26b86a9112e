import { afterEach, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { MQ_SUBJECT } from '../../services/gateway/mq.ts'
import { collect, connectMqtt, eventually, sleep } from '../helpers/gateway.ts'
import { startGatewayPair } from './fixture.ts'

/** The bus, dropping every live mq frame whose subject names `lost`: what a dying NATS node does. */
function losingLiveCopies(bus: Bus): Bus {
  return Object.assign(Object.create(bus) as Bus, {
    publish(subject: string, data: Uint8Array, headers?: Parameters<Bus['publish']>[2]) {
      if (subject.startsWith(`${MQ_SUBJECT}.`) && subject.includes('lost')) return
      bus.publish(subject, data, headers)
    },
  })
}

/**
 * A QoS 1 message for a connected persistent session is queued in KV and its live copy crosses
 * core NATS to the session's gateway. A NATS node that dies takes the live copies routed through
 * it; the queued copy stayed, and the connected session got it only when it next reconnected
 * (chaos: nats-node-kill lost 1–3 messages per kill that way).
 */
describe('the sweep of a connected session queue', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  it('delivers a queued message whose live copy never came, once, and leaves the queue empty', async () => {
    const queueSweep = { everyMs: 100, olderThanMs: 300 }
    const pair = await startGatewayPair('sweep', {
      a: { queueSweep },
      b: { queueSweep },
      wrapBusB: losingLiveCopies,
    })
    closers.push(() => pair.close())
    const { a, b } = pair
    let got!: ReturnType<typeof collect>
    const session = await connectMqtt(
      a.url,
      { clientId: 'swept', clean: false },
      (c) => (got = collect(c))
    )
    closers.push(() => session.end(true))
    await session.subscribeAsync('s/#', { qos: 1 })

    // Published on `b`: queued for the session in KV; the live copy of `s/lost` never reaches `a`.
    const publisher = await connectMqtt(b.url, { clientId: 'sweep-pub' })
    closers.push(() => publisher.end(true))
    await publisher.publishAsync('s/ok', 'before', { qos: 1 })
    await publisher.publishAsync('s/lost', 'lost', { qos: 1 })
    await publisher.publishAsync('s/ok', 'after', { qos: 1 })

    await eventually(() => got.messages.some((m) => m.payload === 'lost'), 5_000).catch(() => {})
    await sleep(500) // a second sweep meanwhile must not send it again
    expect(got.messages.map((m) => m.payload).sort()).toEqual(['after', 'before', 'lost'])
    expect(a.stats().queueRedelivered).toBe(1)

    // Acknowledged from the sweep's delivery: nothing left for a reconnect.
    await session.endAsync()
    let again!: ReturnType<typeof collect>
    const resumed = await connectMqtt(
      a.url,
      { clientId: 'swept', clean: false },
      (c) => (again = collect(c))
    )
    closers.push(() => resumed.end(true))
    await sleep(500)
    expect(again.messages).toEqual([])
  }, 20_000)

  it('does not hand a young entry out before its live copy had time to come', async () => {
    const queueSweep = { everyMs: 50, olderThanMs: 60_000 }
    const pair = await startGatewayPair('sweep-young', {
      a: { queueSweep },
      wrapBusB: losingLiveCopies,
    })
    closers.push(() => pair.close())
    const { a, b } = pair
    let got!: ReturnType<typeof collect>
    const session = await connectMqtt(
      a.url,
      { clientId: 'young', clean: false },
      (c) => (got = collect(c))
    )
    closers.push(() => session.end(true))
    await session.subscribeAsync('s/#', { qos: 1 })
    const publisher = await connectMqtt(b.url, { clientId: 'young-pub' })
    closers.push(() => publisher.end(true))
    await publisher.publishAsync('s/lost', 'lost', { qos: 1 })
    await sleep(500)
    expect(got.messages).toEqual([])
    expect(a.stats().queueRedelivered).toBe(0)
  }, 20_000)
})
