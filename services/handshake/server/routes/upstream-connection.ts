import { createRoute, z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import { serverChanged } from '../../../../machines/index.ts'
import { sha256Hex } from '../../../common/digest.ts'
import type { TlsOptions, Upstream } from '../../../contracts/store.ts'
import { patchTls } from '../../../contracts/upstream-edit.ts'
import { BEARER, operatorActor, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import {
  EditUpstreamBody,
  IdParam,
  UpstreamSchema,
  errorResponses,
  json,
  type TlsSchema,
} from '../schemas.ts'
import { resolveTlsFiles } from '../tls-files.ts'
import { upstreamView } from '../views.ts'
import { withdrawRequest } from '../../withdraw.ts'

/** The upstream statuses in which its request is live on the server. */
export const LIVE = new Set(['Pending', 'Approved', 'Active'])

/** Where a handshake upstream's server is: its host (any scheme) and HTTP port. */
interface ServerTarget {
  host: string
  httpPort: number
  tls?: z.output<typeof TlsSchema> | null | undefined
}

const hostname = (host: string) => new URL(host).hostname

export const editRoute = createRoute({
  method: 'patch',
  path: '/api/v1/upstreams/{id}',
  tags: ['upstreams'],
  security: BEARER,
  summary:
    'Edit the connection (host, ports, TLS): one audited transition; another server means Pending again',
  request: {
    params: IdParam,
    body: { required: true, content: { 'application/json': { schema: EditUpstreamBody } } },
  },
  responses: {
    200: json(UpstreamSchema, 'the upstream afterwards'),
    ...errorResponses(400, 401, 404, 409, 413, 503),
  },
})

/**
 * One approval per instance on a server (it refuses to accept a second request of an instance
 * that has one Accepted): refuse a second upstream to the same server, whatever its transport,
 * while the first one's request is live. After a decline or revocation it is final there.
 */
export async function refuseTwin(
  { store }: RouteDeps,
  target: ServerTarget,
  self?: string
): Promise<void> {
  const existing = await store.call('upstream.list', {})
  const twin = existing.find(
    (u) =>
      u.id !== self &&
      u.kind === 'uns' &&
      hostname(u.host) === hostname(target.host) &&
      u.httpPort === target.httpPort &&
      LIVE.has(u.status)
  )
  if (twin) {
    throw new ApiError(
      409,
      'already_exists',
      `upstream ${twin.id} already talks to ${target.host}:${target.httpPort}`,
      { details: { id: twin.id } }
    )
  }
}

/**
 * Send the handshake request before the upstream exists (with the secret it will keep, so the
 * poller's first send finds the same request): a server answering with our own instance ID is
 * this instance, refused with nothing kept (its request withdrawn). A server not reached (or
 * answering an error) is the poller's to report, as before.
 */
export async function refuseSelf(
  { remote, instanceId }: RouteDeps,
  body: ServerTarget,
  secret: string
): Promise<void> {
  const target = { host: body.host, httpPort: body.httpPort, tls: body.tls ?? null }
  const answer = await remote
    .sendRequest(target, { instanceId, secretHash: sha256Hex(secret) })
    .catch(() => null)
  if (answer?.instanceId !== instanceId) return
  await remote.withdraw(target, answer.requestId, secret).catch(() => undefined)
  throw new ApiError(
    400,
    'self_upstream',
    `${body.host}:${body.httpPort} is this instance's own handshake API (${instanceId}); an upstream must be another instance`
  )
}

/** Why the request could not be withdrawn on the server, or null when it was (or needs not be). */
export async function withdrawFirst(
  { store, remote, log }: RouteDeps,
  up: Upstream
): Promise<string | null> {
  let error: string | null
  try {
    error = await withdrawRequest(store, remote, up)
  } catch (err) {
    error = (err as Error).message
  }
  if (error !== null) {
    log.warn(
      { err: error, upstream: up.id },
      'could not withdraw the request on the upstream server'
    )
  }
  return error
}

/** A CA, certificate or key given as a file's path is read here and kept as PEM; null removes. */
function resolvePatch(tls: z.output<typeof EditUpstreamBody>['tls']) {
  if (!tls) return tls
  const given = Object.fromEntries(Object.entries(tls).filter(([, v]) => v !== null))
  return { ...tls, ...resolveTlsFiles(given as TlsOptions) }
}

/**
 * `PATCH /api/v1/upstreams/{id}` (README, Edit an upstream). Broker port, transport and TLS keep
 * the state (the supervisor reconnects an Active link on the transition event). Another server
 * (host name or HTTP port) is one that never approved us: the machine goes back to Pending, the
 * old server's live request is withdrawn (best effort, after the edit is committed) and the new
 * one is asked now. Declined or Revoked stay so: Ask Again reaches the new server.
 */
export async function editConnection(
  deps: RouteDeps,
  id: string,
  body: z.output<typeof EditUpstreamBody>,
  c: Context
): Promise<Upstream> {
  const { store, poller } = deps
  const up = await store.call('upstream.get', { id })
  if (up.status === 'Deleted')
    throw new ApiError(409, 'invalid_transition', `upstream ${id} is Deleted: nothing to edit`)
  if (up.kind === 'mqtt' && body.httpPort !== undefined)
    throw new ApiError(400, 'invalid_request', 'httpPort: a plain MQTT broker has no HTTP API')
  const tls = resolvePatch(body.tls)
  const target = {
    host: body.host ?? up.host,
    httpPort: body.httpPort ?? up.httpPort,
    tls: patchTls(up.tls, tls),
  }
  const changes = {
    ...(target.host === up.host ? {} : { host: { from: up.host, to: target.host } }),
    ...(target.httpPort === up.httpPort
      ? {}
      : { httpPort: { from: up.httpPort, to: target.httpPort } }),
  }
  const newServer = up.kind === 'uns' && serverChanged(changes)
  const live = LIVE.has(up.status)
  if (newServer) {
    await refuseTwin(deps, target, id)
    if (live && !deps.allowSelfUpstream) {
      const { password } = await store.call('upstream.credentials', { id })
      if (password) await refuseSelf(deps, target, password)
    }
  }
  const { upstream } = await store.call('upstream.edit', {
    id,
    ...(body.host === undefined ? {} : { host: body.host }),
    ...(body.brokerPort === undefined ? {} : { brokerPort: body.brokerPort }),
    ...(body.httpPort === undefined ? {} : { httpPort: body.httpPort }),
    ...(tls === undefined ? {} : { tls }),
    actor: operatorActor(c, deps),
  })
  if (!newServer || !live) return upstreamView(upstream)
  // `up` still names the old server and the request it holds there.
  await withdrawFirst(deps, up)
  return upstreamView(await poller.pollNow(id))
}
