import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { subjectMatches } from '../../services/common/bus/bus.ts'
import { createSubjectIndex } from '../../services/common/bus/subject-index.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'

const token = fc.constantFrom('a', 'b', 'c')
const subject = fc.array(token, { minLength: 1, maxLength: 4 })
const pattern = fc
  .tuple(
    fc.array(fc.constantFrom('a', 'b', 'c', '*'), { minLength: 0, maxLength: 4 }),
    fc.boolean()
  )
  .map(([tokens, rest]) => (rest || tokens.length === 0 ? [...tokens, '>'] : tokens))

describe('the subject index', () => {
  it('matches exactly what a scan with subjectMatches matches, through adds and removes', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(pattern, fc.boolean()), { minLength: 1, maxLength: 12 }),
        fc.array(subject, { minLength: 1, maxLength: 8 }),
        (ops, subjects) => {
          const index = createSubjectIndex<number>()
          const live = new Map<number, string[]>()
          ops.forEach(([p, removeLater], id) => {
            index.add(p, id)
            live.set(id, p)
            if (removeLater && id % 2 === 0) {
              index.remove(p, id)
              live.delete(id)
            }
          })
          for (const s of subjects) {
            const want = [...live].filter(([, p]) => subjectMatches(p, s)).map(([id]) => id)
            expect(index.match(s).sort((a, b) => a - b)).toEqual(want)
          }
        }
      ),
      { numRuns: 500 }
    )
  })

  it('routes on the in-process bus: wildcards, queue groups, and nothing after unsubscribe', async () => {
    const bus = createInProcessBus({ prefix: 'idx' })
    const got: string[] = []
    const a = await bus.subscribe('t.*.x', (m) => void got.push(`star:${m.subject}`))
    await bus.subscribe('t.>', (m) => void got.push(`rest:${m.subject}`))
    let q1 = 0
    let q2 = 0
    await bus.subscribe('t.q', () => void q1++, { queue: 'g' })
    await bus.subscribe('t.q', () => void q2++, { queue: 'g' })
    await bus.publish('t.1.x', new Uint8Array())
    await bus.publish('t.q', new Uint8Array())
    await bus.publish('t.q', new Uint8Array())
    await a.unsubscribe()
    await bus.publish('t.2.x', new Uint8Array())
    await new Promise((r) => setTimeout(r, 10))
    expect(got).toEqual(['star:t.1.x', 'rest:t.1.x', 'rest:t.q', 'rest:t.q', 'rest:t.2.x'])
    expect([q1, q2]).toEqual([1, 1])
    await bus.close()
  })
})
