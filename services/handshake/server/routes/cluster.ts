import { createRoute, z } from '@hono/zod-openapi'
import type { Bus } from '../../../common/bus/bus.ts'
import { UbError } from '../../../common/errors.ts'
import { MemberSchema, readCluster } from '../../../common/presence.ts'
import { BEARER, createRouter } from '../deps.ts'
import { ApiError } from '../errors.ts'
import { errorResponses, json } from '../schemas.ts'

const ClusterSchema = z
  .object({
    members: z.array(MemberSchema),
    counts: z
      .record(z.string(), z.number().int())
      .openapi({ example: { store: 1, gateway: 2, supervisor: 2, handshake: 1 } }),
    omitted: z.number().int().describe('members past the cap of 1,000 not listed'),
  })
  .openapi('Cluster')

const route = createRoute({
  method: 'get',
  path: '/api/v1/cluster',
  tags: ['instance'],
  security: BEARER,
  summary:
    'Every member of the fabric as it announces itself on the bus: service, member id, host, pid, ' +
    "version, uptime; a gateway's clients and ports, a supervisor's bridges. A member unheard " +
    'for 3 × presenceIntervalMs is gone; one that stops cleanly is gone at once',
  responses: {
    200: json(ClusterSchema, 'the members, by service, host and pid'),
    ...errorResponses(401, 503),
  },
})

export function clusterRoutes({ bus, intervalMs }: { bus: Bus; intervalMs?: number }) {
  const app = createRouter()
  app.openapi(route, async (c) => c.json(await read(bus, intervalMs), 200))
  return app
}

/** The bus's own codes (bus_timeout, bus_closed) keep their 503; a raw client error gets one too. */
async function read(bus: Bus, intervalMs: number | undefined) {
  try {
    return await readCluster(bus, { intervalMs })
  } catch (err) {
    if (err instanceof UbError && err.code.startsWith('bus_')) throw err
    const reason = err instanceof Error ? err.message : String(err)
    throw new ApiError(503, 'bus_unavailable', `the cluster view could not be read: ${reason}`)
  }
}
