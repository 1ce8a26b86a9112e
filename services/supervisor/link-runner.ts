import { handshakeBase } from '../contracts/handshake-client.ts'
import type { KvBucket } from '../common/bus/bus.ts'
import type { Logger } from '../common/log.ts'
import type { RemoteClient } from '../contracts/handshake-client.ts'
import { localClientId, upstreamClientId } from '../contracts/links.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import type { Upstream } from '../contracts/store.ts'
import type { LinkBacklog } from './backlog-watch.ts'
import type { CanaryPublisher } from './canary-publisher.ts'
import { createBridgeLink, type BridgeLink, type Credentials } from './bridge.ts'
import { localUrls } from './link-filters.ts'
import { createDupGuard } from './dup-guard.ts'
import { createLinkStatusWriter, type LinkStatusWriter } from './link-status.ts'
import type { LocalDialer } from './dial.ts'
import { discardOnAny } from './mqtt-session.ts'
import type { LeaseManager } from './ownership.ts'
import { createPeerLookup, type PeerLookup } from './peer.ts'

/** A link this replica runs, with what the supervisor keeps beside it. */
export interface RunningLink {
  upstream: Upstream
  link: BridgeLink
  status: LinkStatusWriter
  peer: () => string | null
  /** Off the mesh spanning tree: subscribed to nothing (see mesh-wiring.ts). */
  blocked: boolean
  /** This instance's thin-edge.io root: bindings from it are mounts upstream (te-mounts.ts). */
  teRoot?: string
}

/** The links this replica runs now, by upstream id. */
export type RunningLinks = Map<string, RunningLink>

/** How a link ends: `stop` keeps its gateway session, `forget` drops it, `lost` lost the lease. */
export type StopHow = 'stop' | 'forget' | 'lost'

export interface LinkRunner {
  /** Start the link of an upstream whose lease this replica holds; it joins `running`. */
  start(upstream: Upstream): RunningLink
  /** Take the link out of `running` and stop it; hand its lease back unless it was lost. */
  stop(id: string, how: StopHow, reason?: string): Promise<void>
  /** A deleted upstream nobody was bridging still has a session on the gateway: drop it. */
  forgetOrphan(id: string): Promise<void>
}

export interface LinkRunnerOptions {
  running: RunningLinks
  store: StoreClient
  remote: RemoteClient
  leases: LeaseManager
  linksKv: KvBucket
  instanceId: string
  supervisorId: string
  /** The local gateway and the internal credential the links use on it. */
  local: { url: string; username: string; password: string; dial?: LocalDialer }
  window: number
  /** thin-edge topic root for each link's health; empty = none (config teRoot). */
  teRoot?: string
  /** This instance's file service as its devices reach it (tedgeUrl rewriting, file-urls.ts). */
  filesUrl?: () => string | undefined
  backoffMaxMs: number
  backoffBaseMs?: number | undefined
  dupGuard: boolean | { threshold?: number; windowMs?: number }
  /** The end-to-end canary's interval and connection (canary.ts); off when absent. */
  canary?: { intervalMs: number; publisher: CanaryPublisher } | undefined
  /** The link's local session queue as the gateways count it (backlog-watch.ts). */
  backlogOf?: (upstreamId: string) => LinkBacklog | undefined
  /** Reapply the mesh's block decisions to the running links. */
  applyMesh: () => Promise<void>
  /** The supervisor is closing: a link stopping now is not reported as an error. */
  isClosed: () => boolean
  log: Logger
}

export function createLinkRunner(options: LinkRunnerOptions): LinkRunner {
  const { running, store, leases, linksKv, supervisorId, local, log } = options

  function start(upstream: Upstream): RunningLink {
    const id = upstream.id
    options.canary?.publisher.open()
    let status: LinkStatusWriter | undefined
    const peer = createPeerLookup({
      upstream,
      remote: options.remote,
      applyMesh: options.applyMesh,
      flushStatus: () => status?.flush(),
      log,
    })
    const link = startBridgeLink(options, upstream, peer, () => status?.touch())
    status = createLinkStatusWriter({
      kv: linksKv,
      upstreamId: id,
      owner: supervisorId,
      read: () => link.status(),
      peer: peer.peer,
      blocked: () => running.get(id)?.blocked ?? false,
      backlog: () => options.backlogOf?.(id),
      onError: (err) => log.warn({ upstreamId: id, err }, 'link status write failed'),
    })
    void link.stopped.then(() => reportRefusal(options, id, link))
    log.info({ upstreamId: id, supervisorId, token: leases.token(id) }, 'bridge owned')
    const r: RunningLink = { upstream, link, status, peer: peer.peer, blocked: false }
    if (options.teRoot) r.teRoot = options.teRoot
    running.set(id, r)
    return r
  }

  async function stop(id: string, how: StopHow, reason = 'deactivated'): Promise<void> {
    const r = running.get(id)
    running.delete(id)
    if (!r) return
    if (how === 'forget') {
      await r.link
        .forget()
        .catch((err: unknown) => log.warn({ upstreamId: id, err }, 'forget failed'))
    } else {
      await r.link.stop(how === 'lost' ? 'lease lost' : reason)
    }
    await r.status.close()
    if (how === 'forget') await linksKv.delete(id).catch(() => {}) // already gone is fine
    // A lost lease belongs to someone else now; ours we hand back so a successor need not wait.
    if (how !== 'lost') await leases.release(id)
  }

  async function forgetOrphan(id: string): Promise<void> {
    if (!(await leases.acquire(id))) return // its owner forgets it
    try {
      const { url, dial, username, password } = local
      const clientId = localClientId(id)
      await discardOnAny(localUrls(url), { clientId, username, password, ...(dial && { dial }) })
      await linksKv.delete(id)
    } finally {
      await leases.release(id)
    }
  }

  return { start, stop, forgetOrphan }
}

/** The bridge link of one upstream, fenced by its lease. */
function startBridgeLink(
  options: LinkRunnerOptions,
  upstream: Upstream,
  peer: PeerLookup,
  onChange: () => void
): BridgeLink {
  const { instanceId, leases, local, dupGuard, backoffBaseMs, log } = options
  const id = upstream.id
  return createBridgeLink({
    upstreamId: id,
    target: { host: upstream.host, brokerPort: upstream.brokerPort, tls: upstream.tls },
    bindings: upstream.bindings,
    credentials: () => readCredentials(options, upstream, peer),
    local,
    localClientId: localClientId(id),
    upstreamClientId: upstreamClientId(instanceId, id),
    window: options.window,
    ...(options.teRoot ? { healthRoot: options.teRoot } : {}),
    ...(options.filesUrl ? { filesUrl: options.filesUrl } : {}),
    ...(upstream.kind === 'uns' ? { upstreamFilesUrl: handshakeBase(upstream) } : {}),
    backoffMaxMs: options.backoffMaxMs,
    ...(backoffBaseMs === undefined ? {} : { backoffBaseMs }),
    mayConnect: () => leases.holds(id),
    ...(dupGuard ? { dupGuard: createDupGuard(typeof dupGuard === 'object' ? dupGuard : {}) } : {}),
    ...(options.canary ? { canary: options.canary } : {}),
    onChange,
    log,
  })
}

/** Read before every connect; a handshake link learns its peer first (split horizon). */
async function readCredentials(
  { store, instanceId }: LinkRunnerOptions,
  upstream: Upstream,
  peer: PeerLookup
): Promise<Credentials> {
  const c = await store.call('upstream.credentials', { id: upstream.id })
  if (upstream.kind === 'uns' && !peer.peer()) await peer.learn(c.password)
  // A handshake upstream knows us by our instance id (ARCHITECTURE.md §11).
  return upstream.kind === 'mqtt' ? c : { username: c.username ?? instanceId, password: c.password }
}

/**
 * Only a link that stopped by itself (a refused credential) has an error to report: one we
 * stopped (deactivated, deleted, moved, lease lost) is no longer the running one. The error goes
 * where the operator looks; the handshake poll decides whether the upstream is Revoked.
 */
function reportRefusal(
  { running, store, leases, isClosed, log }: LinkRunnerOptions,
  id: string,
  link: BridgeLink
): void {
  const why = link.status().lastError
  // A link fenced for its lease is still the running one until the next pass: not a refusal.
  if (!why || running.get(id)?.link !== link || isClosed() || !leases.holds(id)) return
  // Refused because the upstream server revoked us: the upstream's status says so (the poll
  // sees it within a second); a stale "bad user name or password" beside it would mislead.
  void store
    .call('upstream.get', { id })
    .then((up) =>
      up.status === 'Active' ? store.call('upstream.patch', { id, lastError: why }) : undefined
    )
    .catch((err: unknown) => log.warn({ upstreamId: id, err }, 'could not record the link error'))
}
