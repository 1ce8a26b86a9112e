import type { Binding } from '../../machines/index.ts'

/** Where a local topic goes upstream, for a set of bindings (ARCHITECTURE.md §8). */
export interface Remapper {
  /** One subscription filter per distinct source: `source/#` also matches `source` [MQTT-4.7.1-2]. */
  readonly filters: readonly string[]
  /** Upstream topics for a local topic: one per binding whose source covers it (usually one). */
  map(topic: string): string[]
}

export const sourceFilter = (source: string): string => `${source}/#`

export function createRemapper(bindings: readonly Binding[]): Remapper {
  // Longest source first, so the common single match is found early; a topic under two
  // overlapping sources is mirrored to both targets, as two separate bindings promise.
  const sorted = [...bindings].sort((a, b) => b.source.length - a.source.length)
  // A source under another source needs no filter of its own: a broker may deliver a message
  // once per matching subscription, which would mirror it twice.
  const sources = [...new Set(sorted.map((b) => b.source))]
  const roots = sources.filter((s) => !sources.some((o) => o !== s && s.startsWith(o + '/')))
  const filters = roots.map(sourceFilter)
  return {
    filters,
    map(topic) {
      const out: string[] = []
      for (const { source, target } of sorted) {
        if (topic === source) out.push(target)
        else if (topic.startsWith(source) && topic.charCodeAt(source.length) === 47 /* '/' */) {
          out.push(target + topic.slice(source.length))
        }
      }
      return out.length > 1 ? [...new Set(out)] : out
    },
  }
}

/** True when two binding lists mirror the same things (order does not matter). */
export function sameBindings(a: readonly Binding[], b: readonly Binding[]): boolean {
  const key = (list: readonly Binding[]) =>
    list
      .map((x) => `${x.source}\u0000${x.target}`)
      .sort()
      .join('\u0001')
  return key(a) === key(b)
}
