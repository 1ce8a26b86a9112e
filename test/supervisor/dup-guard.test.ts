import { describe, expect, it } from 'vitest'
import { createDupGuard } from '../../services/supervisor/dup-guard.ts'

describe('duplicate guard', () => {
  it('lets repeats through up to the threshold within the window, then drops and counts', () => {
    let t = 0
    const g = createDupGuard({ threshold: 3, windowMs: 100, now: () => t })
    const p = Buffer.from('same')
    expect([1, 2, 3, 4, 5].map(() => g.check('a', p, false))).toEqual([
      false,
      false,
      false,
      true,
      true,
    ])
    expect(g.dropped).toBe(2)
    // Another topic, payload or retain flag is another message.
    expect(g.check('b', p, false)).toBe(false)
    expect(g.check('a', Buffer.from('other'), false)).toBe(false)
    expect(g.check('a', p, true)).toBe(false)
  })

  it('forgets a key once its window passed: a steady unchanged reading is never dropped', () => {
    let t = 0
    const g = createDupGuard({ threshold: 3, windowMs: 100, now: () => t })
    for (let i = 0; i < 1_000; i++) {
      t += 50 // 20 Hz, the same value every time
      expect(g.check('sensor', Buffer.from('21.5'), false)).toBe(false)
    }
  })

  it('holds at most maxEntries keys', () => {
    const g = createDupGuard({ threshold: 1, maxEntries: 2, now: () => 0 })
    g.check('a', Buffer.from('1'), false)
    g.check('b', Buffer.from('1'), false)
    g.check('c', Buffer.from('1'), false) // evicts a
    expect(g.check('a', Buffer.from('1'), false)).toBe(false)
    expect(g.check('c', Buffer.from('1'), false)).toBe(true)
  })
})
