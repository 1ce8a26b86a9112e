import { compileBinding, type Binding, type Direction } from '../../../machines/index.ts'
import { edgeKey, shouldBlock, type Topology } from '../../common/topology.ts'

/**
 * The dry run behind `GET /api/v1/route` (README, "Route dry run"): where one concrete topic
 * goes from this instance and where it can come from, link by link, with each link's health and
 * its place on the mesh's spanning tree. Pure: the route reads the store, the link statuses and
 * the topology database, and hands them here.
 */
export interface RouteUpstream {
  id: string
  host: string
  /** The machine's state: Pending, Approved, Active, … */
  status: string
  bindings: readonly Binding[]
  /** The bridge machine's state as the supervisor last wrote it, and the peer it learned. */
  link: { state: string; peerInstanceId: string | null } | null
}

/** Active: forwarding; Blocked: connected, off the spanning tree; down: connecting or failing. */
export type LinkHealth = 'Active' | 'Blocked' | 'down' | 'inactive'

export interface RouteHop {
  upstreamId: string
  host: string
  peerInstanceId: string | null
  binding: Binding
  direction: Direction
  /** Going out: the topic on the upstream. Coming in: the upstream topic that arrives as this one. */
  topic: string
  link: LinkHealth
  /** Instances from here to the peer along the spanning tree; null when the tree does not hold it. */
  treePath: string[] | null
  /** The link's edge is not in the graph yet and would close a cycle: it will be held Blocked. */
  closesCycle: boolean
}

export interface RoutePlan {
  topic: string
  instanceId: string
  out: RouteHop[]
  in: RouteHop[]
  /** Peers the topic reaches now (first hops over Active links); each applies its own bindings. */
  reaches: string[]
}

export function planRoute({
  topic,
  instanceId,
  upstreams,
  topology,
}: {
  topic: string
  instanceId: string
  upstreams: readonly RouteUpstream[]
  topology: Topology
}): RoutePlan {
  const out: RouteHop[] = []
  const coming: RouteHop[] = []
  for (const up of upstreams) {
    const peer = up.link?.peerInstanceId ?? null
    const hop = (binding: Binding, direction: Direction, at: string): RouteHop => ({
      upstreamId: up.id,
      host: up.host,
      peerInstanceId: peer,
      binding,
      direction,
      topic: at,
      link: healthOf(up),
      treePath: peer ? treePath(topology, instanceId, peer) : null,
      closesCycle: peer ? closesCycle(topology, instanceId, peer) : false,
    })
    for (const binding of up.bindings) {
      const c = compileBinding(binding)
      // The local topic mapped up: where it goes (out, both), and which upstream topic comes
      // down as it (in, both).
      const upstreamTopic = c.toUpstream(topic)
      if (upstreamTopic === null) continue
      if (c.direction !== 'in') out.push(hop(binding, c.direction, upstreamTopic))
      if (c.direction !== 'out' && c.toLocal(upstreamTopic) === topic)
        coming.push(hop(binding, c.direction, upstreamTopic))
    }
  }
  const reaches = [
    ...new Set(
      out.filter((h) => h.link === 'Active' && h.peerInstanceId).map((h) => h.peerInstanceId!)
    ),
  ]
  return { topic, instanceId, out, in: coming, reaches }
}

function healthOf(up: RouteUpstream): LinkHealth {
  if (up.status !== 'Active') return 'inactive'
  if (up.link?.state === 'Forwarding') return 'Active'
  if (up.link?.state === 'Blocked') return 'Blocked'
  return 'down'
}

/** The path from `from` to `to` over tree edges only, or null. */
export function treePath(topology: Topology, from: string, to: string): string[] | null {
  const adjacent = new Map<string, string[]>()
  for (const { a, b } of topology.edges) {
    if (!topology.tree.has(edgeKey(a, b))) continue
    adjacent.set(a, [...(adjacent.get(a) ?? []), b])
    adjacent.set(b, [...(adjacent.get(b) ?? []), a])
  }
  const cameFrom = new Map<string, string | null>([[from, null]])
  const queue = [from]
  while (queue.length > 0) {
    const n = queue.shift()!
    if (n === to) {
      const path: string[] = []
      for (let m: string | null = n; m !== null; m = cameFrom.get(m)!) path.unshift(m)
      return path
    }
    for (const m of adjacent.get(n) ?? []) {
      if (cameFrom.has(m)) continue
      cameFrom.set(m, n)
      queue.push(m)
    }
  }
  return null
}

/** A link the graph does not show yet, to a peer reachable another way: it would close a cycle. */
function closesCycle(topology: Topology, self: string, peer: string): boolean {
  const known = topology.edges.some((e) => edgeKey(e.a, e.b) === edgeKey(self, peer))
  return !known && shouldBlock(topology, self, peer)
}
