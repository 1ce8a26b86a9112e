import { decodeJson, type Bus, type KvBucket, type Subscription } from '../common/bus/bus.ts'
import type { Registry } from 'prom-client'
import {
  forgetPeerKey,
  instanceKey,
  pinPeerKey,
  readPeerKey,
  requestKeyId,
  upstreamKeyId,
  type InstanceKey,
  type PeerKey,
} from '../common/instance-key.ts'
import type { Logger } from '../common/log.ts'
import {
  openTopologyDb,
  TOPOLOGY_BUCKET,
  TOPOLOGY_HEARD_BUCKET,
  type TopologyDb,
} from '../common/topology-db.ts'
import {
  advertPayload,
  shouldBlock,
  spanningTree,
  type StoredAdvert,
  type Topology,
} from '../common/topology.ts'
import { RemoteError, type RemoteClient } from '../contracts/handshake-client.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import type { Upstream } from '../contracts/store.ts'
import type { LinkStatus } from '../contracts/links.ts'
import { createMountDeclarer } from './te-mounts.ts'

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
  /** This instance's thin-edge.io root: its bindings from it are declared as mounts. */
  teRoot?: string
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
  /** `meshClockSkewMs`: how far a received advert's version may be from our clock. */
  skewMs: number
  metrics?: Registry
}

const sameList = (p: readonly string[], q: readonly string[]) =>
  p.length === q.length && p.every((x, i) => x === q[i])
const sameKeys = (p: Record<string, string>, q: Record<string, string>) =>
  sameList(Object.keys(p).sort(), Object.keys(q).sort()) &&
  Object.entries(p).every(([k, v]) => q[k] === v)

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
  skewMs,
  metrics,
}: MeshOptions): Promise<Mesh> {
  const db: TopologyDb = await openTopologyDb(bus, { instanceId, skewMs, metrics })
  const key = await instanceKey(bus)
  const heardKv = await bus.kv(TOPOLOGY_HEARD_BUCKET)
  const lifetimeMs = ADVERT_LIFETIMES * intervalMs
  const readNeighbours = () =>
    neighboursOf({ bus, store, linksKv, heardKv, instanceId, intervalMs })
  const exchangeWith = createTopologyExchange({ bus, store, remote, db, intervalMs, log })
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
        await originate({ db, instanceId, key, lifetimeMs, readNeighbours })
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
  /** The neighbours' public keys as pinned in the handshake: our advert vouches for them. */
  keys: Record<string, string>
}

/**
 * This instance's neighbours: the peers of its handshake links that are up (a fresh link status,
 * Forwarding or Blocked, peer known), and the instances of Accepted requests whose downstream
 * exchanged topology lately.
 */
async function neighboursOf({
  bus,
  store,
  linksKv,
  heardKv,
  instanceId,
  intervalMs,
}: {
  bus: Bus
  store: StoreClient
  linksKv: KvBucket
  heardKv: KvBucket
  instanceId: string
  intervalMs: number
}): Promise<Neighbours> {
  const now = Date.now()
  const out = new Set<string>()
  const keys: Record<string, string> = {}
  const vouch = async (keyId: string, peer: string) => {
    const pinned = await readPeerKey(bus, keyId)
    if (pinned && pinned.instanceId === peer) keys[peer] ??= pinned.publicKey
  }
  for (const u of await store.call('upstream.list', { status: 'Active' })) {
    if (u.kind !== 'uns') continue
    const entry = await linksKv.get(u.id)
    if (!entry || entry.operation !== 'PUT') continue
    const s = decodeJson<LinkStatus>(entry.value)
    const fresh = now - Date.parse(s.updatedAt) < LINK_STATUS_STALE_MS
    if (fresh && UP_STATES.has(s.state) && s.peerInstanceId) {
      out.add(s.peerInstanceId)
      await vouch(upstreamKeyId(u.id), s.peerInstanceId)
    }
  }
  const all = new Set(out)
  for (const r of await store.call('request.list', { status: 'Accepted' })) {
    const entry = await heardKv.get(r.id)
    if (!entry || entry.operation !== 'PUT') continue
    const { at } = decodeJson<{ at: number }>(entry.value)
    if (now - at < SILENT_AFTER * intervalMs) {
      all.add(r.instanceId)
      await vouch(requestKeyId(r.id), r.instanceId)
    }
  }
  all.delete(instanceId)
  out.delete(instanceId)
  delete keys[instanceId]
  return { neighbours: [...all].sort(), out: [...out].sort(), keys }
}

/** Re-originate our advert when its neighbours changed, or once a third of its life passed. */
async function originate({
  db,
  instanceId,
  key,
  lifetimeMs,
  readNeighbours,
}: {
  db: TopologyDb
  instanceId: string
  key: InstanceKey
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
    sameKeys(own.keys ?? {}, mine.keys) &&
    own.signature !== undefined &&
    own.maxAgeMs === lifetimeMs &&
    now - own.bornAt < lifetimeMs / 3
  if (unchanged) return
  const advert: StoredAdvert = {
    origin: instanceId,
    // Above anything stored for us, even an advert from before a restart with a faster clock.
    // It is our clock in ms: receivers refuse a version far from theirs (`meshClockSkewMs`).
    version: Math.max(now, (own?.version ?? 0) + 1),
    ...mine,
    maxAgeMs: lifetimeMs,
    bornAt: now,
  }
  advert.signature = key.sign(advertPayload(advert))
  await db.put(advert, now)
}

/**
 * Post our topology database to the upstream server of a handshake link and merge its answer;
 * one exchange per link at a time. The secret is read once and again after a 401.
 */
function createTopologyExchange({
  bus,
  store,
  remote,
  db,
  intervalMs,
  log,
}: {
  bus: Bus
  store: StoreClient
  remote: RemoteClient
  db: TopologyDb
  intervalMs: number
  log: Logger
}): (link: MeshLink) => Promise<void> {
  const inFlight = new Set<string>()
  const secrets = new Map<string, string>()
  const mounts = createMountDeclarer()
  return async ({ upstream, peer, teRoot }) => {
    const { id, remoteRequestId } = upstream
    if (upstream.kind !== 'uns' || !remoteRequestId || inFlight.has(id)) return
    inFlight.add(id)
    try {
      let secret = secrets.get(id)
      if (!secret) {
        secret = (await store.call('upstream.credentials', { id })).password ?? ''
        secrets.set(id, secret)
      }
      const peerKey = await learnPeerKey(bus, remote, upstream, secret, peer)
      if (!peerKey) return // an older peer that sends no key: nothing it says can be believed
      const mine = mounts.declare(upstream, teRoot, await db.exchange())
      const theirs = await remote
        .exchangeTopology(upstream, remoteRequestId, secret, mine, {
          timeoutMs: Math.max(1_000, 2 * intervalMs), // at least 1 s, else two intervals
        })
        .catch((err: unknown) => {
          // A refused secret is read again next time.
          if (err instanceof RemoteError && err.status === 401) secrets.delete(id)
          if (err instanceof RemoteError && err.status === 400) mounts.refused(id)
          throw err
        })
      const { rejected } = await db.merge(theirs.adverts, {
        direct: new Map([[peerKey.instanceId, peerKey.publicKey]]),
      })
      if (Object.keys(rejected).length > 0)
        log.warn({ upstreamId: id, rejected }, 'topology adverts refused')
    } catch (err) {
      // An older peer without the route, or one that is down: its edge simply never forms.
      log.debug({ upstreamId: id, err }, 'topology exchange failed')
    } finally {
      inFlight.delete(id)
    }
  }
}

/**
 * The upstream server's key, pinned the first time its handshake status names one (the status
 * route proves our secret, over https for a secure upstream); null while it names none. A pin for
 * another instance than the link's peer (the upstream was pointed at another server) is replaced,
 * learned the same way as the peer's id itself.
 */
async function learnPeerKey(
  bus: Bus,
  remote: RemoteClient,
  upstream: Upstream,
  secret: string,
  peer: string | null
): Promise<PeerKey | null> {
  const keyId = upstreamKeyId(upstream.id)
  const pinned = await readPeerKey(bus, keyId)
  if (pinned && (peer === null || pinned.instanceId === peer)) return pinned
  const status = await remote.getStatus(upstream, upstream.remoteRequestId!, secret)
  if (!status.publicKey || !status.instanceId) return null
  const learned = { instanceId: status.instanceId, publicKey: status.publicKey }
  if (pinned && pinned.instanceId !== status.instanceId) await forgetPeerKey(bus, keyId)
  return pinPeerKey(bus, keyId, learned)
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
