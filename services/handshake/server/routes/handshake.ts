import { createRoute } from '@hono/zod-openapi'
import type { Context } from 'hono'
import type { IncomingRequest } from '../../../contracts/store.ts'
import { clientIp } from '../client-ip.ts'
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
import { sameDigest } from '../../secret.ts'
import { requireRequestSecret } from '../request-secret.ts'

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
  summary: 'A downstream asks to bridge here (rate-limited per source IP)',
  request: {
    body: { required: true, content: { 'application/json': { schema: HandshakeRequestBody } } },
  },
  responses: {
    202: json(HandshakeAccepted, 'recorded (or the live request this instance already has)'),
    ...errorResponses(400, 409, 413, 429, 503),
  },
})

const status = createRoute({
  method: 'get',
  path: '/api/v1/handshake/requests/{requestId}',
  tags,
  security: SECRET,
  summary: "The request's status and grants (Authorization: Bearer <the downstream's secret>)",
  request: { params: RequestIdParam },
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

export function handshakeRoutes(deps: RouteDeps) {
  const { store, instanceId } = deps
  const app = createRouter()
  const ipOf = (c: Context) =>
    clientIp(c, { remote: deps.remoteAddress, trustProxy: deps.trustProxy })

  const view = (r: IncomingRequest) => ({
    requestId: r.id,
    status: r.status,
    grants: r.grants,
    instanceId,
  })

  app.openapi(submit, async (c) => {
    const body = c.req.valid('json')
    const ip = ipOf(c)
    const { request, created } = await store.call('request.create', {
      instanceId: body.instanceId,
      secretHash: body.secretHash,
      sourceIp: ip,
      actor: { kind: 'remote', id: body.instanceId, ip },
    })
    if (!created) {
      // The live request is answered only to the holder of its secret. Another secret means
      // another upstream record on that instance (its first was deleted while we were not
      // reachable): say so, rather than hand it a request it can never poll.
      const { secretHash } = await store.call('request.secretHash', { id: request.id })
      if (!sameDigest(secretHash, body.secretHash)) {
        throw new ApiError(
          409,
          'already_exists',
          `instance ${body.instanceId} already has a live request here (${request.id}) with ` +
            "another secret: withdraw that one, or ask this server's operator to decline or revoke it"
        )
      }
    }
    return c.json({ requestId: request.id, status: request.status, instanceId, created }, 202)
  })

  app.openapi(status, async (c) => {
    const request = await requireRequestSecret(c, store, c.req.valid('param').requestId)
    return c.json(view(request), 200)
  })

  app.openapi(withdraw, async (c) => {
    const request = await requireRequestSecret(c, store, c.req.valid('param').requestId)
    await store.call('event', {
      machine: 'request',
      id: request.id,
      event: { type: 'request.withdraw' },
      actor: { kind: 'remote', id: request.instanceId, ip: ipOf(c) },
    })
    return c.json(view(await store.call('request.get', { id: request.id })), 200)
  })

  return app
}
