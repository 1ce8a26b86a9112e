import { edgeKey, isLive, spanningTree, type StoredAdvert } from '../../common/topology.ts'
import type { RouteUpstream } from './route-plan.ts'

/**
 * The picture behind `GET /api/v1/mesh` (docs/CONSOLE.md, Mesh): the instances this one knows
 * of and the bridge links between them, each Active (forwarding, on the spanning tree), Blocked
 * (held off the tree to break a cycle, as MQTT-ST does) or down. Pure, like `planRoute`.
 */
export type MeshEdgeState = 'Active' | 'Blocked' | 'down'

export interface MeshNode {
  id: string
  self: boolean
}

export interface MeshEdge {
  /** The side that forwards into the other (its upstream link); the smaller id when neither says. */
  from: string
  to: string
  /** This instance's upstream behind the edge, when it is one of ours. */
  upstreamId?: string
  state: MeshEdgeState
  onTree: boolean
  /** Forwarded both ways. */
  both: boolean
}

export interface MeshView {
  instanceId: string
  nodes: MeshNode[]
  edges: MeshEdge[]
}

export function buildMesh({
  instanceId,
  upstreams,
  adverts,
  now,
}: {
  instanceId: string
  upstreams: readonly RouteUpstream[]
  adverts: readonly StoredAdvert[]
  now: number
}): MeshView {
  const topology = spanningTree(adverts, now)
  const outOf = new Map<string, readonly string[]>()
  for (const ad of adverts) if (isLive(ad, now)) outOf.set(ad.origin, ad.out)
  const forwards = (x: string, y: string) => outOf.get(x)?.includes(y) ?? false

  const byPair = new Map<string, MeshEdge>()
  const edges: MeshEdge[] = []
  for (const e of topology.edges) {
    const onTree = topology.tree.has(edgeKey(e.a, e.b))
    const aFirst = forwards(e.a, e.b) || !forwards(e.b, e.a)
    const edge: MeshEdge = {
      from: aFirst ? e.a : e.b,
      to: aFirst ? e.b : e.a,
      state: !e.forwarded ? 'down' : onTree ? 'Active' : 'Blocked',
      onTree,
      both: e.both,
    }
    byPair.set(edgeKey(e.a, e.b), edge)
    edges.push(edge)
  }
  // Our own links: their status in the links bucket is fresher than any advert, and shows a
  // link the adverts do not carry yet (connecting, or failing before it ever reached the peer).
  for (const up of upstreams) {
    if (up.status !== 'Active') continue
    const peer = up.link?.peerInstanceId ?? null
    const state = linkState(up.link?.state)
    const known = peer ? byPair.get(edgeKey(instanceId, peer)) : undefined
    if (known && known.upstreamId === undefined) {
      Object.assign(known, { from: instanceId, to: peer, upstreamId: up.id, state })
      continue
    }
    // A peer not learned yet is drawn as its host: the link exists, its far end is unknown.
    edges.push({
      from: instanceId,
      to: peer ?? up.host,
      upstreamId: up.id,
      state,
      onTree: false,
      both: false,
    })
  }

  const ids = new Set([instanceId, ...topology.nodes])
  for (const e of edges) ids.add(e.from).add(e.to)
  const nodes = [...ids].sort().map((id) => ({ id, self: id === instanceId }))
  return { instanceId, nodes, edges }
}

/** The bridge machine's state as an edge's: only Forwarding moves messages. */
function linkState(state: string | undefined): MeshEdgeState {
  if (state === 'Forwarding') return 'Active'
  if (state === 'Blocked') return 'Blocked'
  return 'down'
}
