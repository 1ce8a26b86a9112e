import { createRoute } from '@hono/zod-openapi'
import { encodeJson } from '../../../common/bus/bus.ts'
import {
  openTopologyDb,
  TOPOLOGY_HEARD_BUCKET,
  TopologyExchangeSchema,
  type TopologyDb,
} from '../../../common/topology-db.ts'
import { createRouter, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import { RequestIdParam, errorResponses } from '../schemas.ts'
import { requireRequestSecret } from '../request-secret.ts'

/**
 * The mesh's link-state exchange, upstream-server side (ARCHITECTURE.md §9): a downstream whose
 * bridge link to us is Active posts its topology database and gets ours back; both sides merge,
 * so adverts flood both ways over every bridge edge. Only the holder of an Accepted request's
 * secret may call it.
 */
const exchange = createRoute({
  method: 'post',
  path: '/api/v1/handshake/requests/{requestId}/topology',
  tags: ['handshake'],
  security: [{ handshakeSecret: [] }],
  summary: "Exchange mesh topology adverts (Authorization: Bearer <the downstream's secret>)",
  request: {
    params: RequestIdParam,
    body: { required: true, content: { 'application/json': { schema: TopologyExchangeSchema } } },
  },
  responses: {
    200: {
      description: "this instance's topology database after merging the caller's",
      content: { 'application/json': { schema: TopologyExchangeSchema } },
    },
    ...errorResponses(400, 401, 404, 409, 413, 503),
  },
})

export function topologyRoutes(deps: RouteDeps) {
  const { store, bus } = deps
  const app = createRouter()
  let db: Promise<TopologyDb> | undefined
  let heard: ReturnType<typeof bus.kv> | undefined

  app.openapi(exchange, async (c) => {
    const { requestId } = c.req.valid('param')
    const request = await requireRequestSecret(c, store, requestId)
    if (request.status !== 'Accepted')
      throw new ApiError(409, 'not_accepted', `the request is ${request.status}, not Accepted`)

    // The call itself shows the downstream's bridge is alive: it counts as our neighbour.
    heard ??= bus.kv(TOPOLOGY_HEARD_BUCKET)
    await (
      await heard
    ).put(requestId, encodeJson({ instanceId: request.instanceId, at: Date.now() }))
    db ??= openTopologyDb(bus)
    const topology = await db
    await topology.merge(c.req.valid('json').adverts)
    return c.json(await topology.exchange(), 200)
  })

  return app
}
