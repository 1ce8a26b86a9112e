import { createRoute, z } from '@hono/zod-openapi'
import { decodeJson, type KvBucket } from '../../../common/bus/bus.ts'
import { LINKS_BUCKET } from '../../../contracts/links.ts'
import { BEARER, createRouter, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import { errorResponses, json, LinkSchema } from '../schemas.ts'

/** Links answered at once at most; an instance with more pages through `GET …/upstreams/:id`. */
const MAX_LINKS = 10_000
const READS_AT_ONCE = 64 // KV reads in flight per request

const LinksSchema = z
  .object({
    items: z.record(z.string(), LinkSchema).describe('upstream id → its bridge link'),
    omitted: z.number().int().describe(`links past the cap of ${MAX_LINKS} not listed`),
  })
  .openapi('Links')

const route = createRoute({
  method: 'get',
  path: '/api/v1/links',
  tags: ['upstreams'],
  security: BEARER,
  summary:
    "Every bridge link's health in one answer (what `GET /api/v1/upstreams/:id` shows as `link`), " +
    'by upstream id: the console reads its table with two requests, whatever the number of upstreams',
  responses: {
    200: json(LinksSchema, 'the links by upstream id'),
    ...errorResponses(401, 503),
  },
})

export function linksRoutes({ bus }: Pick<RouteDeps, 'bus'>) {
  const app = createRouter()
  let bucket: Promise<KvBucket> | undefined
  app.openapi(route, async (c) => {
    try {
      bucket ??= bus.kv(LINKS_BUCKET)
      const kv = await bucket
      const keys = await kv.keys()
      const listed = keys.slice(0, MAX_LINKS)
      const items: Record<string, z.infer<typeof LinkSchema>> = {}
      for (let i = 0; i < listed.length; i += READS_AT_ONCE) {
        const entries = await Promise.all(listed.slice(i, i + READS_AT_ONCE).map((k) => kv.get(k)))
        for (const e of entries) if (e) items[e.key] = decodeJson(e.value)
      }
      return c.json({ items, omitted: keys.length - listed.length }, 200)
    } catch (err) {
      bucket = undefined
      const reason = err instanceof Error ? err.message : String(err)
      throw new ApiError(503, 'bus_unavailable', `the link states could not be read: ${reason}`)
    }
  })
  return app
}
