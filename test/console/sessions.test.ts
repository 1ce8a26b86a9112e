import { Registry } from 'prom-client'
import { describe, expect, it, vi } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { createSessionStore } from '../../services/handshake/console/sessions.ts'

/** The console's session map: bounded, least recently used out first, idle and absolute expiry. */
describe('console sessions', () => {
  const setup = (max = 2) => {
    let now = 1_000_000
    const metrics = new Registry()
    const store = createSessionStore({
      max,
      idleMs: 1_000,
      maxAgeMs: 5_000,
      now: () => now,
      metrics,
    })
    const count = async (event: string) => {
      const m = await metrics.getSingleMetric('ub_console_sessions_total')!.get()
      return m.values.find((v) => v.labels.event === event)?.value ?? 0
    }
    return { store, metrics, count, advance: (ms: number) => void (now += ms) }
  }

  it('makes random ids and CSRF tokens, found by the cookie value only', async () => {
    const { store } = setup()
    const s = await store.create()
    expect(s.id).toMatch(/^[\w-]{43}$/)
    expect(s.csrf).not.toBe(s.id)
    expect((await store.touch(s.id))?.csrf).toBe(s.csrf)
    expect(await store.touch(s.csrf)).toBeUndefined()
  })

  it('evicts the least recently used past the bound, and counts it', async () => {
    const { store, count, metrics } = setup(2)
    const first = await store.create()
    const second = await store.create()
    await store.touch(first.id) // second is now the least recently used
    await store.create()
    expect(store.size).toBe(2)
    expect(await store.touch(second.id)).toBeUndefined()
    expect(await store.touch(first.id)).toBeDefined()
    expect(await count('evicted')).toBe(1)
    expect(await count('created')).toBe(3)
    expect((await metrics.getSingleMetric('ub_console_sessions')!.get()).values[0]?.value).toBe(2)
  })

  it('drops expired sessions before evicting a live one', async () => {
    const { store, count, advance } = setup(2)
    const old = await store.create()
    advance(600)
    const live = await store.create()
    advance(600) // old idled out, live has 400 ms left
    await store.create()
    expect(await count('expired')).toBe(1)
    expect(await count('evicted')).toBe(0)
    expect(await store.touch(live.id)).toBeDefined()
    expect(await store.touch(old.id)).toBeUndefined()
  })

  it('ends a session after the idle window, and after the maximum age whatever the use', async () => {
    const { store, advance } = setup(10)
    const idle = await store.create()
    const busy = await store.create()
    for (let t = 0; t < 4; t++) {
      advance(900)
      expect(await store.touch(busy.id)).toBeDefined()
    }
    expect(await store.touch(idle.id)).toBeUndefined()
    advance(900) // 4.5 s in: still within the 5 s maximum
    expect(await store.touch(busy.id)).toBeDefined()
    advance(600)
    expect(await store.touch(busy.id)).toBeUndefined()
  })

  it('logs out once and counts refused sign-ins', async () => {
    const { store, count } = setup()
    const s = await store.create()
    expect(await store.delete(s.id)).toBe(true)
    expect(await store.delete(s.id)).toBe(false)
    store.refused()
    expect(await count('logged_out')).toBe(1)
    expect(await count('refused')).toBe(1)
  })

  it('shares sessions between replicas: one made on A works on B, a sign-out on B ends it on A', async () => {
    const bus = createInProcessBus({ prefix: `sess${Date.now()}` })
    try {
      const bucket = () => bus.kv('console_sessions', { ttlMs: 60_000 })
      const a = createSessionStore({ shared: bucket() })
      const b = createSessionStore({ shared: bucket() })
      const s = await a.create()
      expect((await b.touch(s.id))?.csrf).toBe(s.csrf)
      expect(await a.touch(s.id)).toBeDefined()
      expect(await b.delete(s.id)).toBe(true)
      await vi.waitFor(async () => expect(await a.touch(s.id)).toBeUndefined())
      // The bucket holds the cookie's digest, never the cookie.
      const kv = await bucket()
      expect(await kv.keys()).toEqual([])
      const t = await a.create()
      expect(await kv.keys()).toEqual([expect.stringMatching(/^[0-9a-f]{64}$/)])
      const stored = Buffer.from((await kv.get((await kv.keys())[0]!))!.value).toString()
      expect(stored).toContain(t.csrf)
      expect(stored).not.toContain(t.id)
      await Promise.all([a.close(), b.close()])
    } finally {
      await bus.close()
    }
  })
})
