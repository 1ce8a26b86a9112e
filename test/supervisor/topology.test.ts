import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  edgeKey,
  fromWire,
  mergeAdverts,
  shouldBlock,
  spanningTree,
  toWire,
  type StoredAdvert,
} from '../../services/common/topology.ts'

const NOW = 1_000_000
const LIFE = 30_000

/** Adverts for an undirected graph where every edge is bridged both ways. */
function advertsOf(nodes: string[], edges: Array<[string, string]>): StoredAdvert[] {
  return nodes.map((n) => {
    const nb = [...new Set(edges.flatMap(([x, y]) => (x === n ? [y] : y === n ? [x] : [])))].sort()
    return { origin: n, version: 1, neighbours: nb, out: nb, maxAgeMs: LIFE, bornAt: NOW }
  })
}

const ad = (origin: string, version: number, over: Partial<StoredAdvert> = {}): StoredAdvert => ({
  origin,
  version,
  neighbours: [],
  out: [],
  maxAgeMs: LIFE,
  bornAt: NOW,
  ...over,
})

describe('topology adverts', () => {
  it('keeps the highest version per origin, whatever the order of arrival', () => {
    const db = new Map<string, StoredAdvert>()
    mergeAdverts(db, [ad('A', 2, { neighbours: ['B'] }), ad('A', 1), ad('B', 5)], NOW)
    expect(mergeAdverts(db, [ad('A', 1, { neighbours: ['C'] })], NOW)).toEqual([])
    expect([...db.values()]).toEqual([ad('A', 2, { neighbours: ['B'] }), ad('B', 5)])
  })

  it('drops an advert at its max age and refuses to take it back from a neighbour', () => {
    const db = new Map<string, StoredAdvert>([['A', ad('A', 1)]])
    const later = NOW + LIFE
    // A neighbour still holding it sends it with its age, which has reached the lifetime.
    const wire = toWire(ad('A', 1), later)
    expect(wire).toEqual({ ...ad('A', 1, {}), bornAt: undefined, ageMs: LIFE })
    expect(fromWire(wire, later)).toBeNull()
    expect(spanningTree(db.values(), later).nodes).toEqual([])
    // A younger copy of a newer version replaces the expired one.
    const fresh = fromWire({ ...toWire(ad('A', 2, { bornAt: later }), later) }, later)!
    expect(mergeAdverts(db, [fresh], later)).toEqual([fresh])
  })

  it('counts an edge only when both ends list each other', () => {
    const ads = [
      ad('A', 1, { neighbours: ['B', 'C'], out: ['B'] }),
      ad('B', 1, { neighbours: ['A'] }),
      ad('C', 1),
    ]
    expect(spanningTree(ads, NOW).edges).toEqual([{ a: 'A', b: 'B', both: false, forwarded: true }])
  })

  it('blocks the highest edge of a triangle on every instance', () => {
    const ads = advertsOf(
      ['A', 'B', 'C'],
      [
        ['A', 'B'],
        ['B', 'C'],
        ['A', 'C'],
      ]
    )
    const t = spanningTree(ads, NOW)
    expect([...t.tree].sort()).toEqual([edgeKey('A', 'B'), edgeKey('A', 'C')])
    expect(shouldBlock(t, 'B', 'C')).toBe(true)
    expect(shouldBlock(t, 'C', 'B')).toBe(true)
    expect(shouldBlock(t, 'A', 'B')).toBe(false)
  })

  it('prefers an edge bridged both ways over a one-way edge', () => {
    const ads = [
      ad('A', 1, { neighbours: ['B', 'C'], out: ['B'] }),
      ad('B', 1, { neighbours: ['A', 'C'], out: ['C'] }),
      ad('C', 1, { neighbours: ['A', 'B'], out: ['A', 'B'] }),
    ]
    const t = spanningTree(ads, NOW)
    expect(t.tree.has(edgeKey('B', 'C'))).toBe(true) // both ways
    expect(t.tree.size).toBe(2)
  })

  it('holds a new link whose peer is already reachable, forwards one that joins two parts', () => {
    const ads = advertsOf(
      ['A', 'B', 'C', 'D'],
      [
        ['A', 'B'],
        ['B', 'C'],
      ]
    )
    const t = spanningTree(ads, NOW)
    expect(shouldBlock(t, 'A', 'C')).toBe(true) // A→C would close A-B-C-A
    expect(shouldBlock(t, 'A', 'D')).toBe(false)
    expect(shouldBlock(t, 'A', 'E')).toBe(false) // no advert at all: an older peer
  })
})

const graphArb = fc
  .integer({ min: 1, max: 9 })
  .chain((n) =>
    fc.record({
      nodes: fc.constant(
        Array.from({ length: n }, (_, i) => `UB_${String.fromCharCode(65 + i)}${i}`)
      ),
      pairs: fc.uniqueArray(
        fc.tuple(fc.integer({ min: 0, max: n - 1 }), fc.integer({ min: 0, max: n - 1 })),
        { maxLength: 30 }
      ),
      oneWay: fc.array(fc.boolean(), { minLength: 30, maxLength: 30 }),
    })
  )
  .map(({ nodes, pairs, oneWay }) => {
    const edges = pairs
      .filter(([x, y]) => x !== y)
      .map(([x, y]) => [nodes[x]!, nodes[y]!] as [string, string])
    const ads = advertsOf(nodes, edges).map((a) => ({
      ...a,
      // Some edges forwarded one way only: they still count, ranked after two-way edges.
      out: a.out.filter((_, i) => !oneWay[i] || a.origin < a.out[i]!),
    }))
    return { nodes, edges, ads }
  })

function components(nodes: string[], edges: Array<[string, string]>): Map<string, number> {
  const comp = new Map<string, number>()
  let c = 0
  for (const start of nodes) {
    if (comp.has(start)) continue
    const stack = [start]
    comp.set(start, c)
    while (stack.length > 0) {
      const n = stack.pop()!
      for (const [x, y] of edges) {
        const m = x === n ? y : y === n ? x : null
        if (!m || comp.has(m)) continue
        comp.set(m, c)
        stack.push(m)
      }
    }
    c++
  }
  return comp
}

describe('spanning tree (property)', () => {
  it('spans each connected component without a cycle', () => {
    fc.assert(
      fc.property(graphArb, ({ nodes, edges, ads }) => {
        const t = spanningTree(ads, NOW)
        const treeEdges = [...t.tree].map((k) => k.split(' ') as [string, string])
        const graphComp = components(nodes, edges)
        const treeComp = components(nodes, treeEdges)
        const count = new Set(graphComp.values()).size
        // Same partition of the nodes, and a forest: |E| = |V| - #components.
        for (const n of nodes)
          for (const m of nodes)
            expect(graphComp.get(n) === graphComp.get(m)).toBe(treeComp.get(n) === treeComp.get(m))
        expect(treeEdges.length).toBe(nodes.length - count)
        for (const k of t.tree) expect(t.edges.some((e) => edgeKey(e.a, e.b) === k)).toBe(true)
      })
    )
  })

  it('is the same tree for every instance holding the same adverts, in any order', () => {
    fc.assert(
      fc.property(graphArb, fc.integer(), ({ ads }, seed) => {
        const shuffled = [...ads].sort(
          (p, q) => ((p.origin.charCodeAt(3) * seed) % 7) - ((q.origin.charCodeAt(3) * seed) % 7)
        )
        const merged = new Map<string, StoredAdvert>()
        mergeAdverts(merged, shuffled, NOW)
        const a = spanningTree(ads, NOW)
        const b = spanningTree(merged.values(), NOW)
        expect([...b.tree].sort()).toEqual([...a.tree].sort())
        // Each end of every edge decides the same about it.
        for (const e of a.edges) expect(shouldBlock(a, e.a, e.b)).toBe(shouldBlock(b, e.b, e.a))
      })
    )
  })

  it('merging databases converges: order and repetition do not matter', () => {
    const adArb = fc.record({
      origin: fc.constantFrom('A', 'B', 'C'),
      version: fc.integer({ min: 1, max: 5 }),
      neighbours: fc.subarray(['A', 'B', 'C']),
    })
    fc.assert(
      fc.property(fc.array(adArb, { maxLength: 12 }), (raw) => {
        // One advert per (origin, version): an origin never reuses a version.
        const unique = [...new Map(raw.map((r) => [`${r.origin}${r.version}`, r])).values()]
        const ads = unique.map((r) => ad(r.origin, r.version, { neighbours: r.neighbours }))
        const one = new Map<string, StoredAdvert>()
        const two = new Map<string, StoredAdvert>()
        mergeAdverts(one, ads, NOW)
        mergeAdverts(two, [...ads].reverse(), NOW)
        mergeAdverts(two, ads, NOW)
        expect(new Map([...two].sort())).toEqual(new Map([...one].sort()))
      })
    )
  })
})
