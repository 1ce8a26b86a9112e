import { afterEach, describe, expect, it, vi } from 'vitest'
import { createWriteStallWatch } from '../../services/gateway/write-stall.ts'

/** The clock of a connection with deliveries waiting (write-stall.ts); the sockets: isolation.test.ts. */
describe('write stall watch', () => {
  afterEach(() => void vi.useRealTimers())

  function watch(stallMs: number) {
    vi.useFakeTimers()
    const stalled: Array<[string, number]> = []
    const w = createWriteStallWatch<string>({
      stallMs,
      onStalled: (c, ms) => stalled.push([c, ms]),
    })
    return { w, stalled }
  }

  it('cuts a connection once, after the deadline without a completed write', () => {
    const { w, stalled } = watch(1_000)
    w.waiting('a')
    vi.advanceTimersByTime(750)
    w.waiting('a') // more pending: the clock does not start again
    vi.advanceTimersByTime(500)
    expect(stalled.map(([c]) => c)).toEqual(['a'])
    expect(stalled[0]![1]).toBeGreaterThanOrEqual(1_000)
    vi.advanceTimersByTime(5_000)
    expect(stalled).toHaveLength(1)
    expect(w.followed).toBe(0)
    w.stop()
  })

  it('starts again on each write, and forgets a connection with nothing pending or closed', () => {
    const { w, stalled } = watch(1_000)
    w.waiting('slow')
    w.waiting('idle')
    w.waiting('gone')
    vi.advanceTimersByTime(600)
    w.progressed('idle', false) // its last pending delivery was written
    w.forget('gone') // closed
    w.progressed('slow', true)
    for (let i = 0; i < 10; i++) {
      vi.advanceTimersByTime(600)
      w.progressed('slow', true) // slow, but its socket takes something
    }
    expect(stalled).toEqual([])
    expect(w.followed).toBe(1)
    vi.advanceTimersByTime(1_250) // the deadline, and up to one sweep (250 ms) late
    expect(stalled.map(([c]) => c)).toEqual(['slow'])
    w.stop()
  })

  it('follows nobody when off', () => {
    const { w, stalled } = watch(0)
    w.waiting('a')
    vi.advanceTimersByTime(3_600_000)
    expect(stalled).toEqual([])
    expect(w.followed).toBe(0)
  })
})
