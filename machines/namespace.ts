/**
 * Namespace rules (ARCHITECTURE.md §8): a namespace is a topic prefix with no wildcards, no empty
 * level, no leading or trailing `/`, not starting with `$`. `#` alone, as a grant, means
 * "everything but `$` topics".
 */
export const GRANT_ALL = '#'
const MAX_NAMESPACE_BYTES = 1_024 // far below the 65,535-byte MQTT topic limit; keeps NATS subjects short

/** Why `ns` is not a valid namespace, or null when it is. */
export function namespaceProblem(ns: unknown): string | null {
  if (typeof ns !== 'string') return 'must be a string'
  if (ns.length === 0) return 'must not be empty'
  if (new TextEncoder().encode(ns).length > MAX_NAMESPACE_BYTES)
    return `must be at most ${MAX_NAMESPACE_BYTES} bytes`
  if (ns.startsWith('$')) return "must not start with '$'"
  if (ns.includes('+') || ns.includes('#')) return "must not contain the wildcards '+' or '#'"
  if (ns.startsWith('/') || ns.endsWith('/')) return "must not start or end with '/'"
  if (ns.includes('//')) return 'must not contain an empty level'
  if (ns.includes('\u0000')) return 'must not contain NUL' // [MQTT-1.5.3-2]
  return null
}

/** True when `topic` is `ns` itself or lies under it. */
export function isWithin(topic: string, ns: string): boolean {
  if (ns === GRANT_ALL) return !topic.startsWith('$')
  return topic === ns || topic.startsWith(ns + '/')
}

export function isWithinAny(topic: string, namespaces: readonly string[]): boolean {
  return namespaces.some((ns) => isWithin(topic, ns))
}
