/**
 * Subscriptions by subject pattern, as a tree of tokens: finding those a subject matches visits
 * the tokens of that subject, not every subscription.
 *
 * The in-process hub scanned every subscription for every message. Each bridge link subscribes
 * about four subjects, so one supervisor with 1,000 links spent ~0.8 ms routing each MQTT
 * publish of the embedded gateway (npm run bench -- supervisor), a ceiling of ~1,200 publishes
 * a second for the whole process. NATS's own sublist is the same kind of tree.
 */
interface Node<T> {
  children: Map<string, Node<T>>
  star?: Node<T>
  /** Patterns ending here. */
  here: Set<T>
  /** Patterns ending in `>` here: they match one or more further tokens. */
  rest: Set<T>
}

const node = <T>(): Node<T> => ({ children: new Map(), here: new Set(), rest: new Set() })

export interface SubjectIndex<T> {
  add(patternTokens: readonly string[], item: T): void
  remove(patternTokens: readonly string[], item: T): void
  /** Every item whose pattern matches the subject (`*` one token, `>` one or more). */
  match(subjectTokens: readonly string[]): T[]
}

export function createSubjectIndex<T>(): SubjectIndex<T> {
  const root = node<T>()

  function walk(at: Node<T>, tokens: readonly string[], i: number, out: T[]): void {
    if (at.rest.size > 0 && i < tokens.length) for (const item of at.rest) out.push(item)
    if (i === tokens.length) {
      for (const item of at.here) out.push(item)
      return
    }
    const exact = at.children.get(tokens[i]!)
    if (exact) walk(exact, tokens, i + 1, out)
    if (at.star) walk(at.star, tokens, i + 1, out)
  }

  return {
    add(pattern, item) {
      let at = root
      for (let i = 0; i < pattern.length; i++) {
        const token = pattern[i]!
        if (token === '>' && i === pattern.length - 1) {
          at.rest.add(item)
          return
        }
        if (token === '*') at = at.star ??= node<T>()
        else {
          let next = at.children.get(token)
          if (!next) at.children.set(token, (next = node<T>()))
          at = next
        }
      }
      at.here.add(item)
    },
    remove(pattern, item) {
      // Nodes left empty are pruned on the way back, so unsubscribed subjects cost nothing.
      const path: Array<[Node<T>, string]> = []
      let at: Node<T> | undefined = root
      for (let i = 0; i < pattern.length && at; i++) {
        const token = pattern[i]!
        if (token === '>' && i === pattern.length - 1) {
          at.rest.delete(item)
          break
        }
        path.push([at, token])
        at = token === '*' ? at.star : at.children.get(token)
        if (at && i === pattern.length - 1) at.here.delete(item)
      }
      for (let k = path.length - 1; k >= 0; k--) {
        const [parent, token] = path[k]!
        const child = token === '*' ? parent.star : parent.children.get(token)
        if (!child || !isEmpty(child)) break
        if (token === '*') delete parent.star
        else parent.children.delete(token)
      }
    },
    match(tokens) {
      const out: T[] = []
      walk(root, tokens, 0, out)
      return out
    },
  }
}

const isEmpty = <T>(n: Node<T>): boolean =>
  n.here.size === 0 && n.rest.size === 0 && n.children.size === 0 && n.star === undefined
