import { createRoute, z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import {
  normalizeTopicId,
  TeDownstream,
  TE_ENTITY_TYPES,
  TE_LIST_MAX,
  type TeEntityWithTwin,
} from '../../../contracts/te-entities.ts'
import { BEARER, createRouter, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import { pagedJson } from '../paging.ts'
import { errorResponses, json, PAGED_HEADERS } from '../schemas.ts'

/**
 * thin-edge.io's entity API (`/te/v1/entities`, docs/src/operate/entity-management/rest_api.md),
 * read from the store's digital twin, which the gateways feed from `te/`. Each entity has
 * thin-edge's `@topic-id`, `@type`, `@parent`, `@id`, `@health`, and beside them its health, last
 * measurement time, open alarms and in-flight commands. The writes: te-entity-writes.ts.
 */
const tags = ['thin-edge.io']
const PREFIX = '/te/v1/entities/'

const TopicIdQuery = (name: string, description: string) =>
  z
    .string()
    .refine(
      (s) => normalizeTopicId(s) !== null,
      'must be an entity topic id such as device/child01//'
    )
    .transform((s) => normalizeTopicId(s)!)
    .optional()
    .openapi({ param: { name, in: 'query' }, description, example: 'device/child01//' })

/** `?downstream=`: '' ours, an instance id that downstream's (its mounts: te-mounted.ts). */
const DownstreamQuery = TeDownstream.optional().openapi({
  param: { name: 'downstream', in: 'query' },
  description:
    "a downstream's instance id: its entities (those its bridge mirrors into its mounts here); " +
    'empty: only our own; absent: all, ours first',
  example: 'edge-site1',
})

const ListQuery = z
  .object({
    downstream: DownstreamQuery,
    root: TopicIdQuery('root', 'the entity and its descendants'),
    parent: TopicIdQuery('parent', "the entity's direct children"),
    type: z
      .enum([...TE_ENTITY_TYPES, 'main'])
      .optional()
      .openapi({ param: { name: 'type', in: 'query' }, description: "'main' is 'device'" }),
    limit: z.coerce
      .number()
      .int()
      .min(1)
      .max(TE_LIST_MAX)
      .optional()
      .openapi({ param: { name: 'limit', in: 'query' } }),
    cursor: z
      .string()
      .max(1_024)
      .optional()
      .openapi({ param: { name: 'cursor', in: 'query' } }),
  })
  .refine((q) => !(q.root && q.parent), 'root and parent can not be used together')

const Alarm = z.object({
  severity: z.string().nullable(),
  text: z.string().nullable(),
  time: z.string().nullable(),
})
export const TeEntity = z
  .object({
    '@topic-id': z.string().openapi({ example: 'device/child01//' }),
    '@type': z.enum(TE_ENTITY_TYPES),
    '@parent': z.string().optional().openapi({ example: 'device/main//' }),
    '@id': z.string().optional().describe('external id'),
    '@health': z.string().optional().describe('the service reporting its health'),
    health: z.string().nullable().describe('status of its last status/health message'),
    lastMeasurementAt: z.string().nullable().describe('ISO 8601: when a measurement last came'),
    alarms: z.record(z.string(), Alarm).describe('open alarms by type'),
    commands: z
      .record(z.string(), z.string())
      .describe("commands not cleared yet, by '<operation>/<id>': their status"),
    registeredAt: z.string(),
    updatedAt: z.string(),
    downstream: z
      .string()
      .optional()
      .describe("a downstream's entity only: that downstream's instance id"),
    topic: z
      .string()
      .optional()
      .describe("a downstream's entity only: its topic here, under the downstream's mount")
      .openapi({ example: 'acme/site1/te/device/child01//' }),
  })
  .openapi('TeEntity')

const list = createRoute({
  method: 'get',
  path: '/te/v1/entities',
  tags,
  security: BEARER,
  summary:
    "thin-edge.io entities, as thin-edge's entity API lists them (?root=, ?parent=, ?type=), " +
    "ours then each downstream's (?downstream=), by topic id; paged (?limit=, ?cursor=, X-Next-Cursor)",
  request: { query: ListQuery },
  responses: {
    200: { ...json(z.array(TeEntity), 'the entities'), headers: PAGED_HEADERS },
    ...errorResponses(400, 401, 404, 503),
  },
})

export const TopicIdParam = z.object({
  'topic-id': z.string().openapi({
    param: { name: 'topic-id', in: 'path' },
    description:
      'the entity topic id, its slashes included; trailing empty segments may be left out',
    example: 'device/child01//',
  }),
})
export const DownstreamParam = z.object({ downstream: DownstreamQuery })
export const KeyParam = TopicIdParam.extend({
  key: z.string().openapi({ param: { name: 'key', in: 'path' }, example: 'hardware' }),
})

/** The entity routes take the topic id as the rest of the path, so hono serves them by hand. */
function describeEntityRoutes(app: ReturnType<typeof createRouter>): void {
  const doc = (
    path: string,
    summary: string,
    params: z.ZodObject,
    ok: { description: string; content: { 'application/json': { schema: z.ZodType } } }
  ) =>
    app.openAPIRegistry.registerPath({
      method: 'get',
      path,
      tags,
      security: BEARER,
      summary,
      request: { params, query: DownstreamParam },
      responses: { 200: ok, ...errorResponses(400, 401, 404, 503) },
    })
  doc('/te/v1/entities/{topic-id}', 'One thin-edge.io entity', TopicIdParam, json(TeEntity, 'it'))
  doc(
    '/te/v1/entities/{topic-id}/twin',
    "An entity's twin data: registration keys and twin/<fragment> values",
    TopicIdParam,
    json(z.record(z.string(), z.unknown()), 'the fragments')
  )
  doc(
    '/te/v1/entities/{topic-id}/twin/{key}',
    'One twin fragment',
    KeyParam,
    json(z.unknown(), 'its value')
  )
}

/** `device/child01//`, `device/child01///twin`, `device/child01///twin/name`, or null. */
export function parseEntityPath(rest: string): { topicId: string; twin?: string | null } | null {
  let decoded: string
  try {
    decoded = decodeURIComponent(rest)
  } catch {
    throw new ApiError(400, 'invalid_request', 'the path is not valid percent-encoding')
  }
  const levels = decoded.split('/')
  const id = levels.slice(0, 4).join('/')
  const topicId = normalizeTopicId(id)
  if (topicId === null)
    throw new ApiError(400, 'invalid_request', 'not an entity topic id such as device/child01//')
  if (levels.length <= 4) return { topicId }
  if (levels[4] !== 'twin' || levels.length > 6) return null
  const key = levels[5] ?? ''
  return { topicId, twin: key === '' ? null : key }
}

export function teEntityRoutes({ store }: Pick<RouteDeps, 'store'>) {
  const app = createRouter()
  app.openapi(list, async (c) => {
    const { root, parent, type, limit, cursor, downstream } = c.req.valid('query')
    const input = {
      ...(downstream === undefined ? {} : { downstream }),
      ...(root === undefined ? {} : { root }),
      ...(parent === undefined ? {} : { parent }),
      ...(type === undefined ? {} : { type: type === 'main' ? ('device' as const) : type }),
      ...(limit === undefined ? {} : { limit }),
      ...(cursor === undefined ? {} : { cursor }),
    }
    return pagedJson(c, await store.call('te.entity.list', input))
  })
  describeEntityRoutes(app)
  app.get(`${PREFIX}*`, async (c) => {
    const at = parseEntityPath(c.req.path.slice(PREFIX.length))
    if (!at) throw new ApiError(404, 'not_found', `no route for GET ${c.req.path}`)
    const downstream = downstreamOf(c)
    const entity = await store.call('te.entity.get', { topicId: at.topicId, downstream })
    if (at.twin === undefined) return c.json(withoutTwin(entity), 200)
    if (at.twin === null) return c.json(entity.twin, 200)
    return fragment(c, entity, at.twin)
  })
  return app
}

/** `?downstream=` of a single-entity route: '' (ours) when absent. */
export function downstreamOf(c: Context): string {
  const given = c.req.query('downstream') ?? ''
  if (!TeDownstream.safeParse(given).success)
    throw new ApiError(400, 'invalid_request', 'downstream must be an instance id')
  return given
}

function withoutTwin({ twin: _twin, ...entity }: TeEntityWithTwin) {
  return entity
}

function fragment(c: Context, entity: TeEntityWithTwin, key: string) {
  if (!Object.hasOwn(entity.twin, key))
    throw new ApiError(404, 'not_found', `'${entity['@topic-id']}' has no twin fragment '${key}'`, {
      details: { what: 'twin fragment', id: key },
    })
  return c.json(entity.twin[key] as never, 200)
}
