import { compileBinding, type Binding, type CompiledBinding } from '../../machines/index.ts'

/** Where a topic goes, for a set of bindings (ARCHITECTURE.md §8), both ways. */
export interface Remapper {
  /** Local subscription filters (out, both), none under another: a broker may deliver once per match. */
  readonly filters: readonly string[]
  /** Upstream topics for a local topic: one per binding going out that covers it (usually one). */
  map(topic: string): string[]
  /** Upstream subscription filters (in, both). */
  readonly upstreamFilters: readonly string[]
  /** The local topic for an upstream one (in, both), or null; bindings coming in never overlap. */
  toLocal(topic: string): string | null
}

/** `source/#` also matches `source` itself [MQTT-4.7.1-2]. */
export const sourceFilter = (source: string): string => `${source}/#`

export function createRemapper(bindings: readonly Binding[]): Remapper {
  const compiled = bindings.map(compileBinding)
  // Longest source first, so the common single match is found early; a topic under two
  // overlapping sources is mirrored to both targets, as two separate bindings promise.
  const out = compiled
    .filter((c) => c.direction !== 'in')
    .sort((a, b) => b.binding.source.length - a.binding.source.length)
  const coming = compiled.filter((c) => c.direction !== 'out')
  return {
    filters: outermost(out.map((c) => c.localFilter)),
    map(topic) {
      const targets: string[] = []
      for (const c of out) {
        const t = c.toUpstream(topic)
        if (t !== null) targets.push(t)
      }
      return targets.length > 1 ? [...new Set(targets)] : targets
    },
    upstreamFilters: outermost(coming.map((c: CompiledBinding) => c.upstreamFilter)),
    toLocal(topic) {
      for (const c of coming) {
        const local = c.toLocal(topic)
        if (local !== null) return local
      }
      return null
    },
  }
}

/** The filters (each `…/#`) no other filter of the list covers, each once. */
function outermost(filters: readonly string[]): string[] {
  const unique = [...new Set(filters)]
  return unique.filter((f) => !unique.some((o) => o !== f && covers(o, f)))
}

/** Does subtree filter `outer` (`a/+/#`) match everything `inner` does? */
function covers(outer: string, inner: string): boolean {
  const o = outer.split('/').slice(0, -1)
  const i = inner.split('/').slice(0, -1)
  if (o.length > i.length) return false
  return o.every((l, n) => l === '+' || l === i[n])
}

/** True when two binding lists mirror the same things (order does not matter). */
export function sameBindings(a: readonly Binding[], b: readonly Binding[]): boolean {
  const key = (list: readonly Binding[]) =>
    list
      .map((x) => `${x.source}\u0000${x.target}\u0000${x.direction ?? 'out'}`)
      .sort()
      .join('\u0001')
  return key(a) === key(b)
}
