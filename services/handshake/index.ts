import { getConnInfo } from '@hono/node-server/conninfo'
import type { RunningService, ServiceContext } from '../contracts/service.ts'
import { createApp } from './server/app.ts'
import { instanceKey } from '../common/instance-key.ts'
import { startAuditWatch } from './server/audit-watch.ts'
import { startExpirySweeper } from './server/expiry.ts'
import { createApiMetrics } from './server/metrics.ts'
import { startPoller } from './poller/poller.ts'
import { createRemoteClient, type RemoteClient } from '../contracts/handshake-client.ts'
import { packageVersion } from '../common/version.ts'
import { startFiles } from '../files/index.ts'

export { createApp, type AppOptions } from './server/app.ts'
export { createRemoteClient, type RemoteClient } from '../contracts/handshake-client.ts'
export { startPoller, type Poller } from './poller/poller.ts'
export { startAuditWatch, type AuditWatch, type AuditAlarm } from './server/audit-watch.ts'
export { startExpirySweeper, type ExpirySweeper } from './server/expiry.ts'

export interface HandshakeOptions {
  ready: () => Promise<{ ok: boolean; checks: Record<string, boolean> }>
  /** sha-256 hex of the admin token. */
  adminTokenHash: string
  /** Tests inject a fake upstream server; the default calls it over HTTP with fetch. */
  remote?: RemoteClient
}

export interface HandshakeService extends RunningService {
  app: { fetch(req: Request, env?: unknown): Response | Promise<Response> }
}

/**
 * The handshake API service: the hono app (operator API, handshake endpoints, health and
 * metrics) and the pollers that carry this instance's own requests through the handshake.
 * The launcher serves `app.fetch`; `close()` stops the pollers.
 */
export async function startHandshake(
  ctx: ServiceContext,
  { ready, adminTokenHash, remote: given }: HandshakeOptions
): Promise<HandshakeService> {
  const { config, bus, store, instanceId } = ctx
  // Our public key goes with every request we send: the upstream checks our adverts with it.
  const remote =
    given ?? createRemoteClient({ publicKey: async () => (await instanceKey(bus)).publicKey })
  const log = ctx.log.child({ service: 'handshake' })
  const poller = await startPoller({
    store,
    bus,
    remote,
    log,
    instanceId,
    pollMs: config.handshakePollMs,
    slowPollMs: config.handshakeSlowPollMs,
  })
  // The chain is checked where the operator looks: its alarms reach /metrics, the log and SSE.
  const audit = startAuditWatch({
    store,
    log,
    metrics: ctx.metrics,
    intervalMs: config.auditCheckMs,
    recheckRows: config.auditRecheckRows,
  })
  const files = await startFiles(
    { ...ctx, log },
    { adminTokenHash, socketAddress: (c) => getConnInfo(c).remote.address }
  )
  const app = createApp({
    files,
    store,
    bus,
    log,
    instanceId,
    remote,
    poller,
    // Node's socket address; Deno and Bun serve through node:http in services/launch/runtime, so it holds there too.
    remoteAddress: (c) => getConnInfo(c).remote.address,
    trustProxy: config.trustProxy,
    allowSelfUpstream: config.allowSelfUpstream,
    adminTokenHash,
    ready,
    metrics: ctx.metrics,
    version: packageVersion(),
    services: [...config.services],
    rate: {
      perMinute: config.handshakeRatePerMin,
      burst: config.handshakeRateBurst,
      maxKeys: config.handshakeRateMaxKeys,
    },
    pendingLimits: {
      perInstance: config.handshakeMaxPendingPerInstance,
      perNetwork: config.handshakeMaxPendingPerNetwork,
      total: config.handshakeMaxPending,
    },
    sseQueueMax: config.sseQueueMax,
    meshClockSkewMs: config.meshClockSkewMs,
    auditAlarms: audit,
    presenceIntervalMs: config.presenceIntervalMs,
    ...(config.metricsToken ? { metricsToken: config.metricsToken } : {}),
  })
  const { guards } = createApiMetrics(ctx.metrics)
  const expiry = startExpirySweeper({
    store,
    log,
    ttlMs: config.handshakePendingTtlMs,
    onExpired: () => guards.expired.inc(),
  })
  let closing: Promise<void> | undefined
  return {
    name: 'handshake',
    endpoints: [],
    app,
    close: () =>
      (closing ??= Promise.all([poller.close(), expiry.close(), audit.close(), files.close()]).then(
        () => {}
      )),
  }
}
