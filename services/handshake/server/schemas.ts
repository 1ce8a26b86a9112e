import { z } from '@hono/zod-openapi'
import { GatewayStatsSchema as GatewayStatsContract } from '../../contracts/gateway-stats.ts'
import * as handshake from '../../contracts/handshake-client.ts'
import * as links from '../../contracts/links.ts'
import * as contract from '../../contracts/store.ts'
import { TlsPatchSchema } from '../../contracts/upstream-edit.ts'

/**
 * A contract schema, made again so that it has `.openapi()`. zod 4 copies methods onto each
 * schema when it is made, so a schema built before @hono/zod-openapi extended zod (the
 * contracts are loaded first in a process that also runs the store) lacks the method.
 */
function documented<T extends z.ZodType>(schema: T): T {
  return new (schema.constructor as new (def: unknown) => T)(schema._def)
}

/**
 * The zod schemas that validate requests and describe responses in /openapi.json: one source,
 * so the document cannot drift from what the routes accept. Request bodies are strict objects:
 * an unknown field is a 400, not silently dropped.
 */
export const ErrorSchema = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'invalid_request' }),
      message: z.string(),
      details: z.unknown().optional(),
    }),
  })
  .openapi('Error')

/** A response with a JSON body of `schema`. */
export const json = <T>(schema: T, description: string) => ({
  description,
  content: { 'application/json': { schema } },
})

export const errorResponses = (...statuses: number[]) =>
  Object.fromEntries(
    statuses.map((s) => [
      s,
      {
        description: ERROR_TEXT[s] ?? 'error',
        content: { 'application/json': { schema: ErrorSchema } },
      },
    ])
  )

const ERROR_TEXT: Record<number, string> = {
  400: 'malformed_json or invalid_request',
  401: 'unauthorized: missing or wrong bearer token',
  404: 'not_found',
  409: 'invalid_transition (the machine refused the event, with the reason) or version_conflict',
  413: 'payload_too_large',
  429: 'rate_limited',
  502: 'upstream_unreachable: the upstream server did not answer',
  503: 'storage_unavailable, no_responders or bus_timeout',
}

export const Namespace = documented(contract.Namespace).openapi({
  example: 'acme/plant1/line3',
  description: 'topic prefix: no wildcards, no empty level, no leading or trailing /, no leading $',
})

/** A grant is a namespace or `#` alone (everything but `$` topics). */
export const Grant = documented(contract.Grant).openapi({ example: 'acme/plant1' })

export const BindingSchema = documented(contract.BindingSchema).openapi('Binding', {
  example: { source: 'plant1/+/line3', target: 'acme/{1}/line3', direction: 'out' },
})

export const BindingsBody = documented(contract.bindingsOf(BindingSchema)).openapi('Bindings')

/** `mqtt://host`, `mqtts://host`, `ws://host` or `wss://host`: scheme and host name only, ports apart. */
export const HostUrl = documented(contract.HostUrl).openapi({
  example: 'mqtt://broker.example',
  description: 'mqtt://, mqtts://, ws:// or wss:// followed by a host name or address',
})

const Port = contract.Port

export const TlsSchema = documented(contract.TlsSchema).openapi('Tls')

export const CreateUnsUpstream = z
  .strictObject({
    kind: z
      .literal('uns')
      .openapi({ description: "may be left out: a body without kind is 'uns'" }),
    host: HostUrl,
    brokerPort: Port.default(1883),
    httpPort: Port.default(8080).openapi({
      description:
        "the upstream server's HTTP API port; asked over https when host is mqtts:// or wss://",
    }),
    tls: TlsSchema.optional().openapi({
      description: 'for mqtts:// and wss://: trust (ca), client certificate, server name',
    }),
  })
  .openapi('CreateUnsUpstream')

export const CreateMqttUpstream = z
  .strictObject({
    kind: z.literal('mqtt'),
    host: HostUrl,
    brokerPort: Port.default(1883),
    username: z.string().min(1).max(256).optional(),
    password: z.string().max(1_024).optional(),
    tls: TlsSchema.optional(),
  })
  .openapi('CreateMqttUpstream')

/**
 * `PATCH /api/v1/upstreams/{id}`: the connection fields of Create Upstream, any subset, at least
 * one. `tls` null removes the TLS options; an object changes them field by field (a field null
 * is removed, one left out stays), so the private key need not be sent again.
 */
export const EditUpstreamBody = z
  .strictObject({
    host: HostUrl.optional(),
    brokerPort: Port.optional(),
    httpPort: Port.optional().openapi({ description: 'handshake upstreams only' }),
    tls: documented(TlsPatchSchema)
      .nullable()
      .optional()
      .openapi({ description: 'null: no TLS options; an object: each field given replaces' }),
  })
  .refine((b) => Object.keys(b).length > 0, {
    message: 'give at least one of host, brokerPort, httpPort, tls',
  })
  .openapi('EditUpstream')

/**
 * `kind` picks the shape; absent means `uns` (README.md, HTTP API: its example sends no kind).
 * Filling it in first lets a discriminated union name the offending field, where a plain union
 * only says "Invalid input".
 */
export const CreateUpstreamBody = z.preprocess(
  (v) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) && !('kind' in v)
      ? { ...v, kind: 'uns' }
      : v,
  z.discriminatedUnion('kind', [CreateUnsUpstream, CreateMqttUpstream])
)

/** A path id: the store's `Id`, so the API refuses what the store would. */
export const IdParam = z.object({
  id: documented(contract.Id).openapi({ param: { name: 'id', in: 'path' } }),
})

export const RequestIdParam = z.object({
  requestId: documented(contract.Id).openapi({ param: { name: 'requestId', in: 'path' } }),
})

export const StatusQuery = z.object({
  status: z
    .string()
    .min(1)
    .max(32)
    .optional()
    .openapi({ param: { name: 'status', in: 'query' } }),
})

/** The operator's lists: `status`, then keyset paging (README.md, HTTP API). */
export const ListQuery = StatusQuery.extend({
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(1_000)
    .optional()
    .openapi({
      param: { name: 'limit', in: 'query' },
      description: 'rows per page (default 100, at most 1,000)',
    }),
  cursor: z
    .string()
    .min(1)
    .max(256)
    .optional()
    .openapi({
      param: { name: 'cursor', in: 'query' },
      description: 'the X-Next-Cursor of the page before',
    }),
})

export const RequestListQuery = ListQuery.extend({
  instanceId: documented(contract.Id)
    .optional()
    .openapi({ param: { name: 'instanceId', in: 'query' }, description: 'one instance only' }),
})

/** How a paged list says there is more: the next page's cursor, also as a Link header. */
export const PAGED_HEADERS = {
  'X-Next-Cursor': {
    description: 'pass as ?cursor= for the next page; absent on the last page',
    schema: { type: 'string' as const },
  },
  Link: {
    description: 'rel="next": the next page',
    schema: { type: 'string' as const },
  },
}

const SeqNumber = z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER)

export const PageQuery = z.object({
  after: SeqNumber.optional().openapi({
    param: { name: 'after', in: 'query' },
    description: 'seq to start after',
  }),
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(500)
    .optional()
    .openapi({ param: { name: 'limit', in: 'query' } }),
})

export const ReplayQuery = z.object({
  to: SeqNumber.optional().openapi({
    param: { name: 'to', in: 'query' },
    description: 'replay up to this seq',
  }),
})

export const TransitionSchema = documented(contract.CheckedTransitionSchema).openapi('Transition')

export const TransitionPage = documented(contract.pageOf(TransitionSchema)).openapi(
  'TransitionPage'
)

export const ReplaySchema = documented(
  contract.ReplayResultSchema.extend({ state: z.string() })
).openapi('Replay')

/** A link status as the supervisor last wrote it; every field may be missing from an older writer. */
export const LinkSchema = documented(links.LinkStatusSchema.partial().loose()).openapi('Link')

export const UpstreamSchema = documented(
  contract.UpstreamSchema.extend({
    tls: contract.TlsSchema.omit({ key: true })
      .nullable()
      .describe('TLS options; the private key is never shown'),
  })
).openapi('Upstream')

export const UpstreamDetailSchema = UpstreamSchema.extend({
  link: LinkSchema.nullable().openapi({
    description: 'bridge link state from the supervisor; null when none',
  }),
}).openapi('UpstreamDetail')

export const DeletedUpstreamSchema = UpstreamSchema.extend({
  withdrawal: z.object({
    ok: z.boolean(),
    error: z.string().nullable(),
  }),
}).openapi('DeletedUpstream')

export const IncomingRequestSchema = documented(contract.IncomingRequestSchema).openapi(
  'IncomingRequest'
)

export const AcceptBody = z
  .strictObject({
    grants: z
      .array(Grant)
      .min(1)
      .max(100)
      .optional()
      .openapi({ description: "default ['#']: everything but $ topics" }),
  })
  .openapi('AcceptBody')

/** Instance IDs look like `UB_ARJgkJ`; accept any short token so older or foreign IDs still work. */
export const InstanceIdSchema = contract.InstanceId

export const HandshakeRequestBody = documented(handshake.HandshakeRequestSchema).openapi(
  'HandshakeRequest'
)

export const HandshakeAccepted = documented(handshake.HandshakeAcceptedSchema).openapi(
  'HandshakeAccepted'
)

export const HandshakeStatus = documented(handshake.HandshakeStatusSchema).openapi(
  'HandshakeStatus'
)

const GatewayStatsSchema = documented(GatewayStatsContract).openapi('GatewayStats')

export const InstanceSchema = z
  .object({
    instanceId: z.string(),
    version: z.string(),
    services: z.array(z.string()),
    gateways: z.array(GatewayStatsSchema),
  })
  .openapi('Instance')
