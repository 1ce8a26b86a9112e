/**
 * Retained messages by topic level, so a SUBSCRIBE finds the ones its filter matches by walking
 * the filter's levels instead of testing every retained message. A Unified Namespace is mostly
 * retained state (tens of thousands of topics), and every subscriber, bridge reconnect included,
 * asks for it.
 */
interface Node<T> {
  children: Map<string, Node<T>>
  value: T | undefined
}

const node = <T>(): Node<T> => ({ children: new Map(), value: undefined })

export interface RetainedTree<T> {
  readonly size: number
  set(topic: string, value: T): void
  delete(topic: string): void
  /** Values whose topics match any of `filters`, each once [MQTT-3.3.1-6]. */
  match(filters: readonly string[]): T[]
}

export function createRetainedTree<T>(): RetainedTree<T> {
  const root = node<T>()
  let size = 0

  function collectAll(n: Node<T>, out: Set<T>): void {
    if (n.value !== undefined) out.add(n.value)
    for (const child of n.children.values()) collectAll(child, out)
  }

  function walk(n: Node<T>, levels: string[], i: number, out: Set<T>): void {
    if (i === levels.length) {
      if (n.value !== undefined) out.add(n.value)
      return
    }
    const level = levels[i]!
    // A wildcard in the first level never matches a `$` topic [MQTT-4.7.2-1].
    const visible = (name: string) => i > 0 || !name.startsWith('$')
    if (level === '#') {
      // `#` matches the parent level too [MQTT-4.7.1-2].
      if (n.value !== undefined && i > 0) out.add(n.value)
      for (const [name, child] of n.children) if (visible(name)) collectAll(child, out)
      return
    }
    if (level === '+') {
      for (const [name, child] of n.children) if (visible(name)) walk(child, levels, i + 1, out)
      return
    }
    const child = n.children.get(level)
    if (child) walk(child, levels, i + 1, out)
  }

  return {
    get size() {
      return size
    },
    set(topic, value) {
      let n = root
      for (const level of topic.split('/')) {
        let next = n.children.get(level)
        if (!next) n.children.set(level, (next = node()))
        n = next
      }
      if (n.value === undefined) size++
      n.value = value
    },
    delete(topic) {
      const path: Node<T>[] = [root]
      const levels = topic.split('/')
      for (const level of levels) {
        const next = path[path.length - 1]!.children.get(level)
        if (!next) return
        path.push(next)
      }
      const leaf = path[path.length - 1]!
      if (leaf.value === undefined) return
      leaf.value = undefined
      size--
      // Prune the branch that holds nothing any more, so cleared topics do not pile up.
      for (let i = levels.length; i > 0; i--) {
        const n = path[i]!
        if (n.value !== undefined || n.children.size > 0) break
        path[i - 1]!.children.delete(levels[i - 1]!)
      }
    },
    match(filters) {
      const out = new Set<T>()
      for (const filter of filters) walk(root, filter.split('/'), 0, out)
      return [...out]
    },
  }
}
