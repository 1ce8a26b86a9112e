/** MQTT topic filter matching, and a small trie of persistent subscriptions by filter. */

/**
 * Does `filter` match `topic`? `#` also matches the parent level [MQTT-4.7.1-2]; a filter that
 * starts with a wildcard never matches a `$` topic [MQTT-4.7.2-1].
 */
export function filterMatches(filter: string, topic: string): boolean {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length || (f[i] !== '+' && f[i] !== t[i])) return false
  }
  return f.length === t.length
}

export interface StoredSub {
  clientId: string
  topic: string
  qos: number
  rh?: number
  rap?: boolean
  nl?: boolean
}

interface Node {
  children: Map<string, Node>
  subs: Map<string, StoredSub> // by clientId
}

const node = (): Node => ({ children: new Map(), subs: new Map() })

/** Filters → subscriptions, matched against a topic in O(levels) rather than O(subscriptions). */
export function createSubTrie() {
  const root = node()
  let count = 0

  function walk(n: Node, levels: string[], i: number, out: StoredSub[]): void {
    const hash = n.children.get('#')
    if (hash) out.push(...hash.subs.values()) // `#` matches this level and everything below
    if (i === levels.length) {
      out.push(...n.subs.values())
      return
    }
    const exact = n.children.get(levels[i]!)
    if (exact) walk(exact, levels, i + 1, out)
    const plus = n.children.get('+')
    if (plus) walk(plus, levels, i + 1, out)
  }

  return {
    get size(): number {
      return count
    },
    add(sub: StoredSub): void {
      let n = root
      for (const level of sub.topic.split('/')) {
        let next = n.children.get(level)
        if (!next) n.children.set(level, (next = node()))
        n = next
      }
      if (!n.subs.has(sub.clientId)) count++
      n.subs.set(sub.clientId, sub)
    },
    remove(clientId: string, topic: string): void {
      const path: Node[] = [root]
      const levels = topic.split('/')
      for (const level of levels) {
        const next = path[path.length - 1]!.children.get(level)
        if (!next) return
        path.push(next)
      }
      if (!path[path.length - 1]!.subs.delete(clientId)) return
      count--
      // Prune what holds nothing any more: session churn must not grow the trie for ever.
      for (let i = levels.length; i > 0; i--) {
        const n = path[i]!
        if (n.subs.size > 0 || n.children.size > 0) break
        path[i - 1]!.children.delete(levels[i - 1]!)
      }
    },
    match(topic: string): StoredSub[] {
      const out: StoredSub[] = []
      const levels = topic.split('/')
      if (topic.startsWith('$')) {
        // [MQTT-4.7.2-1]: only filters whose first level is literally the `$` level match.
        const first = root.children.get(levels[0]!)
        if (first) walk(first, levels, 1, out)
      } else walk(root, levels, 0, out)
      return out
    },
  }
}

export type SubTrie = ReturnType<typeof createSubTrie>
