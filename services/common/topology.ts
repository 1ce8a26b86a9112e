/**
 * Link-state topology of a bridge mesh (ARCHITECTURE.md §9, "a spanning tree over the bridge
 * graph, as MQTT-ST does"). Pure: no I/O, no clock of its own, so every instance that holds the
 * same adverts computes the same tree.
 *
 * Each instance originates an advert `{origin, version, neighbours, out, maxAgeMs}` (like an OSPF
 * router LSA); adverts flood over every bridge edge and are merged by highest version per origin.
 * An advert carries its own lifetime (as a DNS record carries its TTL) and travels with its age,
 * so a relay never needs the origin's settings and an expired advert cannot be revived by a
 * neighbour that still holds it: its age only grows (OSPF MaxAge, RFC 2328 §14).
 */

export interface Advert {
  origin: string
  /** Higher wins; the origin bumps it on every change and refresh. */
  version: number
  /** Instances this origin is bridged with right now (either direction), sorted. */
  neighbours: string[]
  /** The subset this origin forwards into (its own Active upstream links), sorted. */
  out: string[]
  /** The advert is dropped once it is this old (ms since the origin made it). */
  maxAgeMs: number
  /**
   * The public keys of `neighbours` as the origin learned them in its handshakes: how a receiver
   * that never met an instance comes to know its key, vouched for by a chain of signed adverts.
   */
  keys?: Record<string, string>
  /** The origin's Ed25519 signature over `advertPayload` (base64url). */
  signature?: string
}

/**
 * What the origin signs: everything but the age (which grows in transit) and the signature. The
 * lists are sorted and deduplicated as `fromWire` stores them, so a relay cannot reorder them.
 */
export function advertPayload(ad: Advert): Uint8Array {
  const sorted = (xs: readonly string[]) => [...new Set(xs)].sort()
  const keys = Object.entries(ad.keys ?? {}).sort(([p], [q]) => (p < q ? -1 : p > q ? 1 : 0))
  return new TextEncoder().encode(
    JSON.stringify([
      'ub-advert-1',
      ad.origin,
      ad.version,
      sorted(ad.neighbours),
      sorted(ad.out),
      ad.maxAgeMs,
      keys,
    ])
  )
}

/** As a database holds it: when this version arrived, on the local clock, less its age then. */
export interface StoredAdvert extends Advert {
  bornAt: number
}

/** As it travels: the age replaces the local timestamp, so clocks need not agree. */
export interface WireAdvert extends Advert {
  ageMs: number
}

export interface Edge {
  /** a < b */
  a: string
  b: string
  /** Forwarded both ways: what the tree prefers (see `spanningTree`). */
  both: boolean
  /** Forwarded at least one way (a link exists, not only a stale request). */
  forwarded: boolean
}

export interface Topology {
  nodes: string[]
  edges: Edge[]
  /** Keys (`edgeKey`) of the edges in the spanning tree (a forest when the graph is split). */
  tree: Set<string>
}

export const edgeKey = (x: string, y: string): string => (x < y ? `${x} ${y}` : `${y} ${x}`)

export const isLive = (a: StoredAdvert, now: number): boolean => now - a.bornAt < a.maxAgeMs

export const toWire = ({ bornAt, ...rest }: StoredAdvert, now: number): WireAdvert => ({
  ...rest,
  ageMs: Math.max(0, now - bornAt),
})

/** Null when it has already expired: a relay must not extend its life. */
export function fromWire({ ageMs, ...rest }: WireAdvert, now: number): StoredAdvert | null {
  if (ageMs >= rest.maxAgeMs) return null
  return {
    ...rest,
    neighbours: [...new Set(rest.neighbours)].sort(),
    out: [...new Set(rest.out)].sort(),
    bornAt: now - ageMs,
  }
}

/** Does `incoming` replace `current`? Highest version wins; an expired copy yields to anything. */
export function supersedes(
  incoming: StoredAdvert,
  current: StoredAdvert | undefined,
  now: number
): boolean {
  if (!isLive(incoming, now)) return false
  if (!current || !isLive(current, now)) return true
  return incoming.version > current.version
}

/** Merge `incoming` into `db` (by origin); returns the adverts that changed it. */
export function mergeAdverts(
  db: Map<string, StoredAdvert>,
  incoming: Iterable<StoredAdvert>,
  now: number
): StoredAdvert[] {
  const changed: StoredAdvert[] = []
  for (const ad of incoming) {
    if (!supersedes(ad, db.get(ad.origin), now)) continue
    db.set(ad.origin, ad)
    changed.push(ad)
  }
  return changed
}

/**
 * Edges between live origins. {X, Y} counts only when X lists Y *and* Y lists X (OSPF's two-way
 * check): a dead instance's advert keeps listing its neighbours until it expires, but its
 * neighbours stop listing it as soon as they notice, so the edge goes at once.
 */
export function edgesOf(adverts: Iterable<StoredAdvert>, now: number): Edge[] {
  const live = new Map<string, StoredAdvert>()
  for (const ad of adverts) if (isLive(ad, now)) live.set(ad.origin, ad)
  const edges: Edge[] = []
  for (const [x, ad] of live) {
    for (const y of ad.neighbours) {
      const other = live.get(y)
      if (!(x < y) || !other || !other.neighbours.includes(x)) continue
      const xy = ad.out.includes(y)
      const yx = other.out.includes(x)
      edges.push({ a: x, b: y, both: xy && yx, forwarded: xy || yx })
    }
  }
  return edges
}

const rank = (e: Edge): number => (e.both ? 0 : e.forwarded ? 1 : 2)
const byRankThenIds = (p: Edge, q: Edge): number =>
  rank(p) - rank(q) || (p.a < q.a ? -1 : p.a > q.a ? 1 : p.b < q.b ? -1 : p.b > q.b ? 1 : 0)

/**
 * Kruskal over the edges sorted by (both ways first, then one way, then ids): deterministic, so
 * every instance blocks the same edges. Edges bridged both ways come first because a tree edge
 * forwarded one way only cuts the other direction off (README, "Limits").
 */
export function spanningTree(adverts: Iterable<StoredAdvert>, now: number): Topology {
  const all = [...adverts] // iterated twice: a Map iterator would be spent after the first
  const edges = edgesOf(all, now).sort(byRankThenIds)
  const nodes = new Set<string>()
  for (const ad of all) if (isLive(ad, now)) nodes.add(ad.origin)
  const parent = new Map<string, string>([...nodes].map((n) => [n, n]))
  const find = (n: string): string => {
    let root = n
    while (parent.get(root) !== root) root = parent.get(root)!
    for (let m = n; m !== root;) {
      const next = parent.get(m)!
      parent.set(m, root)
      m = next
    }
    return root
  }
  const tree = new Set<string>()
  for (const e of edges) {
    const ra = find(e.a)
    const rb = find(e.b)
    if (ra === rb) continue
    parent.set(ra < rb ? rb : ra, ra < rb ? ra : rb)
    tree.add(edgeKey(e.a, e.b))
  }
  return { nodes: [...nodes].sort(), edges, tree }
}

/** Can `from` reach `to` over the edges (ignoring the tree)? */
export function reachable(topology: Topology, from: string, to: string): boolean {
  const adj = new Map<string, string[]>()
  for (const { a, b } of topology.edges) {
    adj.set(a, [...(adj.get(a) ?? []), b])
    adj.set(b, [...(adj.get(b) ?? []), a])
  }
  const seen = new Set([from])
  const queue = [from]
  while (queue.length > 0) {
    const n = queue.shift()!
    if (n === to) return true
    for (const m of adj.get(n) ?? []) {
      if (seen.has(m)) continue
      seen.add(m)
      queue.push(m)
    }
  }
  return false
}

/**
 * Should `self` stop forwarding to `peer`? An edge in the graph forwards iff it is a tree edge.
 * A link the graph does not show yet (its adverts have not flooded back) is held only when the
 * peer is already reachable another way: then it would close a cycle; otherwise it joins two
 * parts that no other path connects, and forwarding at once cannot loop (as far as we know).
 */
export function shouldBlock(topology: Topology, self: string, peer: string): boolean {
  const key = edgeKey(self, peer)
  if (topology.edges.some((e) => edgeKey(e.a, e.b) === key)) return !topology.tree.has(key)
  return reachable(topology, self, peer)
}
