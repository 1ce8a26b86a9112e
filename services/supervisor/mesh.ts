import { decodeJson, type Bus, type KvBucket, type Subscription } from '../common/bus/bus.ts'
import type { Logger } from '../common/log.ts'
import {
  openTopologyDb,
  TOPOLOGY_BUCKET,
  TOPOLOGY_HEARD_BUCKET,
  type TopologyDb,
} from '../common/topology-db.ts'
import { shouldBlock, spanningTree, type StoredAdvert, type Topology } from '../common/topology.ts'
import { RemoteError, type RemoteClient } from '../contracts/handshake-client.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import type { Upstream } from '../contracts/store.ts'
import type { LinkStatus } from '../contracts/links.ts'

/**
 * The supervisor's part of the mesh spanning tree (ARCHITECTURE.md §9): originate this
 * instance's advert, exchange the topology database with the upstream server of every handshake
 * link this replica runs, and decide which links are blocked because their edge is not on the
 * tree.
 */
export const ADVERT_LIFETIMES = 6 // an advert lives 6 intervals, refreshed every 2
export const SILENT_AFTER = 3 // a downstream not heard for 3 intervals is no neighbour
const LINK_STATUS_STALE_MS = 15_000 // 3 link-status heartbeats: its supervisor is gone
const UP_STATES = new Set(['Forwarding', 'Blocked'])
const RECOMPUTE_DEBOUNCE_MS = 20 // a burst of merges costs one tree

export interface MeshLink {
  upstream: Upstream
  peer: string | null
}

export interface Mesh {
  /** Should the link to `peer` stop forwarding? Never for an unknown peer. */
  blocks(peer: string | null): boolean
  /** The tree as this replica last computed it. */
  topology(): Topology
  /** Run one round now (tests; it also runs every interval). */
  tick(): Promise<void>
  close(): Promise<void>
}

export interface MeshOptions {
  bus: Bus
  store: StoreClient
  instanceId: string
  linksKv: KvBucket
  intervalMs: number
  /** False: exchange topology, never block (the `meshTree` switch). */
  enabled: boolean
  /** The handshake links this replica runs now. */
  links: () => MeshLink[]
  /** A block decision changed: reapply it to the links. */
  onChange: () => void
  log: Logger
  remote: RemoteClient
}

const sameList = (p: readonly string[], q: readonly string[]) =>
  p.length === q.length && p.every((x, i) => x === q[i])

export async function startMesh({
  bus,
  store,
  instanceId,
  linksKv,
  intervalMs,
  enabled,
  links,
  onChange,
  log,
  remote,
}: MeshOptions): Promise<Mesh> {
  const db: TopologyDb = await openTopologyDb(bus)
  const heardKv = await bus.kv(TOPOLOGY_HEARD_BUCKET)
  const lifetimeMs = ADVERT_LIFETIMES * intervalMs
  const readNeighbours = () => neighboursOf({ store, linksKv, heardKv, instanceId, intervalMs })
  const exchangeWith = createTopologyExchange({ store, remote, db, intervalMs, log })
  // An edge that turns from blocked to tree waits 3 intervals before forwarding, so that the
  // other end and the rest of the mesh (a few exchanges away) see the same tree first (STP's
  // forward delay).
  const decisions = createBlockDecisions(3 * intervalMs)
  let current: Topology = { nodes: [], edges: [], tree: new Set() }
  let closed = false

  const decide = (peer: string, now: number): boolean =>
    decisions.decide(peer, shouldBlock(current, instanceId, peer), now)

  async function recompute(): Promise<void> {
    const now = Date.now()
    current = spanningTree(await db.read(), now)
    let changed = false
    const peers = new Set(links().flatMap((l) => (l.peer ? [l.peer] : [])))
    for (const peer of peers) {
      const before = decisions.blocked(peer)
      if (decide(peer, now) !== before) changed = true
    }
    decisions.keepOnly(peers)
    if (changed && enabled) onChange()
  }

  let running: Promise<void> | undefined
  const tick = (): Promise<void> =>
    (running ??= (async () => {
      try {
        await originate({ db, instanceId, lifetimeMs, readNeighbours })
        await Promise.all(links().map(exchangeWith))
        await db.prune()
        await recompute()
      } catch (err) {
        log.warn({ err }, 'mesh round failed')
      } finally {
        running = undefined
      }
    })())

  // Merges made by the handshake API (a downstream's exchange) change the tree too.
  const topologyKv = await bus.kv(TOPOLOGY_BUCKET)
  let debounce: NodeJS.Timeout | undefined
  const watch: Subscription = await topologyKv.watch(
    () => {
      clearTimeout(debounce)
      debounce = setTimeout(() => {
        if (!closed) recompute().catch((err: unknown) => log.warn({ err }, 'mesh tree failed'))
      }, RECOMPUTE_DEBOUNCE_MS)
    },
    { includeCurrent: false }
  )
  const timer = setInterval(() => void tick(), intervalMs)
  void tick()

  return {
    blocks(peer) {
      if (!enabled || !peer) return false
      return decisions.blocked(peer) ?? decide(peer, Date.now())
    },
    topology: () => current,
    tick,
    async close() {
      if (closed) return
      closed = true
      clearInterval(timer)
      clearTimeout(debounce)
      await watch.unsubscribe().catch(() => {}) // the bus may already be closing
      await running
    },
  }
}

interface Neighbours {
  neighbours: string[]
  /** The peers of this instance's own links (bridged from here). */
  out: string[]
}

/**
 * This instance's neighbours: the peers of its handshake links that are up (a fresh link status,
 * Forwarding or Blocked, peer known), and the instances of Accepted requests whose downstream
 * exchanged topology lately.
 */
async function neighboursOf({
  store,
  linksKv,
  heardKv,
  instanceId,
  intervalMs,
}: {
  store: StoreClient
  linksKv: KvBucket
  heardKv: KvBucket
  instanceId: string
  intervalMs: number
}): Promise<Neighbours> {
  const now = Date.now()
  const out = new Set<string>()
  for (const u of await store.call('upstream.list', { status: 'Active' })) {
    if (u.kind !== 'uns') continue
    const entry = await linksKv.get(u.id)
    if (!entry || entry.operation !== 'PUT') continue
    const s = decodeJson<LinkStatus>(entry.value)
    const fresh = now - Date.parse(s.updatedAt) < LINK_STATUS_STALE_MS
    if (fresh && UP_STATES.has(s.state) && s.peerInstanceId) out.add(s.peerInstanceId)
  }
  const all = new Set(out)
  for (const r of await store.call('request.list', { status: 'Accepted' })) {
    const entry = await heardKv.get(r.id)
    if (!entry || entry.operation !== 'PUT') continue
    const { at } = decodeJson<{ at: number }>(entry.value)
    if (now - at < SILENT_AFTER * intervalMs) all.add(r.instanceId)
  }
  all.delete(instanceId)
  out.delete(instanceId)
  return { neighbours: [...all].sort(), out: [...out].sort() }
}

/** Re-originate our advert when its neighbours changed, or once a third of its life passed. */
async function originate({
  db,
  instanceId,
  lifetimeMs,
  readNeighbours,
}: {
  db: TopologyDb
  instanceId: string
  lifetimeMs: number
  readNeighbours: () => Promise<Neighbours>
}): Promise<void> {
  const now = Date.now()
  const mine = await readNeighbours()
  const own = (await db.read()).find((a) => a.origin === instanceId)
  const unchanged =
    own &&
    sameList(own.neighbours, mine.neighbours) &&
    sameList(own.out, mine.out) &&
    own.maxAgeMs === lifetimeMs &&
    now - own.bornAt < lifetimeMs / 3
  if (unchanged) return
  const advert: StoredAdvert = {
    origin: instanceId,
    // Above anything stored for us, even an advert from before a restart with a faster clock.
    version: Math.max(now, (own?.version ?? 0) + 1),
    ...mine,
    maxAgeMs: lifetimeMs,
    bornAt: now,
  }
  await db.put(advert, now)
}

/**
 * Post our topology database to the upstream server of a handshake link and merge its answer;
 * one exchange per link at a time. The secret is read once and again after a 401.
 */
function createTopologyExchange({
  store,
  remote,
  db,
  intervalMs,
  log,
}: {
  store: StoreClient
  remote: RemoteClient
  db: TopologyDb
  intervalMs: number
  log: Logger
}): (link: MeshLink) => Promise<void> {
  const inFlight = new Set<string>()
  const secrets = new Map<string, string>()
  return async ({ upstream }) => {
    const { id, remoteRequestId } = upstream
    if (upstream.kind !== 'uns' || !remoteRequestId || inFlight.has(id)) return
    inFlight.add(id)
    try {
      let secret = secrets.get(id)
      if (!secret) {
        secret = (await store.call('upstream.credentials', { id })).password ?? ''
        secrets.set(id, secret)
      }
      const theirs = await remote
        .exchangeTopology(upstream, remoteRequestId, secret, await db.exchange(), {
          timeoutMs: Math.max(1_000, 2 * intervalMs), // at least 1 s, else two intervals
        })
        .catch((err: unknown) => {
          // A refused secret is read again next time.
          if (err instanceof RemoteError && err.status === 401) secrets.delete(id)
          throw err
        })
      await db.merge(theirs.adverts)
    } catch (err) {
      // An older peer without the route, or one that is down: its edge simply never forms.
      log.debug({ upstreamId: id, err }, 'topology exchange failed')
    } finally {
      inFlight.delete(id)
    }
  }
}

/**
 * Per peer, blocked or not. Blocking takes effect at once; unblocking only once the tree has
 * wanted the edge for `settleMs` without a break (STP's forward delay).
 */
function createBlockDecisions(settleMs: number) {
  const decisions = new Map<string, { blocked: boolean; clearSince?: number }>()
  return {
    /** The decision so far; undefined for a peer not decided yet. */
    blocked: (peer: string): boolean | undefined => decisions.get(peer)?.blocked,
    /** Decide for `peer`, given whether the tree wants it blocked now. */
    decide(peer: string, want: boolean, now: number): boolean {
      const d = decisions.get(peer)
      if (!d) {
        decisions.set(peer, { blocked: want })
        return want
      }
      if (want) {
        d.blocked = true
        delete d.clearSince
      } else if (d.blocked) {
        d.clearSince ??= now
        if (now - d.clearSince >= settleMs) {
          d.blocked = false
          delete d.clearSince
        }
      }
      return d.blocked
    },
    /** Forget the peers no running link leads to. */
    keepOnly(peers: ReadonlySet<string>): void {
      for (const peer of decisions.keys()) if (!peers.has(peer)) decisions.delete(peer)
    },
  }
}
