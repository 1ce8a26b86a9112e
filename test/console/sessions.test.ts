import { Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
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

  it('makes random ids and CSRF tokens, found by the cookie value only', () => {
    const { store } = setup()
    const s = store.create()
    expect(s.id).toMatch(/^[\w-]{43}$/)
    expect(s.csrf).not.toBe(s.id)
    expect(store.touch(s.id)?.csrf).toBe(s.csrf)
    expect(store.touch(s.csrf)).toBeUndefined()
  })

  it('evicts the least recently used past the bound, and counts it', async () => {
    const { store, count, metrics } = setup(2)
    const first = store.create()
    const second = store.create()
    store.touch(first.id) // second is now the least recently used
    store.create()
    expect(store.size).toBe(2)
    expect(store.touch(second.id)).toBeUndefined()
    expect(store.touch(first.id)).toBeDefined()
    expect(await count('evicted')).toBe(1)
    expect(await count('created')).toBe(3)
    expect((await metrics.getSingleMetric('ub_console_sessions')!.get()).values[0]?.value).toBe(2)
  })

  it('drops expired sessions before evicting a live one', async () => {
    const { store, count, advance } = setup(2)
    const old = store.create()
    advance(600)
    const live = store.create()
    advance(600) // old idled out, live has 400 ms left
    store.create()
    expect(await count('expired')).toBe(1)
    expect(await count('evicted')).toBe(0)
    expect(store.touch(live.id)).toBeDefined()
    expect(store.touch(old.id)).toBeUndefined()
  })

  it('ends a session after the idle window, and after the maximum age whatever the use', () => {
    const { store, advance } = setup(10)
    const idle = store.create()
    const busy = store.create()
    for (let t = 0; t < 4; t++) {
      advance(900)
      expect(store.touch(busy.id)).toBeDefined()
    }
    expect(store.touch(idle.id)).toBeUndefined()
    advance(900) // 4.5 s in: still within the 5 s maximum
    expect(store.touch(busy.id)).toBeDefined()
    advance(600)
    expect(store.touch(busy.id)).toBeUndefined()
  })

  it('logs out once and counts refused sign-ins', async () => {
    const { store, count } = setup()
    const s = store.create()
    expect(store.delete(s.id)).toBe(true)
    expect(store.delete(s.id)).toBe(false)
    store.refused()
    expect(await count('logged_out')).toBe(1)
    expect(await count('refused')).toBe(1)
  })
})
