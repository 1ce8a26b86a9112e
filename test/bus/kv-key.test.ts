import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { isKvKey } from '../../services/common/bus/bus.ts'

// What the NATS KV client accepts (nats.js kv.ts validateKey), as a regular expression.
const NATS_KV_KEY = /^[-/=\w]+(?:\.[-/=\w]+)*$/

describe('KV keys', () => {
  it('accepts exactly what the NATS KV client accepts', () => {
    const chars = fc.constantFrom(...'aZ09_-/=.. *>$%é\u0000\n'.split(''))
    fc.assert(
      fc.property(fc.array(chars, { maxLength: 12 }), (cs) => {
        const key = cs.join('')
        expect(isKvKey(key)).toBe(NATS_KV_KEY.test(key))
      }),
      { numRuns: 20_000 }
    )
    for (const key of ['a', 'a.b', 'bX-_/=.0', 'a.b.c'])
      expect([key, isKvKey(key)]).toEqual([key, true])
    for (const key of ['', '.', 'a.', '.a', 'a..b', 'a.*', 'a b', 'é'])
      expect([key, isKvKey(key)]).toEqual([key, false])
  })
})
