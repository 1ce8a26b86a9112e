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
import { MACHINES, type MachineKind } from '../../machines/index.ts'
import {
  ActorSchema,
  dropNull,
  Grant,
  Id,
  InstanceId,
  BindingsSchema,
  HostUrl,
  Port,
  RequestKey,
  Retry,
  SecretHash,
  TlsSchema,
} from './values.ts'
import { EditUpstreamInputSchema, PatchUpstreamInputSchema, editResultOf } from './upstream-edit.ts'
import { TE_ENTITY_INPUTS, TE_ENTITY_OUTPUTS } from './te-entities.ts'

export * from './values.ts'
export * from './te-entities.ts'

export const STORE_QUEUE = 'binding-store'
export const storeSubject = (verb: StoreVerb): string => `store.${verb}`
export const transitionSubject = (machine: MachineKind | '*', id: string): string =>
  `evt.${machine}.${id}.transition`
/** All transitions of all machines: what SSE and the supervisor listen to. */
export const ALL_TRANSITIONS = 'evt.*.*.transition'

const MAX_EVENT_BYTES = 64 * 1_024 // 64 KiB: an event is a few bindings, not a payload

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
  requestKey: RequestKey,
  retry: Retry,
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

/** Bounds on live Pending requests, checked with the insert (README.md, Limits). */
export const PendingLimitsSchema = z.object({
  perInstance: z.number().int().min(1),
  perNetwork: z.number().int().min(1),
  total: z.number().int().min(1),
})
export type PendingLimits = z.infer<typeof PendingLimitsSchema>

export const CreateRequestInputSchema = z.object({
  instanceId: InstanceId,
  secretHash: SecretHash,
  sourceIp: z.string().min(1).max(64),
  /** The source IP's network (IPv6 /64, IPv4 address), which `limits.perNetwork` counts by. */
  sourceNetwork: z.string().min(1).max(64).optional(),
  limits: PendingLimitsSchema.optional(),
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
    requestKey: RequestKey,
    retry: Retry,
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

/** Keyset paging of a list in (createdAt, id) order; `cursor` is the `next` of the page before. */
const ListPage = StatusFilter.extend({
  limit: z.number().int().min(1).max(1_000).nullish().transform(dropNull),
  cursor: z.string().max(256).nullish().transform(dropNull),
})

/** A log row that fails the chain check, as the periodic audit reports it. */
export const BrokenRowSchema = z.object({
  globalSeq: z.number(),
  machine: MachineKindSchema,
  machineId: z.string(),
  seq: z.number(),
  problem: z.enum(['changed', 'unlinked', 'head_mismatch']),
  message: z.string(),
})
export type BrokenRow = z.infer<typeof BrokenRowSchema>

// ---- outputs ----------------------------------------------------------------------------------

/** A machine's persisted state: what `transition()` resumes from. */
export const SnapshotSchema = z.object({
  value: z.string(),
  context: z.record(z.string(), z.unknown()),
  status: z.enum(['active', 'done']),
})

const Timestamp = z.string().describe('ISO 8601')

export const UpstreamSchema = z.object({
  id: z.string(),
  kind: z.enum(['uns', 'mqtt']),
  host: z.string().describe('mqtt://host, mqtts://host, ws://host or wss://host'),
  brokerPort: z.number(),
  httpPort: z.number(),
  status: z.string(),
  active: z.boolean(),
  bindings: z.array(z.object({ source: z.string(), target: z.string() })),
  grants: z.array(z.string()),
  remoteRequestId: z
    .string()
    .nullable()
    .describe('the request id the upstream server gave us (handshake upstreams)'),
  lastError: z.string().nullable(),
  withdrawalOwed: z
    .boolean()
    .describe(
      'deleted while its server could not be reached: the request is withdrawn as soon as it answers'
    ),
  username: z.string().nullable(),
  tls: TlsSchema.nullable(),
  seq: z.number(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
})
export type Upstream = z.infer<typeof UpstreamSchema>

export const IncomingRequestSchema = z.object({
  id: z.string(),
  instanceId: z.string(),
  sourceIp: z.string(),
  status: z.string(),
  grants: z.array(z.string()),
  seq: z.number(),
  createdAt: Timestamp,
  updatedAt: Timestamp,
})
export type IncomingRequest = z.infer<typeof IncomingRequestSchema>

export const TransitionRecordSchema = z.object({
  machine: MachineKindSchema,
  machineId: z.string(),
  seq: z.number(),
  /** Position in the global commit order (what SSE sends as the event id). Set by the store. */
  globalSeq: z.number().optional(),
  event: z.looseObject({ type: z.string() }),
  actor: ActorSchema,
  from: z.string().nullable(),
  to: z.string(),
  snapshot: SnapshotSchema,
  machineVersion: z.number(),
  at: z.string(),
  prevHash: z.string(),
  hash: z.string(),
})
export type TransitionRecord = z.infer<typeof TransitionRecordSchema>

/** One page of `items`; pass `next` as `after` to get the next page (null at the end). */
export const pageOf = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), next: z.number().nullable() })
export interface Page<T> {
  items: T[]
  next: number | null
}

/** One page of a list; pass `next` as `cursor` for the next page (null at the end). */
export const cursorPageOf = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), next: z.string().nullable() })

/** A log row as `log` answers it: flagged when its own hash or its link to the row before fails. */
export const CheckedTransitionSchema = TransitionRecordSchema.extend({
  verified: z.boolean().optional(),
  problem: z.string().optional(),
})

export const VerifyResultSchema = z.object({
  ok: z.boolean(),
  rows: z.number(),
  /** The first row that was changed, inserted or deleted. */
  firstBadSeq: z.number().optional(),
  problem: z.enum(['changed', 'inserted', 'deleted', 'snapshot_mismatch']).optional(),
  message: z.string().optional(),
})
export type VerifyResult = z.infer<typeof VerifyResultSchema>

export const ReplayResultSchema = z.object({
  machine: MachineKindSchema,
  machineId: z.string(),
  to: z.number(),
  snapshot: SnapshotSchema,
  /** True when replaying the whole log reproduced the stored snapshot. */
  matchesStored: z.boolean().nullable(),
  verify: VerifyResultSchema,
})
export type ReplayResult = z.infer<typeof ReplayResultSchema>

export const InstanceInfoSchema = z.object({
  instanceId: z.string(),
  createdAt: z.string(),
  /**
   * The operator token in plain text: only in the answer that created the instance with a
   * generated token, so the launcher can print it once. The store keeps only its sha-256.
   */
  adminToken: z.string().optional(),
})
export type InstanceInfo = z.infer<typeof InstanceInfoSchema>

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
  'upstream.edit': EditUpstreamInputSchema,
  'upstream.patch': PatchUpstreamInputSchema,
  'upstream.get': ById,
  'upstream.list': StatusFilter,
  /** The secret for the bridge's MQTT password (supervisor only). */
  'upstream.credentials': ById,
  'request.create': CreateRequestInputSchema,
  'request.get': ById,
  'request.list': StatusFilter,
  /** The operator's list, paged; `instanceId` narrows it to one instance's requests. */
  'request.page': ListPage.extend({ instanceId: Id.nullish().transform(dropNull) }),
  'upstream.page': ListPage,
  /**
   * The chain check of the periodic audit: the rows after global seq `after` (up to `upTo`, or
   * to the committed horizon), each against its own hash and the row before it; `heads` also
   * checks every machine's head hash against its last log row.
   */
  'audit.check': z.object({
    after: z.number().int().min(0),
    limit: z.number().int().min(1).max(10_000),
    upTo: Count,
    heads: z.boolean().optional(),
  }),
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
  ...TE_ENTITY_INPUTS,
} satisfies Record<string, z.ZodType>

/** Each verb's output: typed by these schemas (the store's answers are not parsed again). */
export const STORE_OUTPUTS = {
  'instance.get': InstanceInfoSchema,
  'instance.verifyAdminToken': z.object({ ok: z.boolean() }),
  'upstream.create': UpstreamSchema,
  'upstream.edit': editResultOf(UpstreamSchema, TransitionRecordSchema),
  'upstream.patch': UpstreamSchema,
  'upstream.get': UpstreamSchema,
  'upstream.list': z.array(UpstreamSchema),
  'upstream.credentials': z.object({
    username: z.string().nullable(),
    password: z.string().nullable(),
  }),
  'request.create': z.object({ request: IncomingRequestSchema, created: z.boolean() }),
  'request.get': IncomingRequestSchema,
  'request.list': z.array(IncomingRequestSchema),
  'request.page': cursorPageOf(IncomingRequestSchema),
  'upstream.page': cursorPageOf(UpstreamSchema),
  'audit.check': z.object({
    checked: z.number(),
    /** The last global seq checked (null: none); the next call's `after`. */
    last: z.number().nullable(),
    broken: z.array(BrokenRowSchema),
  }),
  'request.secretHash': z.object({ secretHash: z.string() }),
  'request.authenticate': z.object({
    ok: z.boolean(),
    requestId: z.string().optional(),
    grants: z.array(z.string()).optional(),
  }),
  event: TransitionRecordSchema,
  log: pageOf(CheckedTransitionSchema),
  'log.global': pageOf(TransitionRecordSchema.required({ globalSeq: true })),
  replay: ReplayResultSchema,
  verify: VerifyResultSchema,
  ...TE_ENTITY_OUTPUTS,
} satisfies Record<StoreVerbName, z.ZodType>

type StoreVerbName = keyof typeof STORE_INPUTS
export type StoreVerb = StoreVerbName
/** Request/response pairs, by verb: `in` is what a caller sends, `out` what it gets back. */
export type StoreApi = {
  [V in StoreVerb]: {
    in: z.input<(typeof STORE_INPUTS)[V]>
    out: z.output<(typeof STORE_OUTPUTS)[V]>
  }
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
