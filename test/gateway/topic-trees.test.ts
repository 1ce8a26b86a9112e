import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createRetainedTree } from '../../services/gateway/retained-tree.ts'
import { createSubTrie, filterMatches } from '../../services/gateway/topic-match.ts'

const level = fc.constantFrom('a', 'b', 'line3', '', '$SYS', 'x y')
const topic = fc.array(level, { minLength: 1, maxLength: 4 }).map((ls) => ls.join('/'))
const filterLevel = fc.oneof(level, fc.constant('+'))
const filter = fc
  .tuple(fc.array(filterLevel, { minLength: 0, maxLength: 4 }), fc.boolean())
  .filter(([ls, hash]) => ls.length > 0 || hash)
  .map(([ls, hash]) => [...ls, ...(hash ? ['#'] : [])].join('/'))

describe('retained tree', () => {
  it('matches exactly what the MQTT filter rules match, once each, after sets and deletes', () => {
    fc.assert(
      fc.property(
        fc.array(topic, { maxLength: 30 }),
        fc.array(topic, { maxLength: 10 }),
        fc.array(filter, { minLength: 1, maxLength: 3 }),
        (stored, deleted, filters) => {
          const tree = createRetainedTree<string>()
          for (const t of stored) tree.set(t, t)
          for (const t of deleted) tree.delete(t)
          const present = [...new Set(stored)].filter((t) => !deleted.includes(t))
          expect(tree.size).toBe(present.length)
          const expected = present.filter((t) => filters.some((f) => filterMatches(f, t)))
          expect(tree.match(filters).sort()).toEqual(expected.sort())
        }
      ),
      { numRuns: 2_000 }
    )
  })

  it('keeps $ topics from first-level wildcards and matches the parent with # [MQTT-4.7.2-1] [MQTT-4.7.1-2]', () => {
    const tree = createRetainedTree<string>()
    for (const t of ['$SYS/up', 'plant1', 'plant1/line3/temp']) tree.set(t, t)
    expect(tree.match(['#']).sort()).toEqual(['plant1', 'plant1/line3/temp'])
    expect(tree.match(['+/up'])).toEqual([])
    expect(tree.match(['$SYS/#'])).toEqual(['$SYS/up'])
    expect(tree.match(['plant1/#']).sort()).toEqual(['plant1', 'plant1/line3/temp'])
  })
})

describe('subscription trie', () => {
  it('matches a topic against exactly the stored filters that match it, after adds and removes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom('c1', 'c2', 'c3'), filter), { maxLength: 20 }),
        fc.array(fc.tuple(fc.constantFrom('c1', 'c2', 'c3'), filter), { maxLength: 10 }),
        topic,
        (added, removed, t) => {
          const trie = createSubTrie()
          const live = new Map<string, { clientId: string; topic: string }>()
          for (const [clientId, f] of added) {
            trie.add({ clientId, topic: f, qos: 1 })
            live.set(`${clientId} ${f}`, { clientId, topic: f })
          }
          for (const [clientId, f] of removed) {
            trie.remove(clientId, f)
            live.delete(`${clientId} ${f}`)
          }
          expect(trie.size).toBe(live.size)
          const expected = [...live.values()].filter((s) => filterMatches(s.topic, t))
          const key = (s: { clientId: string; topic: string }) => `${s.clientId} ${s.topic}`
          expect(trie.match(t).map(key).sort()).toEqual(expected.map(key).sort())
        }
      ),
      { numRuns: 2_000 }
    )
  })
})
