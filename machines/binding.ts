/**
 * Bindings (ARCHITECTURE.md §8): which local subtree mirrors to which upstream subtree, and in
 * which direction. Pure: the store validates with it, the supervisor routes with it.
 *
 * A source is a topic pattern whose levels are literal or `+`; a target's levels are literal or
 * `{n}`, the n-th `+` of the source. `site/+/line/+` → `acme/{1}/{2}` mirrors
 * `site/s1/line/l2/temp` as `acme/s1/l2/temp`. A binding always covers its whole subtree; a
 * trailing `/#` may be written on both sides and means the same. Without `+` a binding is the
 * plain prefix swap it always was.
 */
import { GRANT_ALL, isWithinAny, namespaceProblem } from './namespace.ts'

export type Direction = 'out' | 'in' | 'both'
export const DIRECTIONS: readonly Direction[] = ['out', 'in', 'both']

export interface Binding {
  source: string
  target: string
  /** `out` (the default): local → upstream; `in`: upstream → local; `both`. */
  direction?: Direction
}

const CAPTURE = /^\{([1-9][0-9]?)\}$/

type Level = { literal: string } | { capture: number }

/** A pattern's levels, its trailing `/#` dropped. */
const levelsOf = (pattern: string): string[] =>
  (pattern.endsWith('/#') ? pattern.slice(0, -2) : pattern).split('/')

/** Why `b` is not a binding, or null. */
export function bindingProblem(b: Binding): string | null {
  const direction = b.direction ?? 'out'
  if (!DIRECTIONS.includes(direction)) return `direction must be one of ${DIRECTIONS.join(', ')}`
  const source = levelsOf(b.source)
  const wildcards = source.filter((l) => l === '+').length
  // The namespace rules hold for the literal parts; a `+` or `{n}` level stands for one level.
  const sourceProblem = namespaceProblem(source.map((l) => (l === '+' ? 'x' : l)).join('/'))
  if (sourceProblem)
    return `source ${sourceProblem.replace('wildcards', "wildcards (but whole '+' levels)")}`
  const target = levelsOf(b.target)
  const used = new Map<number, number>()
  for (const l of target) {
    const m = CAPTURE.exec(l)
    if (!m) continue
    const n = Number(m[1])
    if (n > wildcards) return `target level '${l}' names a '+' the source does not have`
    used.set(n, (used.get(n) ?? 0) + 1)
  }
  const targetProblem = namespaceProblem(target.map((l) => (CAPTURE.test(l) ? 'x' : l)).join('/'))
  if (targetProblem) return `target ${targetProblem}`
  if (/[{}]/.test(target.filter((l) => !CAPTURE.test(l)).join('/')))
    return "target braces must be a whole level such as '{1}'"
  if (direction !== 'out') {
    // Coming down, the local topic is rebuilt from the upstream one: every `+` must be there once.
    for (let n = 1; n <= wildcards; n++)
      if (used.get(n) !== 1)
        return `direction '${direction}' needs an invertible remap: the target must use {${n}} exactly once`
  }
  return null
}

export interface CompiledBinding {
  binding: Binding
  direction: Direction
  /** What the bridge subscribes to locally (out, both). */
  localFilter: string
  /** What the bridge subscribes to upstream (in, both). */
  upstreamFilter: string
  /** The target's levels before its first capture: what the grants must cover. */
  targetPrefix: string
  /** The upstream topic for a local one, or null when the binding does not cover it. */
  toUpstream(topic: string): string | null
  /** The local topic for an upstream one, or null (in, both). */
  toLocal(topic: string): string | null
}

/** A binding that passed `bindingProblem`, ready to route. */
export function compileBinding(binding: Binding): CompiledBinding {
  const source: Level[] = levelsOf(binding.source).map((l, i, all) =>
    l === '+' ? { capture: all.slice(0, i + 1).filter((x) => x === '+').length } : { literal: l }
  )
  const target: Level[] = levelsOf(binding.target).map((l) => {
    const m = CAPTURE.exec(l)
    return m ? { capture: Number(m[1]) } : { literal: l }
  })
  const filterOf = (levels: Level[]) =>
    [...levels.map((l) => ('literal' in l ? l.literal : '+')), '#'].join('/')
  const firstCapture = target.findIndex((l) => 'capture' in l)
  const fixed = firstCapture === -1 ? target : target.slice(0, firstCapture)
  return {
    binding,
    direction: binding.direction ?? 'out',
    localFilter: filterOf(source),
    upstreamFilter: filterOf(target),
    targetPrefix: fixed.map((l) => ('literal' in l ? l.literal : '')).join('/'),
    toUpstream: (topic) => rewrite(topic, source, target),
    toLocal: (topic) => rewrite(topic, target, source),
  }
}

/** `topic` matched against `from` (its captures kept), rebuilt as `to`, the rest appended. */
function rewrite(topic: string, from: Level[], to: Level[]): string | null {
  const levels = topic.split('/')
  if (levels.length < from.length) return null
  const captured: string[] = []
  for (let i = 0; i < from.length; i++) {
    const l = from[i]!
    if ('literal' in l) {
      if (levels[i] !== l.literal) return null
    } else captured[l.capture] = levels[i]!
  }
  const head = to.map((l) => ('literal' in l ? l.literal : captured[l.capture]!))
  return [...head, ...levels.slice(from.length)].join('/')
}

/** Can one topic lie under both patterns (levels literal or `+`/`{n}`, each a subtree)? */
function subtreesMeet(a: string, b: string): boolean {
  const la = levelsOf(a)
  const lb = levelsOf(b)
  const wild = (l: string) => l === '+' || CAPTURE.test(l)
  for (let i = 0; i < Math.min(la.length, lb.length); i++)
    if (!wild(la[i]!) && !wild(lb[i]!) && la[i] !== lb[i]) return false
  return true
}

/**
 * Why a list of valid bindings cannot hold together, or null: a binding that brings messages in
 * (`in`, `both`) may share its local subtree with no other binding (two would write one local
 * topic, or the one coming in would go straight back out) nor its upstream subtree with another
 * coming in. Bindings going out may overlap: a topic under two sources goes to both targets.
 */
export function bindingsProblem(
  bindings: readonly Binding[]
): { index: number; problem: string } | null {
  const seen = new Set<string>()
  for (let i = 0; i < bindings.length; i++) {
    const b = bindings[i]!
    if (seen.has(levelsOf(b.source).join('/')))
      return { index: i, problem: `source '${b.source}' is bound twice` }
    seen.add(levelsOf(b.source).join('/'))
    if ((b.direction ?? 'out') === 'out') continue
    for (let j = 0; j < bindings.length; j++) {
      const o = bindings[j]!
      if (j === i) continue
      if (subtreesMeet(b.source, o.source))
        return {
          index: i,
          problem: `source '${b.source}' (${b.direction}) shares local topics with '${o.source}'`,
        }
      if ((o.direction ?? 'out') !== 'out' && subtreesMeet(b.target, o.target))
        return {
          index: i,
          problem: `target '${b.target}' shares upstream topics with '${o.target}', both coming in`,
        }
    }
  }
  return null
}

/** Every topic the binding can write upstream lies inside the grants. */
export function bindingWithinGrants(b: Binding, grants: readonly string[]): boolean {
  const prefix = compileBinding(b).targetPrefix
  return prefix === '' ? grants.includes(GRANT_ALL) : isWithinAny(prefix, grants)
}

/** The same binding, written the one way it is stored: no trailing `/#`. */
export function normalBinding(b: Binding): Binding {
  return {
    source: levelsOf(b.source).join('/'),
    target: levelsOf(b.target).join('/'),
    ...(b.direction === undefined ? {} : { direction: b.direction }),
  }
}
