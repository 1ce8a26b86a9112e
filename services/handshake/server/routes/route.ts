import { createRoute, z } from '@hono/zod-openapi'
import { decodeJson } from '../../../common/bus/bus.ts'
import { DEFAULT_MESH_CLOCK_SKEW_MS, openTopologyDb } from '../../../common/topology-db.ts'
import { spanningTree } from '../../../common/topology.ts'
import { LINKS_BUCKET, type LinkStatus } from '../../../contracts/links.ts'
import { BEARER, createRouter, type RouteDeps } from '../deps.ts'
import { planRoute, type RouteUpstream } from '../route-plan.ts'
import { errorResponses, json } from '../schemas.ts'

const MAX_TOPIC_BYTES = 65_535 // [MQTT-1.5.3]

/** One concrete topic: what a client could publish (no wildcards, not empty, no NUL). */
const ConcreteTopic = z
  .string()
  .min(1)
  .superRefine((t, ctx) => {
    const problem =
      t.includes('+') || t.includes('#')
        ? "must be a concrete topic, without '+' or '#'"
        : t.includes('\u0000')
          ? 'must not contain NUL'
          : Buffer.byteLength(t) > MAX_TOPIC_BYTES
            ? `must be at most ${MAX_TOPIC_BYTES} bytes`
            : null
    if (problem) ctx.addIssue({ code: 'custom', message: `topic ${problem}` })
  })
  .openapi({ example: 'site/s1/line/l2/temperature' })

const Hop = z.object({
  upstreamId: z.string(),
  host: z.string(),
  peerInstanceId: z.string().nullable(),
  binding: z.object({ source: z.string(), target: z.string(), direction: z.string().optional() }),
  direction: z.enum(['out', 'in', 'both']),
  topic: z
    .string()
    .describe('out: the topic on the upstream; in: the upstream topic that arrives as this one'),
  link: z.enum(['Active', 'Blocked', 'down', 'inactive']),
  treePath: z
    .array(z.string())
    .nullable()
    .describe('instances along the spanning tree to the peer'),
  closesCycle: z.boolean().describe('the link would close a cycle and be held Blocked'),
})

const RoutePlanSchema = z
  .object({
    topic: z.string(),
    instanceId: z.string(),
    out: z.array(Hop),
    in: z.array(Hop),
    reaches: z
      .array(z.string())
      .describe('peers the topic reaches now; each applies its own bindings'),
  })
  .openapi('RoutePlan')

const route = createRoute({
  method: 'get',
  path: '/api/v1/route',
  tags: ['upstreams'],
  security: BEARER,
  summary:
    'Dry run for one concrete topic: the bindings that match it, the topic it becomes on each ' +
    'upstream (or the upstream topic that comes down as it), each link Active, Blocked or down, ' +
    'its path on the mesh spanning tree, and whether a link not yet on the graph would close a cycle',
  request: { query: z.object({ topic: ConcreteTopic }) },
  responses: {
    200: json(RoutePlanSchema, 'where the topic goes and where it comes from'),
    ...errorResponses(400, 401, 503),
  },
})

export function routeRoutes(deps: RouteDeps & { meshClockSkewMs?: number }) {
  const { store, bus, instanceId } = deps
  const app = createRouter()
  app.openapi(route, async (c) => {
    const { topic } = c.req.valid('query')
    const [upstreams, links, topologyDb] = await Promise.all([
      store.call('upstream.list', {}),
      bus.kv(LINKS_BUCKET),
      openTopologyDb(bus, {
        instanceId,
        skewMs: deps.meshClockSkewMs ?? DEFAULT_MESH_CLOCK_SKEW_MS,
      }),
    ])
    const withLinks: RouteUpstream[] = await Promise.all(
      upstreams.map(async (up) => {
        const entry = await links.get(up.id)
        const link = entry ? decodeJson<LinkStatus>(entry.value) : null
        return {
          id: up.id,
          host: up.host,
          status: up.status,
          bindings: up.bindings,
          link: link ? { state: link.state, peerInstanceId: link.peerInstanceId } : null,
        }
      })
    )
    const topology = spanningTree(await topologyDb.read(), Date.now())
    return c.json(planRoute({ topic, instanceId, upstreams: withLinks, topology }), 200)
  })
  return app
}
