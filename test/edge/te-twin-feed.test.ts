import { describe, expect, it } from 'vitest'
import { silentLogger } from '../../services/common/log.ts'
import { UbError } from '../../services/common/errors.ts'
import type { StoreClient } from '../../services/contracts/store-client.ts'
import { TE_ENTITIES_FULL } from '../../services/contracts/te-entities.ts'
import {
  createTwinFeed,
  MAX_IN_FLIGHT,
  MEASUREMENT_EVERY_MS,
} from '../../services/gateway/edge/te-twin-feed.ts'

/** A store whose calls stay open until released, recording what was asked. */
function heldStore() {
  const calls: Array<{ verb: string; input: any; release(err?: unknown): void }> = []
  const store = {
    call: (verb: string, input: unknown) =>
      new Promise((resolve, reject) =>
        calls.push({ verb, input, release: (err) => (err ? reject(err) : resolve({})) })
      ),
  } as unknown as StoreClient
  return { store, calls }
}

const tick = () => new Promise((r) => setTimeout(r, 0))
const counters = () => ({ teTwinDropped: 0, teTwinFailed: 0, teTwinRefused: 0 })
const measurement = { kind: 'm', type: 'env', meta: false } as const

describe('the digital twin feed', () => {
  it(`keeps at most ${MAX_IN_FLIGHT} calls outstanding, dropping and counting the rest`, async () => {
    const { store, calls } = heldStore()
    const c = counters()
    const feed = createTwinFeed({ store, counters: c, log: silentLogger() })
    for (let i = 0; i < MAX_IN_FLIGHT + 5; i++)
      feed.observe(`device/d${i}//`, { kind: 'status', component: 'health' }, '{"status":"up"}')
    await tick()
    expect(calls).toHaveLength(MAX_IN_FLIGHT)
    expect(c.teTwinDropped).toBe(5)
    calls[0]!.release()
    await tick()
    feed.observe('device/late//', { kind: 'status', component: 'health' }, '{"status":"down"}')
    await tick()
    expect(calls).toHaveLength(MAX_IN_FLIGHT + 1)
    expect(calls.at(-1)!.input).toEqual({
      kind: 'health',
      topicId: 'device/late//',
      status: 'down',
    })
    for (const call of calls) call.release()
    await feed.idle()
  })

  it('sends one measurement time per entity per second, and calls for one entity in order', async () => {
    const { store, calls } = heldStore()
    let now = 1_000_000
    const feed = createTwinFeed({
      store,
      counters: counters(),
      log: silentLogger(),
      now: () => now,
    })
    feed.register({
      topicId: 'device/c//',
      type: 'child-device',
      parent: 'device/main//',
      twin: {},
    })
    feed.observe('device/c//', measurement, '{"t":1}')
    feed.observe('device/c//', measurement, '{"t":2}')
    now += MEASUREMENT_EVERY_MS - 1
    feed.observe('device/c//', measurement, '{"t":3}')
    feed.observe('device/other//', measurement, '{"t":1}')
    // The entity's measurement waits for its registration; the other entity's goes at once.
    await tick()
    expect(calls.map((c) => [c.verb, c.input.topicId])).toEqual([
      ['te.entity.upsert', 'device/c//'],
      ['te.entity.observe', 'device/other//'],
    ])
    calls[0]!.release()
    await tick()
    expect(calls).toHaveLength(3)
    expect(calls[2]!.input).toEqual({
      kind: 'measurement',
      topicId: 'device/c//',
      at: new Date(1_000_000).toISOString(),
    })
    now += 1
    feed.observe('device/c//', measurement, '{"t":4}')
    for (const call of calls) call.release()
    await tick()
    expect(calls).toHaveLength(4)
    calls[3]!.release()
    await feed.idle()
  })

  it('counts a refusal at the entity bound apart from other failures; delivery goes on', async () => {
    const { store, calls } = heldStore()
    const c = counters()
    const feed = createTwinFeed({ store, counters: c, log: silentLogger() })
    feed.register({
      topicId: 'device/a//',
      type: 'child-device',
      parent: 'device/main//',
      twin: {},
    })
    feed.observe('device/b//', { kind: 'a', type: 'hot', meta: false }, '')
    await tick()
    calls[0]!.release(new UbError(TE_ENTITIES_FULL, 'full'))
    calls[1]!.release(new Error('boom'))
    await feed.idle()
    expect(c).toEqual({ teTwinDropped: 0, teTwinFailed: 1, teTwinRefused: 1 })
    expect(calls[1]!.input).toEqual({
      kind: 'alarm',
      topicId: 'device/b//',
      alarmType: 'hot',
      alarm: null,
    })
  })
})
