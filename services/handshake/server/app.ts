import { OpenAPIHono } from '@hono/zod-openapi'
import type { Context, Hono, MiddlewareHandler } from 'hono'
import { FILES_PREFIX } from '../../files/index.ts'
import { bodyLimit } from 'hono/body-limit'
import type { Registry } from 'prom-client'
import { createOpsRoutes, presentsMetricsToken } from '../../common/ops-routes.ts'
import { requireOperator } from '../../common/operator-auth.ts'
import { clientIp, networkKey } from './client-ip.ts'
import type { PendingLimits } from '../../contracts/store.ts'
import type { AuditAlarms } from './audit-watch.ts'
import { matchesHash } from '../secret.ts'
import { createRouter, type RouteDeps } from './deps.ts'
import { ApiError, createErrorHandler, notFound } from './errors.ts'
import { createApiMetrics } from './metrics.ts'
import { createStatusWaiters } from './status-waiters.ts'
import { DEFAULT_RATE_BURST, DEFAULT_RATE_PER_MINUTE, rateLimit } from './rate-limit.ts'
import { clusterRoutes } from './routes/cluster.ts'
import { linksRoutes } from './routes/links.ts'
import { meshRoutes } from './routes/mesh.ts'
import { routeRoutes } from './routes/route.ts'
import { teEntityRoutes } from './routes/te-entities.ts'
import { teEntityWriteRoutes } from './routes/te-entity-writes.ts'
import { eventRoutes } from './routes/events.ts'
import { handshakeRoutes } from './routes/handshake.ts'
import { instanceRoutes } from './routes/instance.ts'
import { observeRoutes } from './routes/observe.ts'
import { requestRoutes } from './routes/requests.ts'
import { topologyRoutes } from './routes/topology.ts'
import { upstreamRoutes } from './routes/upstreams.ts'
import { CONSOLE_PREFIX, createConsole, isConsolePath } from '../console/index.ts'

export interface AppOptions extends RouteDeps {
  adminTokenHash: string
  ready: () => Promise<{ ok: boolean; checks: Record<string, boolean> }>
  metrics: Registry
  version: string
  services: string[]
  rate?: { perMinute: number; burst: number; maxKeys?: number }
  ssePingMs?: number
  /** Bounds on Pending requests (config `handshakeMaxPending…`); defaults without config. */
  pendingLimits?: PendingLimits
  /** Events one SSE client may have waiting (config `sseQueueMax`). */
  sseQueueMax?: number
  /** How far a topology advert's version may be from our clock (config `meshClockSkewMs`). */
  meshClockSkewMs?: number
  /** Chain-break alarms of the periodic audit, sent to every SSE client. */
  auditAlarms?: AuditAlarms
  /** Config `presenceIntervalMs`: the cluster view's bucket TTL, should this process make it. */
  presenceIntervalMs?: number
  /** The file transfer routes (services/files): their own principals, bounds and streaming bodies. */
  files?: { routes: Hono }
  /** Config `metricsToken`: opens `/metrics` (only), besides the admin token. */
  metricsToken?: string
}

export const HANDSHAKE_BODY_LIMIT = 16 * 1_024 // 16 KiB: a request is two short strings
/** 256 KiB: a mesh topology database, a few hundred bytes per instance. */
export const TOPOLOGY_BODY_LIMIT = 256 * 1_024
export const OPERATOR_BODY_LIMIT = 256 * 1_024 // 256 KiB: room for a thousand bindings and TLS PEMs
const HANDSHAKE_PREFIX = '/api/v1/handshake/'
const PUBLIC_PATHS = new Set(['/healthz', '/readyz'])

const limitBody = (maxSize: number): MiddlewareHandler =>
  bodyLimit({
    maxSize,
    onError: () => {
      throw new ApiError(413, 'payload_too_large', `the body exceeds ${maxSize} bytes`)
    },
  })

/**
 * The HTTP face of the fabric (README.md, HTTP API): one hono app, its OpenAPI document made from
 * the route schemas.
 */
export function createApp(options: AppOptions): OpenAPIHono {
  const { log, adminTokenHash, ready, metrics, rate, ssePingMs, sseQueueMax, auditAlarms } = options
  const app = createRouter()
  app.onError(createErrorHandler({ log }))
  app.notFound(notFound)

  const apiMetrics = createApiMetrics(metrics)
  const { guards } = apiMetrics
  app.use('*', apiMetrics.middleware)
  const operator = requireOperator({ verifyToken: (token) => matchesHash(token, adminTokenHash) })
  const handshakeBody = limitBody(HANDSHAKE_BODY_LIMIT)
  const topologyBody = limitBody(TOPOLOGY_BODY_LIMIT)
  const operatorBody = limitBody(OPERATOR_BODY_LIMIT)
  const sourceNetwork = (c: Context) =>
    networkKey(clientIp(c, { remote: options.remoteAddress, trustProxy: options.trustProxy }))
  const operatorConsole = createConsole({
    adminTokenHash,
    instanceId: options.instanceId,
    metrics,
    bus: options.bus,
    signInLimit: {
      key: sourceNetwork,
      onLimited: () => guards.signInLimited.inc(),
      onEvicted: () => guards.signInEvicted.inc(),
      onSize: (n) => guards.signInKeys.set(n),
    },
  })
  app.use('*', async (c, next) => {
    if (c.req.path.startsWith(HANDSHAKE_PREFIX))
      return (c.req.path.endsWith('/topology') ? topologyBody : handshakeBody)(c, next)
    if (PUBLIC_PATHS.has(c.req.path)) return next()
    if (c.req.path === '/metrics' && presentsMetricsToken(c, options.metricsToken)) return next()
    // Files check their caller themselves (a device, a bridge or the operator) and stream.
    if (options.files && c.req.path.startsWith(FILES_PREFIX)) return next()
    // The console's pages and sign-in are public; its session checks itself.
    if (isConsolePath(c.req.path)) return next()
    // No Authorization header but a console session cookie (+ X-CSRF-Token on a change).
    const viaSession = await operatorConsole.authorize(c)
    if (viaSession === 'ok') return operatorBody(c, next)
    if (viaSession !== 'none') return viaSession
    return operator(c, async () => {
      await operatorBody(c, next)
    })
  })
  app.post(
    '/api/v1/handshake/requests',
    rateLimit({
      perMinute: rate?.perMinute ?? DEFAULT_RATE_PER_MINUTE,
      burst: rate?.burst ?? DEFAULT_RATE_BURST,
      ...(rate?.maxKeys === undefined ? {} : { maxKeys: rate.maxKeys }),
      // Per network, not per address: an IPv6 subscriber holds a whole /64.
      key: sourceNetwork,
      onLimited: () => guards.rateLimited.inc(),
      onEvicted: () => guards.rateEvicted.inc(),
      onSize: (n) => guards.rateKeys.set(n),
    })
  )

  app.route(CONSOLE_PREFIX, operatorConsole.routes)
  app.route('/', createOpsRoutes({ ready, metrics }))
  const statusWaiters = createStatusWaiters(options.bus, () => guards.waitersRefused.inc())
  app.route('/', handshakeRoutes({ ...options, guards, statusWaiters }))
  app.route('/', topologyRoutes(options))
  app.route('/', upstreamRoutes(options))
  app.route('/', requestRoutes(options))
  app.route('/', observeRoutes(options))
  app.route('/', clusterRoutes({ bus: options.bus, intervalMs: options.presenceIntervalMs }))
  app.route('/', routeRoutes(options))
  app.route('/', meshRoutes(options))
  app.route('/', linksRoutes(options))
  app.route('/', teEntityRoutes(options))
  app.route('/', teEntityWriteRoutes(options))
  if (options.files) app.route('/', options.files.routes)
  app.route(
    '/',
    eventRoutes({
      ...options,
      sseClients: apiMetrics.sseClients,
      guards,
      ...(ssePingMs === undefined ? {} : { pingMs: ssePingMs }),
      ...(sseQueueMax === undefined ? {} : { queueMax: sseQueueMax }),
      ...(auditAlarms === undefined ? {} : { auditAlarms }),
    })
  )
  app.route(
    '/',
    instanceRoutes({
      instanceId: options.instanceId,
      version: options.version,
      services: options.services,
      bus: options.bus,
    })
  )

  describeOps(app)
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', {
    type: 'http',
    scheme: 'bearer',
    description: 'the admin token',
  })
  app.openAPIRegistry.registerComponent('securitySchemes', 'handshakeSecret', {
    type: 'http',
    scheme: 'bearer',
    description: "the downstream's handshake secret (the server keeps only its sha-256)",
  })
  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: {
      title: 'uns-bridge',
      version: options.version,
      description: 'Handshake and operator API (README.md, HTTP API)',
    },
    security: [{ bearerAuth: [] }],
  })
  return app
}

/** The ops routes are plain hono (shared by every process): describe them by hand. */
function describeOps(app: OpenAPIHono): void {
  const text = { description: 'ok' }
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/healthz',
    tags: ['ops'],
    security: [],
    summary: 'Liveness',
    responses: { 200: text },
  })
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/readyz',
    tags: ['ops'],
    security: [],
    summary: 'Readiness, with a check per dependency',
    responses: { 200: text, 503: { description: 'not ready' } },
  })
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/metrics',
    tags: ['ops'],
    summary: 'Prometheus metrics (needs the admin token or config metricsToken)',
    responses: { 200: { description: 'text exposition format' } },
  })
  app.openAPIRegistry.registerPath({
    method: 'get',
    path: '/openapi.json',
    tags: ['ops'],
    summary: 'This document (needs the admin token)',
    responses: { 200: { description: 'OpenAPI 3.1' } },
  })
}
