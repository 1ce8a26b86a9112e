import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { INTERNAL_USERNAME, internalCredential } from '../common/internal-credential.ts'
import { createRemoteClient, type RemoteClient } from '../contracts/handshake-client.ts'
import { LEASES_BUCKET, LINKS_BUCKET, ROSTER_BUCKET } from '../contracts/links.ts'
import type { RunningService, ServiceContext } from '../contracts/service.ts'
import { createRoster } from './balance.ts'
import type { LinkCounters } from './bridge.ts'
import { startBacklogWatch } from './backlog-watch.ts'
import { startCanaryPublisher } from './canary-publisher.ts'
import type { LocalDialer } from './dial.ts'
import { createLinkRunner, type LinkRunner, type RunningLinks } from './link-runner.ts'
import type { Mesh } from './mesh.ts'
import { wireMesh } from './mesh-wiring.ts'
import { registerLinkMetrics } from './metrics.ts'
import { createLeaseManager, startLeaseRenewal } from './ownership.ts'
import { startReconciler } from './reconciler.ts'

export type { LinkCounters } from './bridge.ts'
export type { LocalDialer } from './dial.ts'
export type { Mesh } from './mesh.ts'

const PEER_TIMEOUT_MS = 3_000 // 3 s: learning the peer delays the link's first connect
const MIN_TICK_MS = 100 // reconcile and renew no more often than every 100 ms

export interface SupervisorOptions {
  /** The local gateway; default `mqtt://127.0.0.1:<mqttPort>`. */
  localBrokerUrl?: string
  /**
   * The gateway in this process (its `inProcessDialer`): every local connection of every link,
   * and the canary's, is opened with it instead of over TCP to `localBrokerUrl` (README, Bridges).
   */
  localDialer?: LocalDialer
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
  /**
   * This instance's file service as devices reach it, once the HTTP port listens (the embedded
   * default learns its port late); config `filesUrl` when it says so.
   */
  filesUrl?: () => string | undefined
  /** Default from config `bridgeCanaryMs`. */
  canaryMs?: number
  /** How often the links' session backlog is read from the gateways (default 5 s). */
  backlogIntervalMs?: number
}

export interface Supervisor extends RunningService {
  readonly supervisorId: string
  /** Links this replica runs now, by upstream id. */
  links(): Map<string, LinkCounters>
  /** The bridges this replica owns now (holds the lease of), for the cluster view. */
  bridges(): Array<{ upstreamId: string; host: string; state: string }>
  /** Reconcile now (tests; the supervisor also does it on every event and tick). */
  reconcile(): Promise<void>
  /** The mesh spanning tree as this replica sees it. */
  readonly mesh: Mesh
}

/**
 * The bridge supervisor: one bridge link per Active upstream, on exactly one replica. Its parts:
 * the reconciler (which links should run here), the link runner (one link), ownership (leases),
 * the mesh wiring (which links the spanning tree blocks) and the metrics.
 */
export async function startSupervisor(
  ctx: ServiceContext,
  options: SupervisorOptions = {}
): Promise<Supervisor> {
  const { bus, store, config, instanceId } = ctx
  const log = ctx.log.child({ service: 'supervisor' })
  const { localUrl, windowSize, ttlMs, supervisorId } = settingsOf(ctx, options)

  const leasesKv = await bus.kv(LEASES_BUCKET, { ttlMs })
  const linksKv = await bus.kv(LINKS_BUCKET)
  const leases = createLeaseManager({ kv: leasesKv, owner: supervisorId, ttlMs })
  const roster = createRoster({ kv: await bus.kv(ROSTER_BUCKET, { ttlMs }), supervisorId, log })
  const localAuth = { username: INTERNAL_USERNAME, password: await internalCredential(bus) }
  const dial = options.localDialer
  const running: RunningLinks = new Map()
  const remote = options.remote ?? createRemoteClient({ timeoutMs: PEER_TIMEOUT_MS })
  const { mesh, apply: applyMesh } = await wireMesh({
    running,
    remote,
    bus,
    store,
    instanceId,
    linksKv,
    intervalMs: options.topologyIntervalMs ?? config.topologyIntervalMs,
    enabled: options.meshTree ?? config.meshTree,
    skewMs: config.meshClockSkewMs,
    metrics: ctx.metrics,
    log,
  })
  let closed = false
  const isClosed = () => closed
  const canary = canaryOf(options.canaryMs ?? config.bridgeCanaryMs, {
    url: localUrl,
    dial,
    ...localAuth,
    clientId: `ub-canary-${supervisorId}`,
    log,
  })
  const backlog = startBacklogWatch({ bus, running, log, intervalMs: options.backlogIntervalMs })
  const runner = createLinkRunner({
    running,
    store,
    remote,
    leases,
    linksKv,
    instanceId,
    supervisorId,
    local: { url: localUrl, ...localAuth, ...(dial && { dial }) },
    window: windowSize,
    teRoot: config.teRoot,
    filesUrl: () => config.filesUrl ?? options.filesUrl?.(),
    backoffMaxMs: options.backoffMaxMs ?? config.backoffMaxMs,
    backoffBaseMs: options.backoffBaseMs,
    dupGuard: options.dupGuard ?? config.bridgeDupGuard,
    canary,
    applyMesh,
    backlogOf: backlog.of,
    isClosed,
    log,
  })
  // Reconcile and renew every third of a lease's life.
  const everyMs = Math.max(MIN_TICK_MS, Math.floor(ttlMs / 3))
  const reconciler = await startReconciler({
    bus,
    store,
    running,
    runner,
    leases,
    roster,
    everyMs,
    isClosed,
    log,
  })
  // Leases are renewed until the links are stopped, also while closing: a link handing over
  // cleanly waits for its in-flight messages, and must not lose its lease meanwhile.
  let leasesReleased = false
  const renewal = startLeaseRenewal({
    leases,
    held: () => running,
    everyMs,
    isClosed: () => leasesReleased,
    onLost: async (id, r) => {
      log.warn({ upstreamId: id, supervisorId }, 'lease lost: stopping the link at once')
      await r.link.stop('lease lost')
      void reconciler.reconcile()
    },
  })
  const metrics = registerLinkMetrics(ctx.metrics, running, backlog)

  await reconciler.reconcile()
  const local = dial ? 'in-process' : localUrl
  log.info({ supervisorId, local, window: windowSize, leaseTtlMs: ttlMs }, 'supervisor started')

  let closing: Promise<void> | undefined
  return {
    name: 'supervisor',
    supervisorId,
    endpoints: [],
    links: () => new Map([...running].map(([id, r]) => [id, r.link.status()])),
    bridges: () =>
      [...running].map(([id, r]) => ({
        upstreamId: id,
        host: r.upstream.host,
        state: r.link.status().state,
      })),
    reconcile: reconciler.reconcile,
    mesh,
    close: () =>
      (closing ??= (async () => {
        closed = true
        backlog.stop()
        await canary?.publisher.close()
        await stopDeciding(reconciler, mesh, roster)
        await handBack(running, runner)
        leasesReleased = true
        renewal.stop()
        metrics.close()
      })()),
  }
}

/** No more decisions, and out of the roster before its bridges are free, so the others take them all. */
async function stopDeciding(
  reconciler: Awaited<ReturnType<typeof startReconciler>>,
  mesh: Mesh,
  roster: ReturnType<typeof createRoster>
): Promise<void> {
  await reconciler.stop()
  await mesh.close()
  await reconciler.drain()
  await roster.leave()
}

/** Hand every lease back: a successor takes over at once instead of after the TTL. */
async function handBack(running: RunningLinks, runner: LinkRunner): Promise<void> {
  await Promise.all([...running.keys()].map((id) => runner.stop(id, 'stop', 'supervisor stopped')))
}

/** The links' canary: its interval and connection (connected when the first link starts); none when 0. */
function canaryOf(intervalMs: number, connection: Parameters<typeof startCanaryPublisher>[0]) {
  return intervalMs > 0 ? { intervalMs, publisher: startCanaryPublisher(connection) } : undefined
}

/** Options first, then config, then defaults. */
function settingsOf({ config, instanceId }: ServiceContext, options: SupervisorOptions) {
  return {
    localUrl:
      options.localBrokerUrl ?? config.localBrokerUrl ?? `mqtt://127.0.0.1:${config.mqttPort}`,
    windowSize: options.window ?? config.bridgeWindow,
    ttlMs: options.leaseTtlMs ?? config.leaseTtlMs,
    supervisorId:
      options.supervisorId ??
      config.supervisorId ??
      `${instanceId}-${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
  }
}
