import { createRoute } from '@hono/zod-openapi'
import type { Bus } from '../../../common/bus/bus.ts'
import { collectGatewayStats } from '../../../gateway/index.ts'
import { BEARER, createRouter } from '../deps.ts'
import { InstanceSchema, errorResponses } from '../schemas.ts'

const route = createRoute({
  method: 'get',
  path: '/api/v1/instance',
  tags: ['instance'],
  security: BEARER,
  summary:
    "This instance's ID, version, the services this process runs, and every gateway's stats " +
    '(clients, messages and payload bytes in and out, retained count), as the gateways on the ' +
    'bus answer within 300 ms',
  responses: {
    200: {
      description: 'the instance',
      content: { 'application/json': { schema: InstanceSchema } },
    },
    ...errorResponses(401),
  },
})

export function instanceRoutes(info: {
  instanceId: string
  version: string
  services: string[]
  bus: Bus
}) {
  const { bus, ...identity } = info
  const app = createRouter()
  app.openapi(route, async (c) =>
    c.json({ ...identity, gateways: await collectGatewayStats(bus) }, 200)
  )
  return app
}
