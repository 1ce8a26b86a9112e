/**
 * The binding store's API over the bus: the only way other services read or change upstreams,
 * incoming requests and the transition log. Each verb's input and output is one zod schema here:
 * the store validates with it, callers get their TypeScript types from it, and the HTTP API
 * builds its request bodies and its OpenAPI document from the same pieces.
 *
 * Subjects are `store.<verb>` (queue group `binding-store`); every committed transition is
 * published on `evt.<machine>.<id>.transition` with the log row as its body, including its
 * `globalSeq` (SSE uses it as the event id and to dedupe replay against live events).
 */
import { z } from 'zod'
import {
  GRANT_ALL,
  MACHINES,
  namespaceProblem,
  type Binding,
  type MachineKind,
  type PersistedSnapshot,
} from '../../machines/index.ts'

export const STORE_QUEUE = 'binding-store'
export const storeSubject = (verb: StoreVerb): string => `store.${verb}`
export const transitionSubject = (machine: MachineKind | '*', id: string): string =>
  `evt.${machine}.${id}.transition`
/** All transitions of all machines: what SSE and the supervisor listen to. */
export const ALL_TRANSITIONS = 'evt.*.*.transition'

export const MAX_BINDINGS = 1_000 // an upstream with more is a mistake, and each is a subscription
export const MAX_ID_CHARS = 128
export const HOST_PROTOCOLS = ['mqtt:', 'mqtts:', 'ws:', 'wss:'] as const
const MAX_EVENT_BYTES = 64 * 1_024 // 64 KiB: an event is a few bindings, not a payload
const MAX_PEM_CHARS = 64 * 1_024 // 64 KiB: a certificate chain

// ---- the pieces -------------------------------------------------------------------------------

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

export const BindingSchema = z.strictObject({ source: Namespace, target: Namespace })

/** At most MAX_BINDINGS, each source bound once; `element` lets the HTTP API name the item schema. */
export const bindingsOf = (element: z.ZodType<Binding> = BindingSchema) =>
  z
    .array(element)
    .max(MAX_BINDINGS)
    .superRefine((bindings, ctx) => {
      const seen = new Set<string>()
      bindings.forEach((b, i) => {
        if (seen.has(b.source))
          ctx.addIssue({
            code: 'custom',
            path: [i, 'source'],
            message: `source '${b.source}' is bound twice`,
          })
        seen.add(b.source)
      })
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
  .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1–64 letters, digits, _ or -')
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

function dropNull<T>(v: T | null | undefined): T | undefined {
  return v ?? undefined
}

const MachineKindSchema = z.enum(Object.keys(MACHINES) as [MachineKind, ...MachineKind[]])
const OptionalText = (max = 4_096) =>
  z
    .string()
    .max(max)
    .refine((s) => !s.includes('\u0000'), 'must not contain NUL characters')
    .nullish()
    .transform(dropNull)
const Count = z.number().int().min(0).nullish().transform(dropNull)
const StatusFilter = z.object({ status: z.string().max(64).nullish().transform(dropNull) })
const ById = z.object({ id: Id })

// ---- inputs -----------------------------------------------------------------------------------

export const CreateUpstreamInputSchema = z.object({
  kind: z.enum(['uns', 'mqtt']).default('uns'),
  host: HostUrl,
  brokerPort: Port,
  httpPort: Port,
  /** Handshake upstreams: the secret we present as MQTT password. Plain MQTT: the password. */
  secret: OptionalText(1_024),
  username: OptionalText(1_024),
  tls: TlsSchema.nullish().transform(dropNull),
  actor: ActorSchema,
})
export type CreateUpstreamInput = z.input<typeof CreateUpstreamInputSchema>

export const CreateRequestInputSchema = z.object({
  instanceId: InstanceId,
  secretHash: SecretHash,
  sourceIp: z.string().min(1).max(64),
  actor: ActorSchema,
})
export type CreateRequestInput = z.input<typeof CreateRequestInputSchema>

/** jsonb refuses `\u0000` (SQLSTATE 22P05); say so as a bad request rather than a storage error. */
function storableProblem(value: unknown): string | null {
  const text = JSON.stringify(value)
  if (text.length > MAX_EVENT_BYTES) return `is larger than ${MAX_EVENT_BYTES} bytes`
  if (text.includes('\\u0000')) return 'must not contain NUL characters'
  return null
}

/** A well-formed event the machine knows; its bindings and grants checked as the API checks them. */
export const SendEventInputSchema = z
  .object({
    machine: MachineKindSchema,
    id: Id,
    actor: ActorSchema,
    event: z.looseObject({ type: z.string() }),
  })
  .transform((input, ctx) => {
    const { event, machine } = input
    const fail = (path: (string | number)[], message: string) => {
      ctx.addIssue({ code: 'custom', path: ['event', ...path], message })
      return z.NEVER
    }
    if (!MACHINES[machine].eventTypes.includes(event.type))
      return fail(['type'], `unknown ${machine} event type '${event.type}'`)
    const clean: { type: string } & Record<string, unknown> = { ...event }
    if (event.type === 'upstream.bindings.set') {
      const parsed = BindingsSchema.safeParse(event.bindings)
      if (!parsed.success) return nested(ctx, ['event', 'bindings'], parsed.error)
      clean.bindings = parsed.data
    }
    if (
      (event.type === 'upstream.approve' || event.type === 'request.accept') &&
      event.grants !== undefined
    ) {
      const parsed = z.array(Grant).safeParse(event.grants)
      if (!parsed.success) return nested(ctx, ['event', 'grants'], parsed.error)
      clean.grants = parsed.data
    }
    const problem = storableProblem(clean)
    if (problem) return fail([], problem)
    return { ...input, event: clean }
  })
export type SendEventInput = z.input<typeof SendEventInputSchema>

function nested(ctx: z.RefinementCtx, at: (string | number)[], error: z.ZodError): never {
  for (const issue of error.issues)
    ctx.addIssue({ code: 'custom', path: [...at, ...issue.path], message: issue.message })
  return z.NEVER
}

const MachineRef = z.object({ machine: MachineKindSchema, id: Id })

// ---- outputs ----------------------------------------------------------------------------------

export interface Upstream {
  id: string
  kind: 'uns' | 'mqtt'
  /** `mqtt://host`, `mqtts://host`, `ws://host`, `wss://host` */
  host: string
  brokerPort: number
  httpPort: number
  status: string
  active: boolean
  bindings: Binding[]
  grants: string[]
  /** The request id the upstream server gave us (handshake upstreams). */
  remoteRequestId: string | null
  lastError: string | null
  /** Deleted while its server could not be reached: its request is still to be withdrawn. */
  withdrawalOwed: boolean
  username: string | null
  tls: TlsOptions | null
  seq: number
  createdAt: string
  updatedAt: string
}

export interface IncomingRequest {
  id: string
  instanceId: string
  sourceIp: string
  status: string
  grants: string[]
  seq: number
  createdAt: string
  updatedAt: string
}

export interface TransitionRecord {
  machine: MachineKind
  machineId: string
  seq: number
  event: { type: string } & Record<string, unknown>
  actor: EventActor
  from: string | null
  to: string
  snapshot: PersistedSnapshot
  machineVersion: number
  at: string
  prevHash: string
  hash: string
  /** Position in the global commit order (what SSE sends as the event id). Set by the store. */
  globalSeq?: number
}

export interface Page<T> {
  items: T[]
  /** Pass as `after` to get the next page; null at the end. */
  next: number | null
}

export interface VerifyResult {
  ok: boolean
  rows: number
  /** The first row that was changed, inserted or deleted. */
  firstBadSeq?: number
  problem?: 'changed' | 'inserted' | 'deleted' | 'snapshot_mismatch'
  message?: string
}

export interface ReplayResult {
  machine: MachineKind
  machineId: string
  to: number
  snapshot: PersistedSnapshot
  /** True when replaying the whole log reproduced the stored snapshot. */
  matchesStored: boolean | null
  verify: VerifyResult
}

export interface InstanceInfo {
  instanceId: string
  createdAt: string
  /**
   * The operator token in plain text: only in the answer that created the instance with a
   * generated token, so the launcher can print it once. The store keeps only its sha-256.
   */
  adminToken?: string
}

// ---- the verbs --------------------------------------------------------------------------------

/**
 * Each verb's input schema, with its output type beside it. The store parses every input with
 * its schema (`parseStoreInput`) before any work; callers are typed by `z.input` of the same.
 */
export const STORE_INPUTS = {
  /** Creates the instance on first call. `adminToken` (from config) replaces the stored token's hash. */
  'instance.get': z.object({ adminToken: OptionalText(1_024) }),
  /** Operator auth: constant-time check of a bearer token against the stored hash. */
  'instance.verifyAdminToken': z.object({ token: OptionalText(1_024) }),
  'upstream.create': CreateUpstreamInputSchema,
  /** Non-audited fields: lastError, remoteRequestId, withdrawalOwed. */
  'upstream.patch': z.object({
    id: Id,
    lastError: z.string().max(4_096).nullable().optional(),
    remoteRequestId: z.string().max(4_096).nullable().optional(),
    withdrawalOwed: z.boolean().optional(),
  }),
  'upstream.get': ById,
  'upstream.list': StatusFilter,
  /** The secret for the bridge's MQTT password (supervisor only). */
  'upstream.credentials': ById,
  'request.create': CreateRequestInputSchema,
  'request.get': ById,
  'request.list': StatusFilter,
  /**
   * Handshake API: the stored sha-256 hex of a request's secret, whatever its state, so the
   * downstream's `Bearer <secret>` can be checked (in constant time, by the caller) on status
   * polls and on withdrawal. Throws not_found for an unknown id.
   */
  'request.secretHash': ById,
  /** Gateway: check a bridge's MQTT credentials; returns its grants when accepted. */
  'request.authenticate': z.object({ instanceId: Id, secret: z.unknown() }),
  event: SendEventInputSchema,
  log: MachineRef.extend({ after: Count, limit: Count }),
  /** All machines' transitions in commit order, for SSE resumption (`Last-Event-ID`). */
  'log.global': z.object({ after: Count, limit: Count }),
  replay: MachineRef.extend({ to: Count }),
  verify: MachineRef,
} satisfies Record<string, z.ZodType>

interface StoreOutputs {
  'instance.get': InstanceInfo
  'instance.verifyAdminToken': { ok: boolean }
  'upstream.create': Upstream
  'upstream.patch': Upstream
  'upstream.get': Upstream
  'upstream.list': Upstream[]
  'upstream.credentials': { username: string | null; password: string | null }
  'request.create': { request: IncomingRequest; created: boolean }
  'request.get': IncomingRequest
  'request.list': IncomingRequest[]
  'request.secretHash': { secretHash: string }
  'request.authenticate': { ok: boolean; requestId?: string; grants?: string[] }
  event: TransitionRecord
  log: Page<TransitionRecord>
  'log.global': Page<TransitionRecord & { globalSeq: number }>
  replay: ReplayResult
  verify: VerifyResult
}

export type StoreVerb = keyof typeof STORE_INPUTS
/** Request/response pairs, by verb: `in` is what a caller sends, `out` what it gets back. */
export type StoreApi = {
  [V in StoreVerb]: { in: z.input<(typeof STORE_INPUTS)[V]>; out: StoreOutputs[V] }
}
/** What a handler receives: the input after its schema parsed it (defaults filled, values normalized). */
export type StoreInput<V extends StoreVerb> = z.output<(typeof STORE_INPUTS)[V]>

/** `'event.bindings[0].source' namespace must not …` for each issue: the message names the key. */
export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const key = issue.path.reduce<string>(
        (at, part) =>
          typeof part === 'number' ? `${at}[${part}]` : at ? `${at}.${String(part)}` : String(part),
        ''
      )
      return key ? `'${key}' ${issue.message}` : issue.message
    })
    .join('; ')
}
