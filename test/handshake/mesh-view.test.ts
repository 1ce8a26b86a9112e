import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openTopologyDb } from '../../services/common/topology-db.ts'
import type { StoredAdvert } from '../../services/common/topology.ts'
import { buildMesh } from '../../services/handshake/server/mesh-view.ts'
import { startNode, type Node } from './fixture.ts'

/**
 * GET /api/v1/mesh over a real topology database on the node's bus: a triangle of instances
 * bridged both ways has one edge held Blocked (off the spanning tree), the other two Active.
 * Building a real three-instance cycle takes a minute (test/e2e/mesh.test.ts); the adverts the
 * supervisors would flood are written here directly.
 */
let n: Node
beforeAll(async () => {
  n = await startNode()
})
afterAll(async () => {
  await n?.close()
})

const advert = (origin: string, peers: string[], now: number): StoredAdvert => ({
  origin,
  version: now,
  neighbours: [...peers].sort(),
  out: [...peers].sort(),
  maxAgeMs: 60_000,
  bornAt: now,
})

describe('GET /api/v1/mesh', () => {
  it('shows this instance alone before any link', async () => {
    const mesh = await n.call('/api/v1/mesh')
    expect(mesh).toEqual({
      instanceId: n.instanceId,
      nodes: [{ id: n.instanceId, self: true }],
      edges: [],
    })
  })

  it('holds one edge of a triangle Blocked, off the spanning tree', async () => {
    const [a, b, c] = [n.instanceId, 'UB_meshB', 'UB_meshC']
    const db = await openTopologyDb(n.bus, { instanceId: a, skewMs: 300_000 })
    const now = Date.now()
    for (const ad of [advert(a, [b, c], now), advert(b, [a, c], now), advert(c, [a, b], now)])
      expect(await db.put(ad, now)).toBe(true)
    const mesh = await n.call('/api/v1/mesh')
    expect(mesh.nodes).toEqual([a, b, c].sort().map((id) => ({ id, self: id === a })))
    expect(mesh.edges).toHaveLength(3)
    const blocked = mesh.edges.filter((e: { state: string }) => e.state === 'Blocked')
    expect(blocked).toEqual([expect.objectContaining({ onTree: false, both: true })])
    expect(mesh.edges.filter((e: { state: string }) => e.state === 'Active')).toEqual([
      expect.objectContaining({ onTree: true }),
      expect.objectContaining({ onTree: true }),
    ])
  })
})

describe('buildMesh', () => {
  const now = 1_000_000
  const adverts = [advert('A', ['B'], now), advert('B', ['A'], now)]
  const up = (id: string, peer: string | null, state: string, status = 'Active') => ({
    id,
    host: `mqtt://${id}`,
    status,
    bindings: [],
    link: { state, peerInstanceId: peer },
  })

  it("prefers this instance's own link status, and shows links the adverts do not carry yet", () => {
    const mesh = buildMesh({
      instanceId: 'A',
      now,
      adverts,
      upstreams: [
        up('u1', 'B', 'Connecting'), // on the tree by the adverts, but down right now
        up('u2', 'D', 'Forwarding'), // not advertised yet
        up('u3', null, 'Backoff'), // never reached its peer: drawn as its host
        up('u4', 'E', 'Forwarding', 'Approved'), // not Active: no link
      ],
    })
    expect(mesh.edges).toEqual([
      { from: 'A', to: 'B', upstreamId: 'u1', state: 'down', onTree: true, both: true },
      { from: 'A', to: 'D', upstreamId: 'u2', state: 'Active', onTree: false, both: false },
      { from: 'A', to: 'mqtt://u3', upstreamId: 'u3', state: 'down', onTree: false, both: false },
    ])
    expect(mesh.nodes.map((x) => x.id)).toEqual(['A', 'B', 'D', 'mqtt://u3'])
    expect(mesh.nodes.filter((x) => x.self)).toEqual([{ id: 'A', self: true }])
  })

  it('points a one-way edge from the side that forwards', () => {
    const oneWay = [{ ...advert('A', ['B'], now), out: [] }, advert('B', ['A'], now)]
    const mesh = buildMesh({ instanceId: 'A', now, adverts: oneWay, upstreams: [] })
    expect(mesh.edges).toEqual([{ from: 'B', to: 'A', state: 'Active', onTree: true, both: false }])
  })
})
