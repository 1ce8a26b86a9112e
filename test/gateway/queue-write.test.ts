import mqtt from 'mqtt'
import { afterEach, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { collect, connectMqtt, eventually, sleep, startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus } from '../helpers/nats.ts'
import { withQueueBucket } from './fixture.ts'

/**
 * The bus, with one queue write (when `fail.next` is set) that lands in KV but whose answer is
 * lost: the caller gets a timeout after 300 ms, as when the NATS node that took the request dies
 * before it answers.
 */
const withOneLostAnswer = (bus: Bus, fail: { next: boolean }): Bus =>
  withQueueBucket(bus, (kv) => ({
    async put(key: string, value: Uint8Array) {
      const revision = await kv.put(key, value)
      if (!fail.next) return revision
      fail.next = false
      await sleep(300)
      throw new Error('timeout (the node that took the request died)')
    },
  }))

const cleanups: Array<() => Promise<unknown> | unknown> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const N = 2_000

/**
 * A queue write that timed out failed its PUBLISH: the publisher lost its connection without the
 * PUBACK and sent its whole window again, and every message of that window already delivered
 * arrived twice (chaos, rolling restart of the NATS nodes: 500–700 duplicates). The write is now
 * tried again (queue-write.ts): the same key and value, harmless if the first one landed.
 */
it('a queue write whose answer was lost is tried again: nothing fails, nothing arrives twice', async () => {
  const bus = await createTestNatsBus()
  cleanups.push(() => bus.close())
  const fail = { next: false }
  const gw = await startTestGateway({ bus: withOneLostAnswer(bus, fail), anonymous: 'always' })
  cleanups.push(() => gw.close())
  const sub = await connectMqtt(gw.url, { clientId: 'qw-sub', clean: false })
  cleanups.push(() => sub.endAsync(true))
  const got = collect(sub)
  await sub.subscribeAsync('qw/seq', { qos: 1 })

  const pub = mqtt.connect(gw.url, { protocolVersion: 4, clientId: 'qw-pub', reconnectPeriod: 50 })
  pub.on('error', () => {})
  cleanups.push(() => pub.endAsync(true))
  let reconnects = 0
  pub.on('reconnect', () => reconnects++)
  await new Promise<void>((r) => pub.once('connect', () => r()))
  let next = 0
  const publishing = Promise.all(
    Array.from({ length: 32 }, async () => {
      while (next < N) {
        if (next === N / 4) fail.next = true
        await pub.publishAsync('qw/seq', String(next++), { qos: 1 })
      }
    })
  )
  await publishing
  await eventually(() => new Set(got.messages.map((m) => m.payload)).size === N, 10_000)
  await sleep(200)
  const payloads = got.messages.map((m) => m.payload)
  expect(payloads.length - new Set(payloads).size, 'arrived twice').toBe(0)
  expect(reconnects, 'publisher reconnects').toBe(0)
}, 60_000)
