/**
 * The store verbs of the thin-edge.io digital twin (`te.entity.*`): the gateways feed it from
 * the `te/` messages they observe, the HTTP API reads it in thin-edge's entity-API shape
 * (`@topic-id`, `@type`, `@parent`, `@id`, `@health`), with health, last measurement time, open
 * alarms and in-flight commands beside them. Spread into STORE_INPUTS / STORE_OUTPUTS.
 */
import { z } from 'zod'
import { INSTANCE_ID_PATTERN } from '../common/instance-id.ts'
import { namespaceProblem } from '../../machines/namespace.ts'

/** At most this many entities are kept; past it `te.entity.upsert` of a new one is refused. */
export const TE_MAX_ENTITIES = 100_000
/** The store's code for a registration refused because TE_MAX_ENTITIES are kept. */
export const TE_ENTITIES_FULL = 'te_entities_full'
/** Open alarms and in-flight commands kept per entity; more are not recorded. */
export const TE_MAX_ALARMS = 64
export const TE_MAX_COMMANDS = 64
export const TE_MAX_TWIN_FRAGMENTS = 256
export const TE_LIST_MAX = 1_000
/** A list page stops before its JSON passes this, so it fits one bus message. */
export const TE_LIST_MAX_BYTES = 512 * 1_024
const MAX_VALUE_BYTES = 16 * 1_024

export const TE_ENTITY_TYPES = ['device', 'child-device', 'service'] as const

/** Mounts one downstream may declare; past it the rest are refused (ub_te_mounts_refused_total). */
export const TE_MAX_MOUNTS = 16
/** Downstreams' mounts `te.mount.list` answers at most (one row per Accepted downstream). */
export const TE_MOUNTS_LIST_MAX = 10_000
/** Between a cursor's downstream and topic id: `#` is in no topic id, `+`/`#` in no instance id. */
export const TE_CURSOR_SEPARATOR = '#'

/** Whose entity: '' (or absent) this instance's own, else a downstream's instance id. */
export const TeDownstream = z
  .string()
  .refine((s) => s === '' || INSTANCE_ID_PATTERN.test(s), 'must be an instance id or empty')

/**
 * Where a downstream mounts (part of) its `te/` tree here: `<target>/<rest>` in this instance's
 * namespace is `<its teRoot>[/<path>]/<rest>` on the downstream (a binding from its teRoot or a
 * subtree of it, direction out or both).
 */
export const TeMountSchema = z.object({
  target: z.string().superRefine((t, ctx) => {
    const problem = namespaceProblem(t)
    if (problem) ctx.addIssue({ code: 'custom', message: `target ${problem}` })
    if (/[+#]/.test(t)) ctx.addIssue({ code: 'custom', message: 'target has no wildcards' })
  }),
  /** '' for the whole root, else up to 3 identifier segments (`device`, `device/child01`). */
  path: z
    .string()
    .max(1_024)
    .refine((p) => p === '' || (p.split('/').length <= 3 && !/[+#\u0000]/.test(p)), {
      message: 'must be empty or up to 3 identifier segments without wildcards',
    }),
})
export type TeMount = z.infer<typeof TeMountSchema>

const noNul = (s: string) => !s.includes('\u0000')
const Text = (max: number) => z.string().max(max).refine(noNul, 'must not contain NUL characters')

/**
 * An entity topic id: four `/`-separated segments, no wildcards. A shorter one is padded with
 * empty segments, as thin-edge pads `device/child0` to `device/child0//`.
 */
export function normalizeTopicId(value: string): string | null {
  const given = value.split('/')
  if (given.length > 4 || given[0] === '') return null
  if (value.length > 1_024 || !noNul(value) || /[+#]/.test(value)) return null
  return [...given, '', '', ''].slice(0, 4).join('/')
}

export const TeTopicId = z.string().transform((value, ctx) => {
  const id = normalizeTopicId(value)
  if (id !== null) return id
  ctx.addIssue({ code: 'custom', message: 'must be an entity topic id such as device/child01//' })
  return z.NEVER
})

/** A JSON value small enough to keep, without NUL (jsonb refuses it). */
const JsonValue = z.unknown().superRefine((value, ctx) => {
  const text = JSON.stringify(value) ?? ''
  if (text.length > MAX_VALUE_BYTES)
    ctx.addIssue({ code: 'custom', message: `is larger than ${MAX_VALUE_BYTES} bytes` })
  if (text.includes('\\u0000'))
    ctx.addIssue({ code: 'custom', message: 'must not contain NUL characters' })
})

const Timestamp = z.string().max(64)

export const TeAlarmSchema = z.object({
  severity: Text(64).nullable(),
  text: Text(1_024).nullable(),
  time: Timestamp.nullable(),
})
export type TeAlarm = z.infer<typeof TeAlarmSchema>

const Who = { downstream: TeDownstream.optional() }

/** One observation of an entity, by what the gateway saw (of a downstream's: `downstream`). */
export const TeObservationSchema = z.discriminatedUnion('kind', [
  /** `status/health`: its `status`; null clears it. */
  z.object({ kind: z.literal('health'), topicId: TeTopicId, status: Text(64).nullable(), ...Who }),
  /** A measurement arrived at `at` (ISO 8601); the later time wins. */
  z.object({ kind: z.literal('measurement'), topicId: TeTopicId, at: z.iso.datetime(), ...Who }),
  /** `a/<type>`: raised (alarm) or cleared (null). */
  z.object({
    kind: z.literal('alarm'),
    topicId: TeTopicId,
    alarmType: Text(256),
    alarm: TeAlarmSchema.nullable(),
    ...Who,
  }),
  /** `cmd/<operation>/<id>`: its status; null once cleared. */
  z.object({
    kind: z.literal('command'),
    topicId: TeTopicId,
    command: Text(512),
    status: Text(64).nullable(),
    ...Who,
  }),
  /** `twin/<fragment>`: its value; null removes it. */
  z.object({
    kind: z.literal('twin'),
    topicId: TeTopicId,
    fragment: Text(256),
    value: JsonValue,
    ...Who,
  }),
])
export type TeObservation = z.input<typeof TeObservationSchema>

export const TeEntitySchema = z.object({
  '@topic-id': z.string(),
  '@type': z.enum(TE_ENTITY_TYPES),
  '@parent': z.string().optional(),
  '@id': z.string().optional(),
  '@health': z.string().optional(),
  health: z.string().nullable().describe('status of the last status/health message'),
  lastMeasurementAt: z.string().nullable().describe('ISO 8601: when a measurement last came'),
  alarms: z.record(z.string(), TeAlarmSchema).describe('open alarms by type'),
  commands: z
    .record(z.string(), z.string())
    .describe("commands not cleared yet, by '<operation>/<id>': their status"),
  registeredAt: z.string(),
  updatedAt: z.string(),
  downstream: z.string().optional().describe("a downstream's entity: that instance's id"),
  topic: z.string().optional().describe("a downstream's entity: the topic it is reached at here"),
})
export type TeEntity = z.infer<typeof TeEntitySchema>

export const TeEntityWithTwinSchema = TeEntitySchema.extend({
  twin: z.record(z.string(), z.unknown()),
})
export type TeEntityWithTwin = z.infer<typeof TeEntityWithTwinSchema>

export const TE_ENTITY_INPUTS = {
  /** A registration message: creates the entity or replaces its metadata; twin keys merge. */
  'te.entity.upsert': z.object({
    topicId: TeTopicId,
    ...Who,
    /** A downstream's entity: its full topic here, under the mount it came through. */
    topic: Text(2_048).optional(),
    type: z.enum(TE_ENTITY_TYPES),
    parent: TeTopicId.nullable(),
    externalId: Text(1_024).optional(),
    healthEndpoint: TeTopicId.optional(),
    twin: z.record(Text(256), z.unknown()).superRefine((twin, ctx) => {
      if (Object.keys(twin).length > TE_MAX_TWIN_FRAGMENTS)
        ctx.addIssue({ code: 'custom', message: `has more than ${TE_MAX_TWIN_FRAGMENTS} keys` })
      const check = JsonValue.safeParse(twin)
      if (!check.success) ctx.addIssue({ code: 'custom', message: check.error.issues[0]!.message })
    }),
  }),
  /** A deregistration: the entity and, transitively, its descendants. */
  'te.entity.delete': z.object({ topicId: TeTopicId, ...Who }),
  'te.entity.observe': TeObservationSchema,
  /** thin-edge's filters: `root` (it and its descendants) or `parent` (its children), `type`. */
  'te.entity.list': z
    .object({
      root: TeTopicId.optional(),
      parent: TeTopicId.optional(),
      type: z.enum(TE_ENTITY_TYPES).optional(),
      /** Absent: every entity, ours first; '': ours only; an instance id: that downstream's. */
      downstream: TeDownstream.optional(),
      limit: z.number().int().min(1).max(TE_LIST_MAX).optional(),
      /** The `next` of the page before: `[<downstream>#]<topic id>`, list after it. */
      cursor: Text(1_024).optional(),
    })
    .refine((q) => !(q.root && q.parent), 'root and parent can not be used together'),
  'te.entity.get': z.object({ topicId: TeTopicId, ...Who }),
  /**
   * A downstream's mounts, as its topology exchange declared them: replaces the ones it had.
   * Kept only while its request is Accepted and each inside its grants; an entity under a mount
   * that went away leaves the twin.
   */
  'te.mount.set': z.object({
    requestId: z.string().min(1).max(256),
    mounts: z.array(TeMountSchema).max(TE_MAX_MOUNTS),
  }),
  /** Every downstream's mounts (what the gateways recognise mirrored `te/` messages by). */
  'te.mount.list': z.object({}),
} satisfies Record<string, z.ZodType>

export const TE_ENTITY_OUTPUTS = {
  'te.entity.upsert': z.object({ created: z.boolean() }),
  'te.entity.delete': z.object({ deleted: z.array(z.string()) }),
  'te.entity.observe': z.object({ found: z.boolean() }),
  'te.entity.list': z.object({ items: z.array(TeEntitySchema), next: z.string().nullable() }),
  'te.entity.get': TeEntityWithTwinSchema,
  'te.mount.set': z.object({
    mounts: z.array(TeMountSchema),
    refused: z.array(z.object({ mount: TeMountSchema, reason: z.string() })),
    changed: z.boolean(),
    /** Entities that left the twin with the mounts that went away. */
    removed: z.number(),
  }),
  'te.mount.list': z.object({
    items: z.array(
      z.object({ instanceId: z.string(), requestId: z.string(), mounts: z.array(TeMountSchema) })
    ),
  }),
} satisfies Record<keyof typeof TE_ENTITY_INPUTS, z.ZodType>
