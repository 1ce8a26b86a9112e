import { MAX_WAIT_S, type StatusWaiters } from '../status-waiters.ts'
import { createRoute, z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import type { IncomingRequest, PendingLimits } from '../../../contracts/store.ts'
import { UbError } from '../../../common/errors.ts'
import { clientIp, networkKey } from '../client-ip.ts'
import type { GuardMetrics } from '../metrics.ts'
import { createRouter, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import {
  HandshakeAccepted,
  HandshakeRequestBody,
  HandshakeStatus,
  RequestIdParam,
  errorResponses,
  json,
} from '../schemas.ts'
import { requireRequestSecret } from '../request-secret.ts'
import { instanceKey, pinPeerKey, requestKeyId } from '../../../common/instance-key.ts'

/**
 * The upstream server's handshake endpoints, called by downstream instances (ARCHITECTURE.md
 * §11). No admin token: a request proves nothing but its instance ID; status and withdrawal need
 * the secret whose hash came with the request.
 */
const tags = ['handshake']
const SECRET = [{ handshakeSecret: [] }]

const submit = createRoute({
  method: 'post',
  path: '/api/v1/handshake/requests',
  tags,
  security: [],
  summary:
    'A downstream asks to bridge here (rate-limited per source network; Pending requests capped per instance ID, per network and in all)',
  request: {
    body: { required: true, content: { 'application/json': { schema: HandshakeRequestBody } } },
  },
  responses: {
    202: json(HandshakeAccepted, 'recorded (or the live request this instance already has)'),
    ...errorResponses(400, 413, 429, 503),
  },
})

const status = createRoute({
  method: 'get',
  path: '/api/v1/handshake/requests/{requestId}',
  tags,
  security: SECRET,
  summary:
    "The request's status and grants (Authorization: Bearer <the downstream's secret>); with wait and seen, answered when the status leaves `seen` or after `wait` seconds",
  request: {
    params: RequestIdParam,
    query: z.object({
      wait: z.coerce
        .number()
        .int()
        .min(0)
        .max(MAX_WAIT_S)
        .optional()
        .openapi({ param: { name: 'wait', in: 'query' }, description: 'seconds to wait at most' }),
      seen: z
        .string()
        .max(32)
        .optional()
        .openapi({ param: { name: 'seen', in: 'query' }, description: 'the status last seen' }),
    }),
  },
  responses: { 200: json(HandshakeStatus, 'status and grants'), ...errorResponses(401, 404, 503) },
})

const withdraw = createRoute({
  method: 'delete',
  path: '/api/v1/handshake/requests/{requestId}',
  tags,
  security: SECRET,
  summary: 'The downstream withdraws its request (Authorization: Bearer <secret>)',
  request: { params: RequestIdParam },
  responses: { 200: json(HandshakeStatus, 'Withdrawn'), ...errorResponses(401, 404, 409, 503) },
})

/** Defaults when the app is built without config (tests); the launcher passes the config's. */
export const DEFAULT_PENDING_LIMITS: PendingLimits = {
  perInstance: 5,
  perNetwork: 10,
  total: 1_000,
}
const PENDING_RETRY_AFTER_S = 3_600 // a slot frees when a request is decided, withdrawn or expires

export function handshakeRoutes(
  deps: RouteDeps & {
    pendingLimits?: PendingLimits
    guards?: Pick<GuardMetrics, 'pendingRefused'>
    /** Long-polled status requests (status-waiters.ts); absent = answered at once. */
    statusWaiters?: StatusWaiters
  }
) {
  const { store, instanceId } = deps
  const app = createRouter()
  const ipOf = (c: Context) =>
    clientIp(c, { remote: deps.remoteAddress, trustProxy: deps.trustProxy })

  // Our public key travels in every answer: the downstream pins it and checks our adverts with it.
  const ownKey = async () => (await instanceKey(deps.bus)).publicKey
  const view = async (r: IncomingRequest) => ({
    requestId: r.id,
    status: r.status,
    grants: r.grants,
    instanceId,
    publicKey: await ownKey(),
  })

  app.openapi(submit, async (c) => {
    const body = c.req.valid('json')
    const ip = ipOf(c)
    // An instance ID is public, so it proves nothing: each secret gets its own request (a repeat
    // with the same secret finds it), and no answer says anything about another secret's.
    const { request, created } = await store
      .call('request.create', {
        instanceId: body.instanceId,
        secretHash: body.secretHash,
        sourceIp: ip,
        sourceNetwork: networkKey(ip),
        limits: deps.pendingLimits ?? DEFAULT_PENDING_LIMITS,
        actor: { kind: 'remote', id: body.instanceId, ip },
      })
      .catch((err: unknown) => {
        throw pendingRefusal(c, err, deps.guards)
      })
    // The downstream's key, kept with its request (the first one sent wins): its topology adverts
    // are believed only under this key, and only while the request is Accepted.
    if (body.publicKey) {
      await pinPeerKey(deps.bus, requestKeyId(request.id), {
        instanceId: body.instanceId,
        publicKey: body.publicKey,
      })
    }
    const publicKey = await ownKey()
    return c.json(
      { requestId: request.id, status: request.status, instanceId, created, publicKey },
      202
    )
  })

  app.openapi(status, async (c) => {
    const id = c.req.valid('param').requestId
    let request = await requireRequestSecret(c, store, id)
    const { wait, seen } = c.req.valid('query')
    // Long poll: the answer waits for a transition while the status is the one already seen.
    if (wait && seen === request.status && deps.statusWaiters) {
      const deadline = Date.now() + wait * 1_000
      while (request.status === seen && Date.now() < deadline) {
        if (!(await deps.statusWaiters.wait(id, deadline - Date.now()))) break
        request = await store.call('request.get', { id })
      }
    }
    return c.json(await view(request), 200)
  })

  app.openapi(withdraw, async (c) => {
    const request = await requireRequestSecret(c, store, c.req.valid('param').requestId)
    await store.call('event', {
      machine: 'request',
      id: request.id,
      event: { type: 'request.withdraw' },
      actor: { kind: 'remote', id: request.instanceId, ip: ipOf(c) },
    })
    return c.json(await view(await store.call('request.get', { id: request.id })), 200)
  })

  return app
}

/**
 * A Pending bound, as the caller sees it: the per-instance and per-network bounds alike (429
 * `too_many_pending`), so the answer tells nothing about requests under that instance ID; the
 * whole server's as 503 `pending_capacity`. Other errors pass through.
 */
function pendingRefusal(
  c: Context,
  err: unknown,
  guards?: Pick<GuardMetrics, 'pendingRefused'>
): unknown {
  if (!(err instanceof UbError) || !err.code.startsWith('pending_')) return err
  const reason = err.code.slice('pending_'.length)
  guards?.pendingRefused.inc({ reason })
  c.header('Retry-After', String(PENDING_RETRY_AFTER_S))
  return reason === 'capacity'
    ? new ApiError(503, 'pending_capacity', 'this server takes no more requests now; try later')
    : new ApiError(429, 'too_many_pending', 'too many pending requests; try again later')
}
