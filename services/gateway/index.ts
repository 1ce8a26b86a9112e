import { readTlsMaterial } from '../common/pem.ts'
import type { RunningService, ServiceContext } from '../contracts/service.ts'
import { decodeJson, type Bus, type Subscription } from '../common/bus/bus.ts'
import { transitionSubject, type TransitionRecord } from '../contracts/store.ts'
import { createAuthenticator, type Authenticator, type AuthLimits } from './authenticator.ts'
import { cachedInternalSecret, createGateway, type Gateway } from './gateway.ts'
import { createCounters } from './metrics.ts'
import type { ListenerPorts, TlsMaterial } from './listeners.ts'

export { createGateway, DEFAULT_HEARTBEAT_MS, DEFAULT_LIMITS } from './gateway.ts'
export type { Gateway, GatewayOptions } from './gateway.ts'
// The co-located bridge's connection to this gateway, without a socket (README, Bridges).
export { inProcessDialer, type InProcessDialer } from './in-process.ts'
export type { BrokerLimits } from './broker.ts'
export type { AnonymousPolicy, LocalUser, Principal } from './auth.ts'
export type { GatewayStats } from './metrics.ts'
export type { ListenerPorts, TlsMaterial } from './listeners.ts'
export { hashPassword, verifyPassword, SCRYPT_DEFAULTS } from './passwords.ts'
export type { Authenticator } from './authenticator.ts'
// thin-edge.io's registration rules, pure: the HTTP entity API checks its writes with them.
export {
  isTeProblem,
  MAIN_DEVICE_TOPIC_ID,
  parseRegistration,
  type TeRegistration,
} from './edge/te-schema.ts'
export {
  collectGatewayStats,
  gatewayStatsSubject,
  STATS_SUBJECT,
} from '../contracts/gateway-stats.ts'

/** The authenticator's bounds from config: the same for MQTT and for the file service's HTTP. */
function authLimitsOf(config: ServiceContext['config']): AuthLimits {
  return {
    cacheMs: config.authCacheMs,
    cacheMaxEntries: config.authCacheMaxEntries,
    scryptConcurrency: config.scryptConcurrency,
    storeConcurrency: config.storeAuthConcurrency,
    queueMax: config.authQueueMax,
    connectRatePerSec: config.connectRatePerSec,
    connectRateBurst: config.connectRateBurst,
    connectPendingPerSource: config.connectPendingPerSource,
    connectRateSources: config.connectRateSources,
  }
}

function tlsFrom(config: ServiceContext['config']): TlsMaterial | undefined {
  if (config.mqttTlsPort === undefined && config.mqttWssPort === undefined) return undefined
  return readTlsMaterial(config, 'mqttTlsPort and mqttWssPort')
}

/** The broker gateway service, wired from the launcher's context. */
export async function startGateway(
  ctx: ServiceContext
): Promise<RunningService & { ports: ListenerPorts; gateway: Gateway }> {
  const { config } = ctx
  const tls = tlsFrom(config)
  const gateway = await createGateway({
    bus: ctx.bus,
    store: ctx.store,
    log: ctx.log.child({ service: 'gateway' }),
    metrics: ctx.metrics,
    ...(config.gatewayId ? { gatewayId: config.gatewayId } : {}),
    host: config.mqttHost,
    mqttPort: config.mqttPort,
    mqttPortIsDefault: !ctx.explicit.has('mqttPort'),
    ...(config.mqttWsPort === undefined ? {} : { wsPort: config.mqttWsPort }),
    ...(config.mqttTlsPort === undefined ? {} : { tlsPort: config.mqttTlsPort }),
    ...(config.mqttWssPort === undefined ? {} : { wssPort: config.mqttWssPort }),
    ...(tls ? { tls } : {}),
    limits: {
      maxPacketSize: config.maxPacketSize,
      maxConnections: config.maxConnections,
      keepAliveMin: config.keepAliveMin,
      keepAliveMax: config.keepAliveMax,
      maxPendingMessages: config.maxPendingMessages,
      maxPendingBytes: config.maxPendingBytes,
      writeStallMs: config.writeStallSec * 1_000,
      maxInboundQos2: config.maxInboundQos2,
      sessionExpiryMs: config.sessionExpirySec * 1_000,
    },
    storeLimits: {
      sessionMaxQueued: config.sessionMaxQueued,
      bridgeMaxQueued: config.bridgeMaxQueued,
      maxRetainedMessages: config.maxRetainedMessages,
      maxRetainedBytes: config.maxRetainedBytes,
    },
    anonymous: config.anonymous,
    users: config.users,
    trustProxy: config.trustProxy,
    proxyHeaderTimeoutMs: config.proxyHeaderTimeoutMs,
    bridgeRevalidateMs: config.bridgeRevalidateMs,
    drainMs: config.gatewayDrainMs,
    busCheckMs: config.busCheckMs,
    holdWritesMs: config.holdWritesMs,
    te: { root: config.teRoot, autoRegister: config.teAutoRegister },
    queueSweep: {
      everyMs: config.queueSweepMs,
      olderThanMs: config.queueSweepAgeMs,
      sessionsPerTick: config.queueSweepSessions,
    },
    auth: authLimitsOf(config),
  })
  return {
    name: gateway.name,
    endpoints: gateway.endpoints,
    ports: gateway.ports,
    gateway,
    close: gateway.close,
  }
}

/**
 * The gateway's authenticator for another door (the file transfer service's HTTP): the same
 * principals, users, anonymous policy and bounds as MQTT, with its own cache and counters. The
 * caller moves its epoch on grant changes (`watchGrantChanges`).
 */
export function createPrincipalAuthenticator(ctx: ServiceContext): Authenticator {
  const { config } = ctx
  return createAuthenticator({
    anonymous: config.anonymous,
    users: config.users,
    store: ctx.store,
    log: ctx.log,
    internalSecret: cachedInternalSecret(ctx.bus, ctx.log),
    counters: createCounters(),
    limits: authLimitsOf(config),
  })
}

/** Calls `changed` whenever a downstream's grants may have changed (accepted, revoked, withdrawn). */
export function watchGrantChanges(bus: Bus, changed: () => void): Promise<Subscription> {
  return bus.subscribe(transitionSubject('request', '*'), (msg) => {
    const t = decodeJson<TransitionRecord>(msg.data)
    if (t.to === 'Accepted' || t.to === 'Revoked' || t.to === 'Withdrawn') changed()
  })
}
