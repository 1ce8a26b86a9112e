import { describe, expect, it } from 'vitest'
import { createInProcessBus, createInProcessHub } from '../../services/common/bus/in-process.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { busContract } from './bus.contract.ts'

// One hub per file: buses with different prefixes share it, as they would share a NATS server.
const hub = createInProcessHub()

busContract('in-process', async ({ prefix = uniquePrefix('mem') } = {}) =>
  createInProcessBus({ prefix, hub })
)

describe('reachesBeyond (in process only)', () => {
  it('is false while only the given subscriptions match, true for any other, on any bus of the hub', async () => {
    const shared = createInProcessHub()
    const a = createInProcessBus({ prefix: 'rb', hub: shared })
    const b = createInProcessBus({ prefix: 'rb', hub: shared })
    const other = createInProcessBus({ prefix: 'rb2', hub: shared })
    try {
      const own = new Set([await a.subscribe('mq.x.>', () => {})])
      expect(a.reachesBeyond!('mq.x.y', own)).toBe(false)
      expect(a.reachesBeyond!('mq.x.y', new Set())).toBe(true) // not its own: someone hears it
      await other.subscribe('mq.x.>', () => {}) // another prefix: another fabric
      expect(a.reachesBeyond!('mq.x.y', own)).toBe(false)
      const theirs = await b.subscribe('mq.*.y', () => {})
      expect(a.reachesBeyond!('mq.x.y', own)).toBe(true)
      expect(a.reachesBeyond!('mq.x.z', own)).toBe(false)
      await theirs.unsubscribe()
      expect(a.reachesBeyond!('mq.x.y', own)).toBe(false)
      // The caller's set grows after the hub learned of its subscription: not a stale answer.
      const later = await a.subscribe('mq.q', () => {})
      const growing = new Set(own)
      expect(a.reachesBeyond!('mq.q', growing)).toBe(true)
      growing.add(later)
      expect(a.reachesBeyond!('mq.q', growing)).toBe(false)
    } finally {
      await Promise.all([a.close(), b.close(), other.close()])
    }
  })
})
