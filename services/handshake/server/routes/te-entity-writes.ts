import { createRoute, z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import { UbError } from '../../../common/errors.ts'
import {
  isTeProblem,
  MAIN_DEVICE_TOPIC_ID,
  parseRegistration,
  type TeRegistration,
} from '../../../gateway/index.ts'
import { requestTePublish, TE_BUS_OFF, type TeWrite } from '../../../contracts/te-publish.ts'
import {
  normalizeTopicId,
  TE_ENTITY_TYPES,
  TE_LIST_MAX,
  TE_MAX_TWIN_FRAGMENTS,
  type TeEntity,
  type TeEntityWithTwin,
} from '../../../contracts/te-entities.ts'
import { BEARER, createRouter, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import { errorResponses, json } from '../schemas.ts'
import { parseEntityPath } from './te-entities.ts'
import { describeWriteRoutes, TeEntityWritten } from './te-entity-docs.ts'

/**
 * The writes of thin-edge.io's entity API (docs/src/operate/entity-management/rest_api.md), with
 * its status codes. The MQTT bus stays the one truth, as in thin-edge: each write becomes the
 * retained messages an MQTT client would publish (registration on `<root>/<topic id>`, empty to
 * deregister, `<root>/<topic id>/twin/<key>`), published by a gateway (contracts/te-publish.ts),
 * whose te-bus feeds the store's twin from them. The answer comes once that store call settled.
 * Existence and parent checks read the twin first, so two racing writers may both pass them.
 */
const tags = ['thin-edge.io']
const PREFIX = '/te/v1/entities/'
const MAX_VALUE_BYTES = 16 * 1_024 // the store's bound on one fragment (contracts/te-entities)

type Deps = Pick<RouteDeps, 'store' | 'bus'>

const bad = (message: string) => new ApiError(400, 'invalid_request', message)
const unknown = (topicId: string) =>
  new ApiError(404, 'not_found', `thin-edge.io entity '${topicId}' does not exist`, {
    details: { what: 'thin-edge.io entity', id: topicId },
  })

const Registration = z
  .object({
    '@topic-id': z.string().openapi({ example: 'device/child01//' }),
    '@type': z.enum(TE_ENTITY_TYPES),
    '@parent': z.string().optional().openapi({ example: 'device/main//' }),
    '@id': z.string().optional().describe('external id'),
    '@health': z.string().optional().describe('child-device only: the service reporting health'),
  })
  .catchall(z.unknown())
  .openapi('TeEntityRegistration', {
    description: 'thin-edge.io registration; every other key is twin data',
  })

const create = createRoute({
  method: 'post',
  path: '/te/v1/entities',
  tags,
  security: BEARER,
  summary:
    'Register a thin-edge.io entity: publishes its retained registration message, as an MQTT ' +
    'client would (409 when it exists; its @parent and @health must be registered)',
  request: { body: { content: { 'application/json': { schema: Registration } }, required: true } },
  responses: {
    201: json(TeEntityWritten, 'registered; Location names it'),
    ...errorResponses(400, 401, 409, 503),
  },
})

export function teEntityWriteRoutes(deps: Deps) {
  const app = createRouter()
  app.openapi(create, async (c) => {
    refuseDownstream(c)
    const body = c.req.valid('json') as Record<string, unknown>
    const topicId = normalizeTopicId(body['@topic-id'] as string)
    if (topicId === null)
      throw bad('"@topic-id" must be an entity topic id such as device/child01//')
    const { '@topic-id': _id, ...fields } = body
    const payload = JSON.stringify(fields)
    const reg = registration(topicId, payload)
    if (await find(deps, topicId))
      throw new ApiError(409, 'already_exists', `an entity with topic id ${topicId} is registered`)
    await checkLinks(deps, topicId, reg.parent, reg.healthEndpoint)
    await publish(deps, [{ topic: topicId, payload }])
    c.header('Location', `${PREFIX}${topicId}`)
    return c.json({ '@topic-id': topicId }, 201)
  })
  describeWriteRoutes(app)
  app.patch(`${PREFIX}*`, async (c) => {
    const topicId = entityPath(c)
    return c.json(await update(deps, topicId, await jsonBody(c)), 200)
  })
  app.delete(`${PREFIX}*`, async (c) => {
    const at = parsePath(c)
    if (at.twin === undefined) {
      const removed = await deregister(deps, at.topicId)
      return removed.length === 0 ? c.body(null, 204) : c.json(removed, 200)
    }
    const entity = await existing(deps, at.topicId)
    const keys = at.twin === null ? Object.keys(entity?.twin ?? {}) : [twinKey(at.twin)]
    await writeTwin(deps, at.topicId, entity, Object.fromEntries(keys.map((k) => [k, null])))
    return c.body(null, 204)
  })
  app.put(`${PREFIX}*`, async (c) => {
    const at = parsePath(c)
    if (at.twin === undefined)
      throw new ApiError(404, 'not_found', `no route for PUT ${c.req.path} (PUT …/twin[/{key}])`)
    const value = await jsonBody(c)
    const entity = await existing(deps, at.topicId)
    if (at.twin !== null) {
      await writeTwin(deps, at.topicId, entity, { [twinKey(at.twin)]: value })
      return c.json(value as never, 200)
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      throw bad('the twin is a JSON object of fragments')
    const given = value as Record<string, unknown>
    if (Object.keys(given).length > TE_MAX_TWIN_FRAGMENTS)
      throw bad(`a twin has at most ${TE_MAX_TWIN_FRAGMENTS} fragments`)
    // thin-edge replaces the whole twin: fragments left out are cleared, as a null clears one.
    const cleared = Object.keys(entity?.twin ?? {}).filter((k) => !Object.hasOwn(given, k))
    const writes = { ...Object.fromEntries(cleared.map((k) => [k, null])), ...given }
    await writeTwin(deps, at.topicId, entity, writes)
    return c.json(Object.fromEntries(Object.entries(given).filter(([, v]) => v !== null)), 200)
  })
  return app
}

/**
 * A downstream's entity (`?downstream=`) is not written from here: its own bus is its truth, and
 * a write here would only be a retained message under its mount that the downstream may never
 * take. The operator writes on the downstream's API (or publishes a command under the mount).
 */
function refuseDownstream(c: Context): void {
  if ((c.req.query('downstream') ?? '') === '') return
  throw new ApiError(
    409,
    'downstream_entity',
    "a downstream's entity is written on that downstream (its /te/v1/entities), not here; " +
      'operations reach it as commands published under its mount'
  )
}

function parsePath(c: Context) {
  refuseDownstream(c)
  const at = parseEntityPath(c.req.path.slice(PREFIX.length))
  if (!at) throw new ApiError(404, 'not_found', `no route for ${c.req.method} ${c.req.path}`)
  return at
}

function entityPath(c: Context): string {
  const at = parsePath(c)
  if (at.twin !== undefined)
    throw new ApiError(404, 'not_found', `no route for ${c.req.method} ${c.req.path}`)
  return at.topicId
}

async function jsonBody(c: Context): Promise<unknown> {
  const text = await c.req.text()
  try {
    return JSON.parse(text) as unknown
  } catch {
    throw new ApiError(400, 'malformed_json', 'the request body is not valid JSON')
  }
}

/** The registration as te-bus would judge it on MQTT, and within the store's bounds. */
function registration(topicId: string, payload: string): TeRegistration {
  const parsed = parseRegistration(topicId, payload)
  if (isTeProblem(parsed)) throw bad(parsed.problem)
  if (parsed.action !== 'register') throw bad(`registration of ${topicId} is empty`)
  const { twin } = parsed.registration
  if (Object.keys(twin).length > TE_MAX_TWIN_FRAGMENTS)
    throw bad(`a registration has at most ${TE_MAX_TWIN_FRAGMENTS} twin keys`)
  for (const [key, value] of Object.entries(twin)) checkFragment(key, value)
  return parsed.registration
}

/** thin-edge's rule for a twin key, plus MQTT's: no wildcard in a topic level. */
function twinKey(key: string): string {
  if (key === '' || key.startsWith('@') || /[/+#\u0000]/.test(key) || key.length > 256)
    throw bad(
      `invalid twin key '${key.slice(0, 64)}': empty, starting with '@', containing '/', '+', ` +
        "'#' or NUL, or longer than 256 characters"
    )
  return key
}

function checkFragment(key: string, value: unknown): void {
  if ((JSON.stringify(value) ?? '').length > MAX_VALUE_BYTES)
    throw bad(`twin fragment '${key.slice(0, 64)}' is larger than ${MAX_VALUE_BYTES} bytes`)
}

async function find(deps: Deps, topicId: string): Promise<TeEntityWithTwin | null> {
  try {
    return await deps.store.call('te.entity.get', { topicId })
  } catch (err) {
    if (err instanceof UbError && err.code === 'not_found') return null
    throw err
  }
}

/**
 * The entity, or null for the main device when it has not registered yet: it always exists in
 * thin-edge, so a write registers it first (writeTwin).
 */
async function existing(deps: Deps, topicId: string): Promise<TeEntityWithTwin | null> {
  const entity = await find(deps, topicId)
  if (!entity && topicId !== MAIN_DEVICE_TOPIC_ID) throw unknown(topicId)
  return entity
}

/** thin-edge's checks of what a registration names: a device as parent, a service as health. */
async function checkLinks(
  deps: Deps,
  self: string,
  parent: string | null,
  health: string | undefined
): Promise<void> {
  if (parent !== null && parent !== MAIN_DEVICE_TOPIC_ID) {
    const found = await find(deps, parent)
    if (!found) throw bad(`the parent ${parent} is not registered`)
    if (found['@type'] === 'service') throw bad(`the parent ${parent} is a service`)
    if ((await subtree(deps, self)).some((e) => e['@topic-id'] === parent))
      throw bad(`the parent ${parent} is a descendant of ${self}`)
  }
  if (health !== undefined && (await find(deps, health))?.['@type'] !== 'service')
    throw bad(`the health endpoint ${health} is not a registered service`)
}

/** The entity and its descendants, as the store lists them; empty when it is unknown. */
async function subtree(deps: Deps, root: string): Promise<TeEntity[]> {
  const out: TeEntity[] = []
  let cursor: string | undefined
  do {
    const page = await deps.store
      .call('te.entity.list', { root, limit: TE_LIST_MAX, ...(cursor ? { cursor } : {}) })
      .catch((err: unknown) => {
        if (err instanceof UbError && err.code === 'not_found') return { items: [], next: null }
        throw err
      })
    out.push(...page.items)
    cursor = page.next ?? undefined
  } while (cursor !== undefined)
  return out
}

/** thin-edge's PATCH: a new `@parent` and/or `@health`; republishes the whole registration. */
async function update(deps: Deps, topicId: string, body: unknown) {
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw bad('the update is a JSON object with "@parent" and/or "@health"')
  const change = body as Record<string, unknown>
  const other = Object.keys(change).find((k) => k !== '@parent' && k !== '@health')
  if (other !== undefined) throw bad(`only "@parent" and "@health" can be updated, not "${other}"`)
  const entity = await find(deps, topicId)
  if (!entity) throw unknown(topicId)
  if (change['@parent'] !== undefined && topicId === MAIN_DEVICE_TOPIC_ID)
    throw bad('the parent of the main device can not be updated')
  // thin-edge's entity keeps its twin with it: the republished registration carries it too.
  const fields: Record<string, unknown> = { ...entity.twin, '@type': entity['@type'] }
  if (entity['@id'] !== undefined) fields['@id'] = entity['@id']
  for (const key of ['@parent', '@health'] as const) {
    const value = change[key] ?? entity[key]
    if (value !== undefined) fields[key] = value
  }
  const payload = JSON.stringify(fields)
  const reg = registration(topicId, payload)
  // Only what changes is checked: an MQTT registration may name a parent not registered (yet).
  const parent = change['@parent'] === undefined ? null : reg.parent
  await checkLinks(
    deps,
    topicId,
    parent,
    change['@health'] === undefined ? undefined : reg.healthEndpoint
  )
  await publish(deps, [{ topic: topicId, payload }])
  const { twin: _twin, ...updated } = (await find(deps, topicId)) ?? { ...entity }
  return updated
}

/** Deregistration: the entities it removes, which te-bus clears with their retained messages. */
async function deregister(deps: Deps, topicId: string): Promise<TeEntity[]> {
  const removed = await subtree(deps, topicId)
  if (removed.length === 0) return []
  await publish(deps, [{ topic: topicId, payload: '' }])
  return removed
}

/** Each fragment as its retained `twin/<key>` message; null clears it (an empty payload). */
async function writeTwin(
  deps: Deps,
  topicId: string,
  entity: TeEntityWithTwin | null,
  fragments: Record<string, unknown>
): Promise<void> {
  if (Object.keys(fragments).length === 0) return
  const messages: TeWrite[] = []
  if (!entity) messages.push({ topic: topicId, payload: JSON.stringify({ '@type': 'device' }) })
  for (const [key, value] of Object.entries(fragments)) {
    checkFragment(twinKey(key), value)
    const payload = value === null ? '' : JSON.stringify(value)
    messages.push({ topic: `${topicId}/twin/${key}`, payload })
  }
  await publish(deps, messages)
}

async function publish(deps: Deps, messages: TeWrite[]): Promise<void> {
  try {
    await requestTePublish(deps.bus, messages)
  } catch (err) {
    if (err instanceof UbError && err.code === TE_BUS_OFF)
      throw new ApiError(503, TE_BUS_OFF, 'the thin-edge.io bus is off: teRoot is empty')
    throw err
  }
}
