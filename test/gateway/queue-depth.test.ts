import { describe, expect, it } from 'vitest'
import { silentLogger } from '../../services/common/log.ts'
import { createQueueDepth } from '../../services/gateway/persistence/queue-depth.ts'

/** The per-session depth a queue bound needs (persistence/queue-depth.ts), apart from KV. */
describe('queue depth', () => {
  const settle = () => new Promise((r) => setImmediate(r))

  it('follows a bounded number of sessions and counts the ones it forgets', async () => {
    let forgotten = 0
    const depth = createQueueDepth({
      count: async () => 0,
      maxFor: () => 10,
      log: silentLogger(),
      maxTracked: 2,
      onForgotten: () => forgotten++,
    })
    for (const id of ['a', 'b', 'c', 'd']) expect(await depth.admit(id)).toBe(true)
    expect(forgotten).toBe(2)
  })

  it('counts again before it refuses, and refuses only on a real count', async () => {
    const inKv = new Map<string, number>([['s', 2]])
    let now = 0
    const depth = createQueueDepth({
      count: async (id) => inKv.get(id) ?? 0,
      maxFor: () => 3,
      log: silentLogger(),
      recountMs: 1_000,
      now: () => now,
    })
    expect(await depth.admit('s')).toBe(true) // counted in the background: 2 + this one
    await settle()
    expect(await depth.admit('s')).toBe(false) // 3 of 3, counted just now
    inKv.set('s', 0) // acknowledged on another gateway
    now += 1_000
    expect(await depth.admit('s')).toBe(true) // recounted before refusing
  })

  it('admits when the count fails rather than refuse on a figure it does not have', async () => {
    const depth = createQueueDepth({
      count: async () => {
        throw new Error('KV unavailable')
      },
      maxFor: () => 1,
      log: silentLogger(),
    })
    for (let i = 0; i < 3; i++) expect(await depth.admit('s')).toBe(true)
  })
})
