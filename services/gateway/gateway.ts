import { randomUUID } from 'node:crypto'
import type { Registry } from 'prom-client'
import { encodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'
import { internalCredential } from '../common/internal-credential.ts'
import type { Logger } from '../common/log.ts'
import type { StoreClient } from '../contracts/store-client.ts'
import type { AnonymousPolicy, LocalUser } from './auth.ts'
import { createAuthenticator, type AuthLimits } from './authenticator.ts'
import { createBroker, type Broker, type BrokerLimits, type QueueSweepSettings } from './broker.ts'
import { startListeners, type ListenerPorts, type TlsMaterial } from './listeners.ts'
import {
  createCounters,
  registerGatewayMetrics,
  type GatewayCounters,
  type GatewayStats,
} from './metrics.ts'
import { createBusMq } from './mq.ts'
import { createBusPersistence, type BusPersistence, type StoreLimits } from './persistence.ts'
import { serveStats } from '../contracts/gateway-stats.ts'
import { serveSessionBacklog } from '../contracts/session-backlog.ts'
import { serveTePublish } from '../contracts/te-publish.ts'
import { COMMAND_ENDED_SUBJECT } from '../contracts/files.ts'
import { isBridgeEcho, watchPeers } from './split-horizon.ts'
import { enforceRevocations } from './revocation.ts'
import { DEFAULT_DRAIN_MS } from './graceful-close.ts'
import { DEFAULT_BUS_CHECK_MS, watchBusLoss } from './bus-loss.ts'

export interface GatewayOptions {
  bus: Bus
  store: StoreClient
  log: Logger
  /** Where to register metrics; none when absent. */
  metrics?: Registry
  /** Name in stats and metrics. */
  gatewayId?: string
  host?: string
  mqttPort?: number
  mqttPortIsDefault?: boolean
  wsPort?: number
  tlsPort?: number
  wssPort?: number
  tls?: TlsMaterial
  limits?: Partial<BrokerLimits>
  /** Bounds on the shared state: session queues, retained messages (README, Bounds). */
  storeLimits?: Partial<StoreLimits>
  anonymous?: AnonymousPolicy
  users?: readonly LocalUser[]
  heartbeatMs?: number
  /** The CONNECT front door's bounds (cache, semaphores, per-source budget). */
  auth?: Partial<AuthLimits>
  /** A proxy is in front: PROXY protocol on TCP/TLS, X-Forwarded-For on WebSocket. */
  trustProxy?: boolean
  proxyHeaderTimeoutMs?: number
  /** ms between re-checks of every connected bridge against the store; 0 = none. */
  bridgeRevalidateMs?: number
  /** On close, at most this long for in-flight PUBLISHes and deliveries to finish (graceful-close.ts). */
  drainMs?: number
  /** ms between round trips to the bus; 3 failed in a row drop every client (bus-loss.ts); 0 = off. */
  busCheckMs?: number
  /** The sweep of connected sessions' queues for messages whose live copy never came. */
  queueSweep?: Partial<QueueSweepSettings>
  /** ms a queue write for a subscriber online here and keeping up waits for its PUBACK; 0 = none. */
  holdWritesMs?: number
  /** thin-edge.io topic root (empty = off) and auto-registration (edge/te-bus.ts). */
  te?: { root: string; autoRegister: boolean }
}

export interface Gateway {
  name: string
  endpoints: string[]
  ports: ListenerPorts
  gatewayId: string
  /** The aedes broker id (random per start, as aedes#775 advises). */
  brokerId: string
  stats(): GatewayStats
  /** For tests and tools: the broker and its hooks. */
  broker: Broker
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export const DEFAULT_LIMITS: BrokerLimits = {
  maxPacketSize: 1_048_576, // 1 MiB
  maxConnections: 10_000,
  keepAliveMin: 0,
  keepAliveMax: 0,
  maxPendingMessages: 10_000,
  maxPendingBytes: 16 * 1_048_576, // 16 MiB
  writeStallMs: 60_000, // 1 min: past any pause of a live reader, well inside TCP's ~15 min give-up
  maxInboundQos2: 100,
  sessionExpiryMs: 7 * 24 * 3_600_000, // 7 days, as the queue's TTL
}
export const DEFAULT_HEARTBEAT_MS = 5_000 // 5 s: a dead gateway's wills fire within 15–35 s

/** Start one broker gateway: aedes with the bus as its mq and persistence, and its listeners. */
export async function createGateway({
  bus,
  store,
  log,
  metrics,
  gatewayId = `gw-${randomUUID().slice(0, 8)}`,
  host = '0.0.0.0',
  mqttPort = 1883,
  mqttPortIsDefault = false,
  wsPort,
  tlsPort,
  wssPort,
  tls,
  limits = {},
  storeLimits = {},
  anonymous = 'loopback',
  users = [],
  heartbeatMs = DEFAULT_HEARTBEAT_MS,
  auth = {},
  trustProxy = false,
  proxyHeaderTimeoutMs,
  bridgeRevalidateMs,
  drainMs = DEFAULT_DRAIN_MS,
  busCheckMs = DEFAULT_BUS_CHECK_MS,
  holdWritesMs,
  ...forBroker // queueSweep, te: the broker's defaults when absent
}: GatewayOptions): Promise<Gateway> {
  const started = Date.now()
  const brokerId = randomUUID()
  const counters = createCounters()
  const internalSecret = cachedInternalSecret(bus, log)
  const authenticator = createAuthenticator({
    ...{ anonymous, users, store, log, internalSecret, counters },
    limits: auth,
  })
  const persistence = await createBusPersistence({
    ...{ bus, log, limits: storeLimits, counters, holdWritesMs },
  })
  // Peer instance ids of this fabric's bridge links, written by the supervisor (split horizon).
  const peers = await watchPeers(bus)
  const mq = createBusMq({ bus, brokerId: () => brokerId, log })
  const limitsInForce: BrokerLimits = { ...DEFAULT_LIMITS, ...limits }
  let dropAll = () => 0 // the broker's, once it exists
  const busWatch = watchBusLoss({
    ...{ bus, log, everyMs: busCheckMs },
    onLost: () => void (counters.busLossDisconnects += dropAll()),
  })
  const broker = await createBroker({
    ...{ id: brokerId, mq, persistence, authenticator, counters, log, heartbeatMs },
    limits: limitsInForce,
    ...{ ...forBroker, twinStore: store },
    onCommandEnded: (ended) => bus.publish(COMMAND_ENDED_SUBJECT, encodeJson(ended)),
    isEcho: (clientId, origin) => isBridgeEcho(clientId, origin, peers.peerOf),
    busLost: busWatch.lost,
  })
  dropAll = () => broker.disconnect(() => true)
  const subs: Subscription[] = [{ unsubscribe: async () => (busWatch.stop(), peers.close()) }]
  let listeners: Awaited<ReturnType<typeof startListeners>> | undefined
  try {
    subs.push(
      await enforceRevocations({
        ...{ bus, store, broker, authenticator, counters, log },
        ...(bridgeRevalidateMs === undefined ? {} : { revalidateMs: bridgeRevalidateMs }),
      })
    )
    listeners = await startListeners({
      host,
      mqttPort,
      mqttPortIsDefault,
      ...(wsPort === undefined ? {} : { wsPort }),
      ...(tlsPort === undefined ? {} : { tlsPort }),
      ...(wssPort === undefined ? {} : { wssPort }),
      ...(tls === undefined ? {} : { tls }),
      maxPacketSize: limitsInForce.maxPacketSize,
      handle: broker.handle,
      log,
      trustProxy,
      ...(proxyHeaderTimeoutMs === undefined ? {} : { proxyHeaderTimeoutMs }),
      onProxyRefused: () => void counters.proxyRefused++,
    })
  } catch (err) {
    await Promise.allSettled(subs.map((s) => s.unsubscribe()))
    await broker.close()
    throw err
  }
  const { ports, endpoints } = listeners
  const { read, stats } = statsOf({ broker, persistence, mq, counters, ports, started })(
    gatewayId,
    brokerId
  )
  subs.push(...(await serveReads(bus, gatewayId, stats, persistence)))
  subs.push(await serveTePublish(bus, broker.tePublish))
  if (metrics) registerGatewayMetrics({ registry: metrics, gatewayId, counters, read })
  log.info({ gatewayId, brokerId, endpoints }, 'gateway listening')

  let closing: Promise<void> | undefined
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      // New connections go to another gateway at once; the open ones finish what is in flight.
      listeners.stopAccepting()
      await broker.close(drainMs)
      await Promise.allSettled(subs.map((s) => s.unsubscribe()))
      await listeners.close()
    })())
  return {
    name: 'gateway',
    endpoints,
    ports,
    gatewayId,
    brokerId,
    stats,
    broker,
    close,
    [Symbol.asyncDispose]: close,
  }
}

/** The gateway's figures: `read` for the metrics at scrape time, `stats` for the bus. */
function statsOf(parts: {
  broker: Broker
  persistence: BusPersistence
  mq: { queued: number }
  counters: GatewayCounters
  ports: ListenerPorts
  started: number
}) {
  return (gatewayId: string, brokerId: string) => {
    const { broker, persistence, mq, counters, ports, started } = parts
    const read = () => ({
      clients: (broker.aedes as unknown as { connectedClients: number }).connectedClients,
      retained: persistence.retainedCount,
      mqQueued: mq.queued,
      queueDrains: persistence.queueDrains,
    })
    const stats = (): GatewayStats => ({
      gatewayId,
      brokerId,
      ...read(),
      ...counters,
      ports: { ...ports },
      uptimeMs: Date.now() - started,
    })
    return { read, stats }
  }
}

/** The internal credential, read from the bus once; a failed read is tried again next time. */
export function cachedInternalSecret(bus: Bus, log: Logger): () => Promise<string> {
  let secret: Promise<string> | undefined
  const get = () =>
    (secret ??= internalCredential(bus).catch((err: unknown) => {
      secret = undefined
      throw err
    }))
  // Read now, in the background: read at a bridge's first login, it added one more bus round
  // trip (5 s when a NATS node had just died) to the failover it was part of (npm run chaos).
  get().catch((err: unknown) =>
    log.warn({ err }, 'could not read the internal credential yet; read again at first use')
  )
  return get
}

/** What the gateway answers on the bus: its stats, and any session's backlog (shared queue). */
async function serveReads(
  bus: Bus,
  gatewayId: string,
  stats: () => GatewayStats,
  persistence: Pick<BusPersistence, 'sessionBacklog'>
): Promise<Subscription[]> {
  return [
    ...(await serveStats(bus, gatewayId, stats)),
    await serveSessionBacklog(bus, async (clientId) => ({
      clientId,
      ...(await persistence.sessionBacklog(clientId)),
    })),
  ]
}
