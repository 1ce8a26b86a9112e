import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { Gauge } from 'prom-client'
import type { Binding } from '../../machines/index.ts'
import { decodeJson, type KvBucket, type Subscription } from '../common/bus/bus.ts'
import type { RunningService, ServiceContext } from '../contracts/service.ts'
import { UbError } from '../common/errors.ts'
import { INTERNAL_USERNAME, internalCredential } from '../common/internal-credential.ts'
import type { TransitionRecord, Upstream } from '../contracts/store.ts'
import { createBridgeLink, type BridgeLink, type LinkCounters } from './bridge.ts'
import { connectLocal } from './mqtt-session.ts'
import { createLinkStatusWriter, type LinkStatusWriter } from './link-status.ts'
import { createDupGuard } from './dup-guard.ts'
import { startMesh, type Mesh } from './mesh.ts'
import { createLeaseManager, type LeaseManager } from './ownership.ts'
import { discoverPeer } from './peer.ts'
import { createRemoteClient, type RemoteClient } from '../contracts/handshake-client.ts'
import { LEASES_BUCKET, LINKS_BUCKET, localClientId, upstreamClientId } from '../contracts/links.ts'
import { sameBindings } from './remap.ts'

export { createBridgeLink, type BridgeLink, type LinkCounters } from './bridge.ts'
export type { Mesh } from './mesh.ts'

const PEER_TIMEOUT_MS = 3_000 // 3 s: learning the peer delays the link's first connect
const LIST_EVERY_MS = 10_000 // full reconcile from the store even when no event arrives
const EVENT_DEBOUNCE_MS = 20 // a burst of transitions costs one reconcile

export interface SupervisorOptions {
  /** The local gateway; default `mqtt://127.0.0.1:<mqttPort>`. */
  localBrokerUrl?: string
  window?: number
  leaseTtlMs?: number
  backoffMaxMs?: number
  backoffBaseMs?: number
  supervisorId?: string
  /**
   * Default from config `bridgeDupGuard` (off). An object turns it on with its own threshold and
   * window (tests, where a loaded machine must not decide how fast a storm circulates).
   */
  dupGuard?: boolean | { threshold?: number; windowMs?: number }
  /** Defaults from config `topologyIntervalMs` and `meshTree`. */
  topologyIntervalMs?: number
  meshTree?: boolean
  /** The client of remote handshake APIs (peer discovery, topology exchange). */
  remote?: RemoteClient
}

export interface Supervisor extends RunningService {
  readonly supervisorId: string
  /** Links this replica runs now, by upstream id. */
  links(): Map<string, LinkCounters>
  /** Reconcile now (tests; the supervisor also does it on every event and tick). */
  reconcile(): Promise<void>
  /** The mesh spanning tree as this replica sees it. */
  readonly mesh: Mesh
}

interface Running {
  upstream: Upstream
  link: BridgeLink
  status: LinkStatusWriter
  peer: () => string | null
  /** Off the mesh spanning tree: subscribed to nothing (see applyMesh). */
  blocked: boolean
}

/** The bridge supervisor: one bridge link per Active upstream, on exactly one replica. */
export async function startSupervisor(
  ctx: ServiceContext,
  options: SupervisorOptions = {}
): Promise<Supervisor> {
  const { bus, store, log: rootLog, config, instanceId } = ctx
  const log = rootLog.child({ service: 'supervisor' })
  const localUrl =
    options.localBrokerUrl ?? config.localBrokerUrl ?? `mqtt://127.0.0.1:${config.mqttPort}`
  const windowSize = options.window ?? config.bridgeWindow
  const ttlMs = options.leaseTtlMs ?? config.leaseTtlMs
  const backoffMaxMs = options.backoffMaxMs ?? config.backoffMaxMs
  const dupGuard = options.dupGuard ?? config.bridgeDupGuard
  const supervisorId =
    options.supervisorId ??
    config.supervisorId ??
    `${instanceId}-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`

  const leasesKv = await bus.kv(LEASES_BUCKET, { ttlMs })
  const linksKv: KvBucket = await bus.kv(LINKS_BUCKET)
  const leases: LeaseManager = createLeaseManager({ kv: leasesKv, owner: supervisorId, ttlMs })
  const localAuth = { username: INTERNAL_USERNAME, password: await internalCredential(bus) }
  const running = new Map<string, Running>()
  const remote = options.remote ?? createRemoteClient({ timeoutMs: PEER_TIMEOUT_MS })
  const mesh: Mesh = await startMesh({
    remote,
    bus,
    store,
    instanceId,
    linksKv,
    intervalMs: options.topologyIntervalMs ?? config.topologyIntervalMs,
    enabled: options.meshTree ?? config.meshTree,
    links: () =>
      [...running.values()]
        .filter((r) => r.upstream.kind === 'uns')
        .map((r) => ({ upstream: r.upstream, peer: r.peer() })),
    onChange: () => void applyMesh(),
    log,
  })

  /**
   * A blocked link keeps its connections and its gateway session but subscribes to nothing: it
   * still counts as a mesh edge (so the tree can fall back on it at once), nothing queues for it
   * while blocked (everything it would carry reaches its peer over the tree), and unblocking is
   * one SUBSCRIBE.
   */
  async function applyMesh(): Promise<void> {
    for (const [id, r] of running) {
      const want = r.upstream.kind === 'uns' && mesh.blocks(r.peer())
      if (want === r.blocked) continue
      r.blocked = want
      log.info({ upstreamId: id, peer: r.peer(), blocked: want }, 'mesh spanning tree')
      await r.link.setBindings(want ? [] : r.upstream.bindings)
      r.status.touch()
    }
  }
  const deleted = new Set<string>()
  let desired = new Map<string, Upstream>()
  let listedAt = 0
  let dirty = true
  let closed = false

  function startLink(upstream: Upstream): Running {
    const id = upstream.id
    let status: LinkStatusWriter | undefined
    let peer: string | null = null
    // Split horizon needs the peer's instance id on the gateway before this link's first
    // message: learn it (and write it to the link status) before connecting; retried on the
    // next connect if the upstream server could not be asked.
    let peerLookup: Promise<void> | undefined
    const learnPeer = (secret: string | null): Promise<void> =>
      (peerLookup ??= discoverPeer(upstream, secret, remote).then(
        async (p) => {
          peer = p
          if (!p) peerLookup = undefined // not answered: ask again on the next connect
          await applyMesh() // before the first connect subscribes anything
          await status?.flush()
        },
        (err: unknown) => {
          peerLookup = undefined
          log.warn({ upstreamId: id, err }, 'could not learn the peer instance id')
        }
      ))
    const link = createBridgeLink({
      upstreamId: id,
      target: { host: upstream.host, brokerPort: upstream.brokerPort, tls: upstream.tls },
      bindings: upstream.bindings,
      credentials: async () => {
        const c = await store.call('upstream.credentials', { id })
        if (upstream.kind === 'uns' && !peer) await learnPeer(c.password)
        // A handshake upstream knows us by our instance id (DESIGN §5).
        return upstream.kind === 'mqtt'
          ? c
          : { username: c.username ?? instanceId, password: c.password }
      },
      local: { url: localUrl, ...localAuth },
      localClientId: localClientId(id),
      upstreamClientId: upstreamClientId(instanceId, id),
      window: windowSize,
      backoffMaxMs,
      ...(options.backoffBaseMs === undefined ? {} : { backoffBaseMs: options.backoffBaseMs }),
      mayConnect: () => leases.holds(id),
      ...(dupGuard
        ? { dupGuard: createDupGuard(typeof dupGuard === 'object' ? dupGuard : {}) }
        : {}),
      onChange: () => status?.touch(),
      log,
    })
    status = createLinkStatusWriter({
      kv: linksKv,
      upstreamId: id,
      owner: supervisorId,
      read: () => link.status(),
      peer: () => peer,
      blocked: () => running.get(id)?.blocked ?? false,
      onError: (err) => log.warn({ upstreamId: id, err }, 'link status write failed'),
    })
    void link.stopped.then(() => {
      const why = link.status().lastError
      // Only a link that stopped by itself (a refused credential) has an error to report: one we
      // stopped (deactivated, deleted, moved, lease lost) is no longer the running one.
      if (why && running.get(id)?.link === link && !closed) {
        // A refused credential: record it where the operator looks; the handshake poll decides
        // whether the upstream is Revoked.
        store.call('upstream.patch', { id, lastError: why }).catch((err: unknown) => {
          log.warn({ upstreamId: id, err }, 'could not record the link error')
        })
      }
    })
    log.info({ upstreamId: id, supervisorId, token: leases.token(id) }, 'bridge owned')
    return { upstream, link, status, peer: () => peer, blocked: false }
  }

  async function stopLink(
    id: string,
    how: 'stop' | 'forget' | 'lost',
    reason = 'deactivated'
  ): Promise<void> {
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

  /** A deleted upstream nobody was bridging still has a session on the gateway: drop it. */
  async function forgetOrphan(id: string): Promise<void> {
    if (!(await leases.acquire(id))) return // its owner forgets it
    try {
      const lo = await connectLocal({
        url: localUrl,
        clientId: localClientId(id),
        clean: true,
        ...localAuth,
        onMessage: () => {},
        onClose: () => {},
      })
      await lo.close()
      await linksKv.delete(id)
    } finally {
      await leases.release(id)
    }
  }

  async function isGone(id: string): Promise<boolean> {
    if (deleted.has(id)) return true
    try {
      return (await store.call('upstream.get', { id })).status === 'Deleted'
    } catch (err) {
      return err instanceof UbError && err.code === 'not_found'
    }
  }

  async function reconcileOnce(): Promise<void> {
    if (dirty || Date.now() - listedAt >= LIST_EVERY_MS) {
      dirty = false
      try {
        const list = await store.call('upstream.list', { status: 'Active' })
        desired = new Map(list.map((u) => [u.id, u]))
        listedAt = Date.now()
      } catch (err) {
        // Keep forwarding what we forward: an unreachable store says nothing about the links.
        log.warn({ err }, 'could not list Active upstreams; keeping the current links')
      }
    }
    for (const [id, r] of running) {
      const want = desired.get(id)
      if (!want) {
        await stopLink(id, (await isGone(id)) ? 'forget' : 'stop')
        continue
      }
      // Renewed by `renewLeases` on its own timer; a lease it lost (or could not renew in
      // time) already stopped the link, and is cleaned up here.
      if (!leases.holds(id)) {
        await stopLink(id, 'lost')
        continue
      }
      const u = r.upstream
      if (
        u.host !== want.host ||
        u.brokerPort !== want.brokerPort ||
        u.kind !== want.kind ||
        JSON.stringify(u.tls) !== JSON.stringify(want.tls)
      ) {
        // Where to connect changed: a new link; the session (and its queue) carries over.
        await r.link.stop('upstream changed')
        await r.status.close()
        running.set(id, startLink(want))
      } else if (!sameBindings(u.bindings, want.bindings)) {
        r.upstream = want
        if (!r.blocked) await r.link.setBindings(want.bindings as Binding[])
      }
    }
    for (const [id, upstream] of desired) {
      if (running.has(id) || closed) continue
      try {
        if (await leases.acquire(id)) running.set(id, startLink(upstream))
      } catch (err) {
        log.warn({ upstreamId: id, err }, 'could not claim the lease')
      }
    }
    for (const id of deleted) {
      deleted.delete(id)
      if (!running.has(id))
        await forgetOrphan(id).catch((err: unknown) => log.warn({ err }, 'forget'))
    }
  }

  // One reconcile pass at a time; calls during a pass share exactly one more pass after it.
  // A caller waits for a pass that started after its call, never for an open-ended loop: a
  // store that keeps timing out must not hold up the start (each pass then takes a timeout).
  let pass: Promise<void> | undefined
  let queued: Promise<void> | undefined
  function runPass(): Promise<void> {
    const p: Promise<void> = reconcileOnce()
      .catch((err: unknown) => log.error({ err }, 'reconcile failed'))
      .finally(() => {
        if (pass === p) pass = undefined
      })
    return p
  }
  function reconcile(): Promise<void> {
    if (closed) return Promise.resolve()
    if (!pass) return (pass = runPass())
    return (queued ??= pass.then(() => {
      queued = undefined
      return closed ? undefined : (pass = runPass())
    }))
  }

  let debounce: NodeJS.Timeout | undefined
  const events: Subscription = await bus.subscribe('evt.upstream.*.transition', (msg) => {
    try {
      const rec = decodeJson<TransitionRecord>(msg.data)
      if (rec.to === 'Deleted') deleted.add(rec.machineId)
    } catch (err) {
      log.warn({ err, subject: msg.subject }, 'unreadable transition event')
    }
    dirty = true
    clearTimeout(debounce)
    debounce = setTimeout(() => void reconcile(), EVENT_DEBOUNCE_MS)
  })
  // Reconcile and renew every third of a lease's life.
  const everyMs = Math.max(100, Math.floor(ttlMs / 3))
  const tick = setInterval(() => void reconcile(), everyMs)

  // Leases renew on their own timer, never behind the reconcile loop: that loop waits on the
  // store (up to its 5 s timeout) and on the gateway, longer than a lease lives, and a lease
  // must not expire because a store call was slow. A lease lost here stops its link at once
  // (the fence); the reconcile loop then tidies up.
  let renewing = false
  async function renewLeases(): Promise<void> {
    if (renewing || closed) return
    renewing = true
    try {
      await Promise.all(
        [...running].map(async ([id, r]) => {
          // A failed renewal of a lease that has not expired yet is tried again next tick.
          await leases.renew(id).catch(() => false)
          if (leases.holds(id)) return
          log.warn({ upstreamId: id, supervisorId }, 'lease lost: stopping the link at once')
          await r.link.stop('lease lost')
          void reconcile()
        })
      )
    } finally {
      renewing = false
    }
  }
  const renewTick = setInterval(() => void renewLeases(), everyMs)

  const gauge = (name: string, help: string, pick: (c: LinkCounters) => number) => ({
    name,
    gauge: new Gauge({
      name,
      help,
      labelNames: ['upstream'],
      registers: [],
      collect() {
        this.reset()
        for (const [id, r] of running) this.set({ upstream: id }, pick(r.link.status()))
      },
    }),
  })
  const metrics = [
    gauge('ub_bridge_forwarded', 'messages forwarded upstream by this replica', (c) => c.forwarded),
    gauge(
      'ub_bridge_waiting',
      'messages received and not yet acknowledged upstream',
      (c) => c.waiting
    ),
    gauge(
      'ub_bridge_duplicates_dropped',
      'messages the duplicate guard dropped (a bridge loop)',
      (c) => c.duplicatesDropped
    ),
    gauge('ub_bridge_lag_ms', 'age of the oldest waiting message, ms', (c) => c.lagMs),
    gauge('ub_bridge_forwarding', '1 while the link forwards', (c) =>
      c.state === 'Forwarding' ? 1 : 0
    ),
  ]
  for (const m of metrics) {
    if (!ctx.metrics.getSingleMetric(m.name)) ctx.metrics.registerMetric(m.gauge)
  }

  await reconcile()
  log.info({ supervisorId, localUrl, window: windowSize, leaseTtlMs: ttlMs }, 'supervisor started')

  let closing: Promise<void> | undefined
  return {
    name: 'supervisor',
    supervisorId,
    endpoints: [],
    links: () => new Map([...running].map(([id, r]) => [id, r.link.status()])),
    reconcile,
    mesh,
    close: () =>
      (closing ??= (async () => {
        closed = true
        clearInterval(tick)
        clearInterval(renewTick)
        clearTimeout(debounce)
        await events.unsubscribe().catch(() => {}) // the bus may already be closing
        await mesh.close()
        await queued
        await pass
        // Hand every lease back: a successor takes over at once instead of after the TTL.
        await Promise.all(
          [...running.keys()].map((id) => stopLink(id, 'stop', 'supervisor stopped'))
        )
        for (const m of metrics) ctx.metrics.removeSingleMetric(m.name)
      })()),
  }
}
