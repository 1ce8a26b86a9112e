import { createRoute, z } from '@hono/zod-openapi'
import type { RequestEvent } from '../../../../machines/index.ts'
import { BEARER, createRouter, operatorActor, type RouteDeps } from '../deps.ts'
import {
  AcceptBody,
  IdParam,
  IncomingRequestSchema,
  StatusQuery,
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
  summary: 'Incoming requests with instance ID and source IP',
  request: { query: StatusQuery },
  responses: {
    200: json(z.array(IncomingRequestSchema), 'the requests'),
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
    const { status } = c.req.valid('query')
    return c.json(await store.call('request.list', status ? { status } : {}), 200)
  })

  app.openapi(getOne, async (c) =>
    c.json(await store.call('request.get', { id: c.req.valid('param').id }), 200)
  )

  app.openapi(accept, async (c) => {
    const { grants } = c.req.valid('json')
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

  return app
}
