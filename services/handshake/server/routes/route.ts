import { createRoute, z } from '@hono/zod-openapi'
import { spanningTree } from '../../../common/topology.ts'
import { BEARER, createRouter, type RouteDeps } from '../deps.ts'
import { planRoute } from '../route-plan.ts'
import { readRouteInputs } from '../route-inputs.ts'
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
  const { instanceId } = deps
  const app = createRouter()
  app.openapi(route, async (c) => {
    const { topic } = c.req.valid('query')
    const { upstreams, adverts } = await readRouteInputs(deps)
    const topology = spanningTree(adverts, Date.now())
    return c.json(planRoute({ topic, instanceId, upstreams, topology }), 200)
  })
  return app
}
