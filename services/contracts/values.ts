/**
 * The values the contracts are made of, each described once: the store validates with them, and
 * the HTTP API builds its request bodies and its OpenAPI document from them.
 */
import { z } from 'zod'
import {
  bindingProblem,
  bindingsProblem,
  DIRECTIONS,
  GRANT_ALL,
  namespaceProblem,
  normalBinding,
  type Binding,
  type Direction,
} from '../../machines/index.ts'
import { INSTANCE_ID_PATTERN } from '../common/instance-id.ts'

export const MAX_BINDINGS = 1_000 // an upstream with more is a mistake, and each is a subscription
export const MAX_ID_CHARS = 128
export const HOST_PROTOCOLS = ['mqtt:', 'mqtts:', 'ws:', 'wss:'] as const
const MAX_PEM_CHARS = 64 * 1_024 // 64 KiB: a certificate chain

/** A topic prefix: no wildcards, no empty level, no leading or trailing `/`, not starting with `$`. */
export const Namespace = z
  .string()
  .superRefine((ns, ctx) => {
    const problem = namespaceProblem(ns)
    if (problem) ctx.addIssue({ code: 'custom', message: `namespace ${problem}` })
  })
  .describe('topic prefix: no wildcards, no empty level, no leading or trailing /, no leading $')

/** A grant is a namespace or `#` alone (everything but `$` topics). */
export const Grant = z.string().superRefine((g, ctx) => {
  if (g === GRANT_ALL) return
  const problem = namespaceProblem(g)
  if (problem) ctx.addIssue({ code: 'custom', message: `grant ${problem} (or be '#' alone)` })
})

/** A binding's source or target: a topic prefix whose levels may be `+` (source) or `{n}` (target). */
const BindingPattern = z
  .string()
  .describe(
    "topic prefix; a source level may be '+', a target level '{n}' (the n-th '+'); a trailing '/#' is allowed"
  )

export const BindingSchema = z
  .strictObject({
    source: BindingPattern,
    target: BindingPattern,
    direction: z
      .enum(DIRECTIONS as [Direction, ...Direction[]])
      .optional()
      .describe("'out' (default): local → upstream; 'in': upstream → local; 'both'"),
  })
  .superRefine((b, ctx) => {
    const problem = bindingProblem(b)
    if (problem) ctx.addIssue({ code: 'custom', message: problem })
  })
  .transform(normalBinding)

/** At most MAX_BINDINGS, valid together (bindingsProblem); `element` lets the HTTP API name the item schema. */
export const bindingsOf = (element: z.ZodType<Binding, unknown> = BindingSchema) =>
  z
    .array(element)
    .max(MAX_BINDINGS)
    .superRefine((bindings, ctx) => {
      const found = bindingsProblem(bindings)
      if (found) ctx.addIssue({ code: 'custom', path: [found.index], message: found.problem })
    })
export const BindingsSchema = bindingsOf()

export const Id = z.string().min(1).max(MAX_ID_CHARS)
export const Port = z.number().int().min(1).max(65_535)

/** Why `value` is not an upstream host (`mqtt://host` …: scheme and host name only), or null. */
export function hostProblem(value: string): string | null {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return 'must be a URL such as mqtt://broker.example'
  }
  if (!(HOST_PROTOCOLS as readonly string[]).includes(url.protocol))
    return 'protocol must be one of mqtt, mqtts, ws, wss'
  if (!url.hostname) return 'must name a host'
  if (url.port) return 'must not carry a port: use brokerPort and httpPort'
  if (url.username || url.password) return 'must not carry credentials'
  if ((url.pathname && url.pathname !== '/') || url.search || url.hash)
    return 'must be a scheme and a host only'
  return null
}

/** `mqtt://host`, `mqtts://host`, `ws://host` or `wss://host`, normalized to scheme and host name. */
export const HostUrl = z
  .string()
  .max(300)
  .superRefine((value, ctx) => {
    const problem = hostProblem(value)
    if (problem) ctx.addIssue({ code: 'custom', message: problem })
  })
  .transform((value) => {
    const url = new URL(value)
    return `${url.protocol}//${url.hostname}`
  })

export const TlsSchema = z.strictObject({
  ca: z.string().max(MAX_PEM_CHARS).optional(),
  cert: z.string().max(MAX_PEM_CHARS).optional(),
  key: z.string().max(MAX_PEM_CHARS).optional(),
  servername: z.string().max(255).optional(),
  rejectUnauthorized: z.boolean().optional(),
})
export type TlsOptions = z.infer<typeof TlsSchema>

/** Instance IDs look like `UB_ARJgkJ`; any short token is accepted, so older or foreign IDs work. */
export const InstanceId = z
  .string()
  .regex(INSTANCE_ID_PATTERN, 'must be 1–64 letters, digits, _ or -')
export const SecretHash = z
  .string()
  .regex(/^[0-9a-f]{64}$/, 'must be sha-256 hex (64 lowercase hex digits)')

/** Who sent an event: recorded in the log for audit. */
export const ActorSchema = z.object({
  kind: z.enum(['operator', 'remote', 'system']),
  id: z.string().max(MAX_ID_CHARS).optional(),
  ip: z.string().max(MAX_ID_CHARS).optional(),
})
export type EventActor = z.infer<typeof ActorSchema>
export type ActorKind = EventActor['kind']

/** `null` and `undefined` alike mean absent: JSON callers send either. */
export function dropNull<T>(v: T | null | undefined): T | undefined {
  return v ?? undefined
}

/**
 * The caller's key for one write, the same on every retry of it (store-client.ts adds one): the
 * store answers a retry with what the first attempt wrote, even on another replica.
 */
export const RequestKey = z
  .string()
  .regex(/^[A-Za-z0-9_-]{8,64}$/, 'requestKey: 8 to 64 letters, digits, _ or -')
  .optional()
/** Set on a retry: only then does the store look the key up first (a first attempt saves the read). */
export const Retry = z.boolean().optional()
