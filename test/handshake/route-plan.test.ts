import { describe, expect, it } from 'vitest'
import { edgeKey, type Topology } from '../../services/common/topology.ts'
import { planRoute, treePath } from '../../services/handshake/server/route-plan.ts'

// A ── B ── C on the tree, A ── C a graph edge off it.
const edge = (a: string, b: string) => ({ a, b, both: true, forwarded: true })
const topology: Topology = {
  nodes: ['A', 'B', 'C', 'D'],
  edges: [edge('A', 'B'), edge('B', 'C'), edge('A', 'C')],
  tree: new Set([edgeKey('A', 'B'), edgeKey('B', 'C')]),
}

describe('the route dry run', () => {
  it('follows tree edges only', () => {
    expect(treePath(topology, 'A', 'C')).toEqual(['A', 'B', 'C'])
    expect(treePath(topology, 'A', 'D')).toBeNull()
  })

  it('names each hop, its link health, and a new link that would close a cycle', () => {
    const plan = planRoute({
      topic: 'site/s1/t',
      instanceId: 'A',
      topology,
      upstreams: [
        {
          id: 'u1',
          host: 'mqtt://b',
          status: 'Active',
          bindings: [{ source: 'site/+', target: 'acme/{1}', direction: 'both' }],
          link: { state: 'Forwarding', peerInstanceId: 'B' },
        },
        {
          id: 'u2',
          host: 'mqtt://c',
          status: 'Active',
          bindings: [{ source: 'site', target: 'x/site' }],
          link: { state: 'Blocked', peerInstanceId: 'C' },
        },
        {
          // Not Active: shown, but nothing goes over it.
          id: 'u3',
          host: 'mqtt://d',
          status: 'Approved',
          bindings: [{ source: 'site/s1', target: 'y' }],
          link: null,
        },
      ],
    })
    expect(plan.out.map((h) => [h.upstreamId, h.topic, h.link, h.direction])).toEqual([
      ['u1', 'acme/s1/t', 'Active', 'both'],
      ['u2', 'x/site/s1/t', 'Blocked', 'out'],
      ['u3', 'y/t', 'inactive', 'out'],
    ])
    expect(plan.in.map((h) => [h.upstreamId, h.topic])).toEqual([['u1', 'acme/s1/t']])
    expect(plan.reaches).toEqual(['B'])
    expect(plan.out[1]!.treePath).toEqual(['A', 'B', 'C'])
    expect(plan.out.every((h) => !h.closesCycle)).toBe(true)

    // B's new link to C: the graph does not show B ── C yet, and C is reachable through A.
    const fromB = planRoute({
      topic: 'site/t',
      instanceId: 'B',
      topology: {
        ...topology,
        edges: [edge('A', 'B'), edge('A', 'C')],
        tree: new Set([edgeKey('A', 'B'), edgeKey('A', 'C')]),
      },
      upstreams: [
        {
          id: 'u4',
          host: 'mqtt://c',
          status: 'Active',
          bindings: [{ source: 'site', target: 'site' }],
          link: { state: 'Connecting', peerInstanceId: 'C' },
        },
      ],
    })
    expect(fromB.out[0]).toMatchObject({ link: 'down', closesCycle: true })
  })
})
