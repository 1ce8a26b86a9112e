import fc from 'fast-check'
import { describe, expect, it, vi } from 'vitest'
import type { BusMessage } from '../../services/common/bus/bus.ts'
import { createTestNatsBus } from '../helpers/nats.ts'
import { subjectMatches, validateSubject } from '../../services/common/bus/bus.ts'
import {
  filterToSubjects,
  subjectToTopic,
  topicToSubject,
} from '../../services/common/bus/topic.ts'

// MQTT levels: any characters but `/`, `+`, `#` (those are separators or filter-only) and NUL.
const level = fc
  .string({
    unit: fc.oneof(
      fc.constantFrom(
        '.',
        '%',
        ' ',
        '\t',
        '\r',
        '\n',
        '*',
        '>',
        '/',
        'a',
        'B',
        '0',
        '_',
        '-',
        'é',
        '$'
      ),
      fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })
    ),
    maxLength: 8,
  })
  .map((s) => s.replace(/[/+#\0]/g, ''))
const topic = fc.array(level, { minLength: 1, maxLength: 6 }).map((levels) => levels.join('/'))

describe('MQTT topic ↔ NATS subject', () => {
  it('matches nats-server for ordinary topics (ARCHITECTURE.md §13)', () => {
    expect(
      ['a/b', '/a', 'a//b', 'a/', 'spBv1.0/x', 'a b/*/>', '%/x', ''].map(topicToSubject)
    ).toEqual(['a.b', '/.a', 'a./.b', 'a./', 'spBv1//0.x', 'a%20b.%2A.%3E', '%25.x', '/'])
  })

  it('round-trips every topic', () => {
    fc.assert(
      fc.property(topic, (t) => {
        expect(subjectToTopic(topicToSubject(t))).toBe(t)
      }),
      {
        numRuns: 2_000,
      }
    )
  })

  it('is injective: different topics never share a subject', () => {
    fc.assert(
      fc.property(topic, topic, (a, b) => {
        if (a !== b) expect(topicToSubject(a)).not.toBe(topicToSubject(b))
      }),
      { numRuns: 2_000 }
    )
  })

  it('always yields a valid wildcard-free subject with one token per level', () => {
    fc.assert(
      fc.property(topic, (t) => {
        const subject = topicToSubject(t)
        expect(() => validateSubject(subject)).not.toThrow()
        expect(subject.split('.')).toHaveLength(t.split('/').length)
      })
    )
  })

  it('maps filters: `+`→`*`, `#`→`>`, and `a/#` also to its parent `a`', () => {
    expect(['a/#', '#', 'a/+/c', '+', 'a/+/#', 'a.b/*', '/#'].map(filterToSubjects)).toEqual([
      ['a.>', 'a'],
      ['>'],
      ['a.*.c'],
      ['*'],
      ['a.*.>', 'a.*'],
      ['a//b.%2A'],
      ['/.>', '/'],
    ])
  })

  it('matches through NATS exactly the topics the MQTT filter matches', () => {
    // Filters built from topic levels with some replaced by `+`, and maybe a trailing `#`.
    const filter = fc
      .tuple(
        fc.array(fc.oneof(level, fc.constant('+')), { minLength: 1, maxLength: 4 }),
        fc.boolean()
      )
      .map(([levels, hash]) => [...levels, ...(hash ? ['#'] : [])].join('/'))
    fc.assert(
      fc.property(filter, topic, (f, t) => {
        const subjects = filterToSubjects(f).map((s) => s.split('.'))
        const viaNats = subjects.some((s) => subjectMatches(s, topicToSubject(t).split('.')))
        expect(viaNats).toBe(mqttMatches(f, t))
      }),
      { numRuns: 2_000 }
    )
  })
})

describe('encoded topics on a real nats-server', () => {
  it('carry every sampled topic through the server unchanged', async () => {
    await using bus = await createTestNatsBus()
    const seen: BusMessage[] = []
    await bus.subscribe('>', (m) => seen.push(m))
    const topics = [...new Set(fc.sample(topic, { numRuns: 300, seed: 42 }))]
    for (const t of topics) bus.publish(topicToSubject(t), new Uint8Array(0))
    await vi.waitFor(() => expect(seen).toHaveLength(topics.length), { timeout: 5_000 })
    expect(seen.map((m) => subjectToTopic(m.subject))).toEqual(topics)
  })
})

/** MQTT 3.1.1 §4.7 matching, written plainly as the oracle. */
function mqttMatches(filter: string, topic: string): boolean {
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true // also matches the parent level [MQTT-4.7.1-2]
    if (i >= t.length || (f[i] !== '+' && f[i] !== t[i])) return false
  }
  return f.length === t.length
}
