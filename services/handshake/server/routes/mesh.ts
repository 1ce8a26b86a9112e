import { createRoute, z } from '@hono/zod-openapi'
import { BEARER, createRouter, type RouteDeps } from '../deps.ts'
import { buildMesh } from '../mesh-view.ts'
import { readRouteInputs } from '../route-inputs.ts'
import { errorResponses, json } from '../schemas.ts'

const MeshSchema = z
  .object({
    instanceId: z.string(),
    nodes: z.array(z.object({ id: z.string(), self: z.boolean() })),
    edges: z.array(
      z.object({
        from: z.string().describe('the side that forwards into the other'),
        to: z.string().describe("an instance id, or the upstream's host while its id is unknown"),
        upstreamId: z.string().optional().describe("this instance's upstream behind the edge"),
        state: z
          .enum(['Active', 'Blocked', 'down'])
          .describe('Blocked: held off the spanning tree to break a cycle'),
        onTree: z.boolean(),
        both: z.boolean().describe('forwarded both ways'),
      })
    ),
  })
  .openapi('Mesh')

const route = createRoute({
  method: 'get',
  path: '/api/v1/mesh',
  tags: ['upstreams'],
  security: BEARER,
  summary:
    'The bridge mesh as this instance knows it: the instances, the links between them from the ' +
    "topology adverts and this instance's own link statuses, each Active, Blocked (off the " +
    'spanning tree to break a cycle) or down, and whether it is on the spanning tree',
  responses: {
    200: json(MeshSchema, 'the instances and the links between them'),
    ...errorResponses(401, 503),
  },
})

export function meshRoutes(deps: RouteDeps & { meshClockSkewMs?: number }) {
  const app = createRouter()
  app.openapi(route, async (c) => {
    const { upstreams, adverts } = await readRouteInputs(deps)
    return c.json(
      buildMesh({ instanceId: deps.instanceId, upstreams, adverts, now: Date.now() }),
      200
    )
  })
  return app
}
