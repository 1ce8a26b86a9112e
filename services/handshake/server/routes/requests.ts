import { createRoute, z } from '@hono/zod-openapi'
import type { MiddlewareHandler } from 'hono'
import type { RequestEvent } from '../../../../machines/index.ts'
import { BEARER, createRouter, operatorActor, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import { pageInput, pagedJson } from '../paging.ts'
import {
  AcceptBody,
  IdParam,
  IncomingRequestSchema,
  PAGED_HEADERS,
  RequestListQuery,
  errorResponses,
  json,
} from '../schemas.ts'

/** The operator's view of incoming requests (upstream-server side). */
const tags = ['requests']

const list = createRoute({
  method: 'get',
  path: '/api/v1/requests',
  tags,
  security: BEARER,
  summary:
    'Incoming requests with instance ID and source IP, oldest first; paged (?limit=, ?cursor=, X-Next-Cursor)',
  request: { query: RequestListQuery },
  responses: {
    200: {
      ...json(z.array(IncomingRequestSchema), 'one page of requests'),
      headers: PAGED_HEADERS,
    },
    ...errorResponses(400, 401, 503),
  },
})

const getOne = createRoute({
  method: 'get',
  path: '/api/v1/requests/{id}',
  tags,
  security: BEARER,
  summary: 'One incoming request',
  request: { params: IdParam },
  responses: { 200: json(IncomingRequestSchema, 'the request'), ...errorResponses(401, 404, 503) },
})

const accept = createRoute({
  method: 'post',
  path: '/api/v1/requests/{id}/accept',
  tags,
  security: BEARER,
  summary: "Accept, optionally narrowing the grants (default ['#']: everything but $ topics)",
  request: {
    params: IdParam,
    body: { required: false, content: { 'application/json': { schema: AcceptBody } } },
  },
  responses: {
    200: json(IncomingRequestSchema, 'Accepted'),
    ...errorResponses(400, 401, 404, 409, 413, 503),
  },
})

const action = (name: 'decline' | 'revoke', summary: string) =>
  createRoute({
    method: 'post',
    path: `/api/v1/requests/{id}/${name}`,
    tags,
    security: BEARER,
    summary,
    request: { params: IdParam },
    responses: {
      200: json(IncomingRequestSchema, 'the request afterwards'),
      ...errorResponses(401, 404, 409, 503),
    },
  })

/**
 * An empty body (no bytes, whatever its content type: `curl -X POST`, `-d ''`, `Content-Length: 0`)
 * is no body, so accept means its default grants rather than 400 malformed_json or 415.
 */
const emptyBodyIsNone: MiddlewareHandler = async (c, next) => {
  const raw = c.req.raw
  if (raw.body !== null && (await c.req.text()).trim() === '') {
    const headers = new Headers(raw.headers)
    for (const name of ['content-type', 'content-length', 'transfer-encoding']) headers.delete(name)
    c.req.raw = new Request(raw.url, { method: raw.method, headers })
    c.req.bodyCache = {}
  }
  await next()
}

export function requestRoutes(deps: RouteDeps) {
  const { store } = deps
  const app = createRouter()

  const send = async (id: string, event: RequestEvent, c: Parameters<typeof operatorActor>[0]) => {
    await store.call('event', {
      machine: 'request',
      id,
      event: { ...event },
      actor: operatorActor(c, deps),
    })
    return store.call('request.get', { id })
  }

  app.openapi(list, async (c) => {
    return pagedJson(c, await store.call('request.page', pageInput(c.req.valid('query'))))
  })

  app.openapi(getOne, async (c) =>
    c.json(await store.call('request.get', { id: c.req.valid('param').id }), 200)
  )

  app.use(accept.getRoutingPath(), emptyBodyIsNone)
  app.openapi(accept, async (c) => {
    const { grants } = c.req.valid('json')
    await refuseSecondAccepted(c.req.valid('param').id)
    const event: RequestEvent = grants
      ? { type: 'request.accept', grants }
      : { type: 'request.accept' }
    return c.json(await send(c.req.valid('param').id, event, c), 200)
  })

  app.openapi(action('decline', 'Decline a Pending request'), async (c) =>
    c.json(await send(c.req.valid('param').id, { type: 'request.decline' }, c), 200)
  )
  app.openapi(action('revoke', 'Revoke an Accepted request: its bridge is cut off'), async (c) =>
    c.json(await send(c.req.valid('param').id, { type: 'request.revoke' }, c), 200)
  )

  /**
   * An instance may have several Pending requests (one per secret) but one Accepted: its
   * bridges share one client-id namespace. The database's unique index backs this up.
   */
  async function refuseSecondAccepted(id: string): Promise<void> {
    const request = await store.call('request.get', { id })
    const { items } = await store.call('request.page', {
      instanceId: request.instanceId,
      status: 'Accepted',
      limit: 1,
    })
    const other = items.find((r) => r.id !== id)
    if (other) {
      throw new ApiError(
        409,
        'already_accepted',
        `instance ${request.instanceId} already has an accepted request (${other.id}): revoke it first`
      )
    }
  }

  return app
}
