import { createRoute } from '@hono/zod-openapi'
import type { Registry } from 'prom-client'
import { encodeJson } from '../../../common/bus/bus.ts'
import { readPeerKey, requestKeyId } from '../../../common/instance-key.ts'
import {
  DEFAULT_MESH_CLOCK_SKEW_MS,
  openTopologyDb,
  TOPOLOGY_HEARD_BUCKET,
  TopologyExchangeSchema,
  type TopologyDb,
} from '../../../common/topology-db.ts'
import { createRouter, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import { RequestIdParam, errorResponses } from '../schemas.ts'
import { requireRequestSecret } from '../request-secret.ts'
import { createMountIntake } from './te-mounts.ts'

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

export function topologyRoutes(deps: RouteDeps & { metrics?: Registry; meshClockSkewMs?: number }) {
  const { store, bus, instanceId, metrics } = deps
  const skewMs = deps.meshClockSkewMs ?? DEFAULT_MESH_CLOCK_SKEW_MS
  const app = createRouter()
  let db: Promise<TopologyDb> | undefined
  let heard: ReturnType<typeof bus.kv> | undefined
  const declareMounts = createMountIntake({ store, log: deps.log, metrics })

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
    db ??= openTopologyDb(bus, { instanceId, skewMs, metrics })
    const topology = await db
    // Only adverts signed by their origin are believed: the caller's key is the one its request
    // carried (no key, nothing it relays can be checked, so nothing is taken from it).
    const key = await readPeerKey(bus, requestKeyId(requestId))
    const direct = new Map(
      key && key.instanceId === request.instanceId ? [[key.instanceId, key.publicKey]] : []
    )
    const { rejected } = await topology.merge(c.req.valid('json').adverts, { direct })
    if (Object.keys(rejected).length > 0)
      deps.log.warn({ requestId, rejected }, 'topology adverts refused')
    // Where the downstream's thin-edge.io tree shows here: its entities join our twin.
    await declareMounts(requestId, c.req.valid('json').teMounts).catch((err: unknown) =>
      deps.log.warn({ err, requestId }, 'thin-edge.io mounts not recorded')
    )
    return c.json(await topology.exchange(), 200)
  })

  return app
}
