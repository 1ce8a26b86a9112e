import { createRoute, z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import { decodeJson, type KvBucket } from '../../../common/bus/bus.ts'
import { LINKS_BUCKET } from '../../../contracts/links.ts'
import type { EventActor, Upstream } from '../../../contracts/store.ts'
import type { UpstreamEvent } from '../../../../machines/index.ts'
import { BEARER, createRouter, operatorActor, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import {
  BindingsBody,
  CreateMqttUpstream,
  CreateUnsUpstream,
  CreateUpstreamBody,
  DeletedUpstreamSchema,
  IdParam,
  ListQuery,
  PAGED_HEADERS,
  UpstreamDetailSchema,
  UpstreamSchema,
  errorResponses,
  json,
} from '../schemas.ts'
import { makeSecret } from '../../secret.ts'
import { upstreamView } from '../views.ts'
import { resolveTlsFiles } from '../tls-files.ts'
import { pageInput, pagedJson } from '../paging.ts'
import {
  editConnection,
  editRoute,
  refuseSelf,
  refuseTwin,
  withdrawFirst,
} from './upstream-connection.ts'

const DEFAULT_HTTP_PORT = 8_080 // stored for a plain broker, which has no handshake API

const tags = ['upstreams']

const create = createRoute({
  method: 'post',
  path: '/api/v1/upstreams',
  tags,
  security: BEARER,
  summary: 'Add an upstream: sends the handshake request (or, kind mqtt, a plain broker)',
  request: {
    body: { required: true, content: { 'application/json': { schema: CreateUpstreamBody } } },
  },
  responses: {
    201: json(UpstreamSchema, 'created; Pending (lastError set if the server was not reached yet)'),
    ...errorResponses(400, 401, 409, 413, 503),
  },
})

const list = createRoute({
  method: 'get',
  path: '/api/v1/upstreams',
  tags,
  security: BEARER,
  summary:
    'The upstreams: id, host, ports, bindings, status, active; paged (?limit=, ?cursor=, X-Next-Cursor)',
  request: { query: ListQuery },
  responses: {
    200: {
      ...json(z.array(UpstreamSchema), 'one page of upstreams, oldest first'),
      headers: PAGED_HEADERS,
    },
    ...errorResponses(400, 401, 503),
  },
})

const getOne = createRoute({
  method: 'get',
  path: '/api/v1/upstreams/{id}',
  tags,
  security: BEARER,
  summary: 'One upstream, with its bridge link state',
  request: { params: IdParam },
  responses: { 200: json(UpstreamDetailSchema, 'the upstream'), ...errorResponses(401, 404, 503) },
})

const putBindings = createRoute({
  method: 'put',
  path: '/api/v1/upstreams/{id}/bindings',
  tags,
  security: BEARER,
  summary: 'Replace the bindings (live while Active)',
  request: {
    params: IdParam,
    body: { required: true, content: { 'application/json': { schema: BindingsBody } } },
  },
  responses: {
    200: json(UpstreamSchema, 'the upstream with its new bindings'),
    ...errorResponses(400, 401, 404, 409, 413, 503),
  },
})

/** `POST /api/v1/upstreams/{id}/<name>`: do something to one upstream, answer it afterwards. */
const action = (
  name: 'refresh' | 'activate' | 'deactivate' | 'request',
  summary: string,
  { ok = 'the upstream afterwards', errors = [401, 404, 409, 503] } = {}
) =>
  createRoute({
    method: 'post',
    path: `/api/v1/upstreams/{id}/${name}`,
    tags,
    security: BEARER,
    summary,
    request: { params: IdParam },
    responses: {
      200: json(UpstreamSchema, ok),
      ...errorResponses(...errors),
    },
  })

const remove = createRoute({
  method: 'delete',
  path: '/api/v1/upstreams/{id}',
  tags,
  security: BEARER,
  summary: 'Delete: stops the bridge and withdraws the request on the upstream server',
  request: { params: IdParam },
  responses: {
    200: json(DeletedUpstreamSchema, 'Deleted; withdrawal says whether the server heard it'),
    ...errorResponses(401, 404, 409, 503),
  },
})

export function upstreamRoutes(deps: RouteDeps) {
  const { store, poller } = deps
  const app = createRouter()
  const linkOf = linkReader(deps)

  app.openapi(create, async (c) => {
    const valid = c.req.valid('json')
    // A CA, certificate or key given as a file's path is read here and kept as PEM.
    const body = valid.tls ? { ...valid, tls: resolveTlsFiles(valid.tls) } : valid
    const actor = operatorActor(c, deps)
    const up =
      body.kind === 'mqtt'
        ? await addMqttUpstream(deps, body, actor)
        : await addUnsUpstream(deps, body, actor)
    return c.json(upstreamView(up), 201)
  })

  app.openapi(list, async (c) => {
    const page = await store.call('upstream.page', pageInput(c.req.valid('query')))
    return pagedJson(c, { ...page, items: page.items.map(upstreamView) })
  })

  app.openapi(getOne, async (c) => {
    const { id } = c.req.valid('param')
    const up = await store.call('upstream.get', { id })
    return c.json({ ...upstreamView(up), link: await linkOf(id) }, 200)
  })

  app.openapi(
    action('refresh', 'Ask the upstream server now', {
      ok: 'the upstream after asking',
      errors: [401, 404, 503],
    }),
    async (c) => {
      const { id } = c.req.valid('param')
      return c.json(upstreamView(await poller.pollNow(id)), 200)
    }
  )

  app.openapi(editRoute, async (c) =>
    c.json(await editConnection(deps, c.req.valid('param').id, c.req.valid('json'), c), 200)
  )

  app.openapi(putBindings, async (c) => {
    const { id } = c.req.valid('param')
    const bindings = c.req.valid('json')
    return c.json(await send(deps, id, { type: 'upstream.bindings.set', bindings }, c), 200)
  })

  app.openapi(
    action('activate', 'Start bridging: needs Approved and at least one binding'),
    async (c) =>
      c.json(await send(deps, c.req.valid('param').id, { type: 'upstream.activate' }, c), 200)
  )
  app.openapi(action('deactivate', 'Stop bridging, keep the approval'), async (c) =>
    c.json(await send(deps, c.req.valid('param').id, { type: 'upstream.deactivate' }, c), 200)
  )
  app.openapi(
    action('request', 'Ask again after a decline or revocation (back to Pending)'),
    async (c) => c.json(await askAgain(deps, c.req.valid('param').id, c), 200)
  )

  app.openapi(remove, async (c) =>
    c.json(await deleteUpstream(deps, c.req.valid('param').id, c), 200)
  )

  return app
}

/** Send an operator's event to one upstream's machine; the upstream as the API shows it afterwards. */
async function send(deps: RouteDeps, id: string, event: UpstreamEvent, c: Context) {
  await deps.store.call('event', {
    machine: 'upstream',
    id,
    event: { ...event },
    actor: operatorActor(c, deps),
  })
  return upstreamView(await deps.store.call('upstream.get', { id }))
}

/** Each upstream's bridge link state, from the bucket the bridge supervisor writes. */
function linkReader({ bus, log }: RouteDeps) {
  let links: Promise<KvBucket> | undefined
  return async function linkOf(id: string): Promise<Record<string, unknown> | null> {
    try {
      links ??= bus.kv(LINKS_BUCKET)
      const entry = await (await links).get(id)
      return entry ? decodeJson<Record<string, unknown>>(entry.value) : null
    } catch (err) {
      // Link state is a view, not the truth: show the upstream without it rather than fail.
      links = undefined
      log.warn({ err, upstream: id }, 'cannot read link state')
      return null
    }
  }
}

function addMqttUpstream(
  { store }: RouteDeps,
  body: z.output<typeof CreateMqttUpstream>,
  actor: EventActor
): Promise<Upstream> {
  return store.call('upstream.create', {
    kind: 'mqtt',
    host: body.host,
    brokerPort: body.brokerPort,
    // A plain broker has no handshake API; the store still wants a valid port, so the default.
    httpPort: DEFAULT_HTTP_PORT,
    ...(body.username === undefined ? {} : { username: body.username }),
    ...(body.password === undefined ? {} : { secret: body.password }),
    ...(body.tls === undefined ? {} : { tls: body.tls }),
    actor,
  })
}

async function addUnsUpstream(
  deps: RouteDeps,
  body: z.output<typeof CreateUnsUpstream>,
  actor: EventActor
): Promise<Upstream> {
  const { store, poller } = deps
  await refuseTwin(deps, body)
  const secret = makeSecret()
  if (!deps.allowSelfUpstream) await refuseSelf(deps, body, secret)
  const up = await store.call('upstream.create', {
    kind: 'uns',
    host: body.host,
    brokerPort: body.brokerPort,
    httpPort: body.httpPort,
    secret,
    ...(body.tls === undefined ? {} : { tls: body.tls }),
    actor,
  })
  // Send the request now so the answer already says whether the server was reached.
  return poller.pollNow(up.id)
}

async function askAgain(deps: RouteDeps, id: string, c: Context): Promise<Upstream> {
  const { store, poller } = deps
  const up = await store.call('upstream.get', { id })
  // The old request is final on the server, so a new one is sent. Forget the old id first:
  // a poll between the event and the patch would read the old Declined and decline again.
  if (up.status === 'Declined' || up.status === 'Revoked') {
    await store.call('upstream.patch', { id, remoteRequestId: null, lastError: null })
  }
  await send(deps, id, { type: 'upstream.request' }, c)
  return upstreamView(await poller.pollNow(id))
}

/** Stop polling, withdraw the request on the server, then delete; a withdrawal that failed is owed. */
async function deleteUpstream(deps: RouteDeps, id: string, c: Context) {
  const { store, poller } = deps
  const up = await store.call('upstream.get', { id })
  if (up.status === 'Deleted')
    throw new ApiError(409, 'invalid_transition', `upstream ${id} is already Deleted`)
  poller.forget(id)
  const error = up.kind === 'uns' ? await withdrawFirst(deps, up) : null
  const withdrawal = { ok: error === null, error }
  let deleted = await send(deps, id, { type: 'upstream.delete' }, c)
  if (!withdrawal.ok) {
    // Owed: the poller asks the server again until it answers (DELETE is idempotent there).
    deleted = await store.call('upstream.patch', {
      id,
      withdrawalOwed: true,
      lastError: `withdrawal pending: ${error}`,
    })
    poller.owe(id)
  }
  return { ...upstreamView(deleted), withdrawal }
}
