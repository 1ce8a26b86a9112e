/**
 * thin-edge.io 1.x `te/` topic schema: `<root>/<4-segment entity id>[/<channel>]`, entity
 * registration messages, auto-registration under the default `device/<id>/service/<id>` scheme,
 * and the `<root>/errors` feedback. Pure: no I/O, so the gateway and a twin store can share it.
 * Payload validators for measurements, events, alarms and commands live in te-payloads.ts.
 */

export interface TeProblem {
  problem: string
}

export type TeEntitySegments = [string, string, string, string]

export interface TeEntity {
  /** The four identifier segments joined by `/`, e.g. `device/main//`. */
  topicId: string
  segments: TeEntitySegments
}

export type TeTelemetryKind = 'm' | 'e' | 'a'

export type TeChannel =
  /** `meta` marks the `<kind>/<type>/meta` metadata topic (units and the like), not data. */
  | { kind: TeTelemetryKind; type: string; meta: boolean }
  /** Without `id` this is the capability (command metadata) topic `cmd/<operation>`. */
  | { kind: 'cmd'; operation: string; id?: string }
  | { kind: 'twin'; fragment: string }
  /** `component` is `health` for the service health topic `status/health`. */
  | { kind: 'status'; component: string }
  | { kind: 'signal'; type: string }
  | { kind: 'config' }

export type TeChannelKind = TeChannel['kind']

export interface TeTopic {
  entity: TeEntity
  /** Absent on the entity topic itself, which carries the registration message. */
  channel?: TeChannel
}

export const MAIN_DEVICE_TOPIC_ID = 'device/main//'
export const TE_CHANNEL_KINDS: readonly TeChannelKind[] = [
  'm',
  'e',
  'a',
  'cmd',
  'twin',
  'config',
  'status',
  'signal',
]

const isProblem = (value: unknown): value is TeProblem =>
  typeof value === 'object' && value !== null && 'problem' in value

const hasWildcard = (segment: string) => segment.includes('+') || segment.includes('#')

/**
 * Where a topic sits in the schema. Null when it is not an entity topic of `root`: outside the
 * root, or thin-edge's own `<root>/errors` feed (answering errors about errors would loop).
 */
export function parseTeTopic(topic: string, root = 'te'): TeTopic | TeProblem | null {
  if (!topic.startsWith(`${root}/`)) return null
  const levels = topic.slice(root.length + 1).split('/')
  if (levels.length === 1 && levels[0] === 'errors') return null
  if (levels.length < 4)
    return {
      problem: `"${topic}" has ${levels.length} identifier segment(s); an entity identifier has 4, e.g. ${root}/${MAIN_DEVICE_TOPIC_ID}`,
    }
  if (levels.some(hasWildcard))
    return { problem: `"${topic}" contains a wildcard; only topic names can be parsed` }
  const segments = levels.slice(0, 4) as TeEntitySegments
  const entity: TeEntity = { topicId: segments.join('/'), segments }
  if (levels.length === 4) return { entity }
  const channel = parseChannel(levels.slice(4))
  if (isProblem(channel)) return { problem: `"${topic}": ${channel.problem}` }
  return { entity, channel }
}

/** The channel part of a topic: the category decides how many levels follow and what they mean. */
export function parseChannel(levels: string[]): TeChannel | TeProblem {
  const [category = '', first, second] = levels
  const count = levels.length - 1 // levels after the category
  switch (category) {
    case 'm':
    case 'e':
    case 'a':
      // An empty type is allowed (docs: `te/device/main///m/`), so only the level count matters.
      if (count === 1) return { kind: category, type: first!, meta: false }
      if (count === 2 && second === 'meta') return { kind: category, type: first!, meta: true }
      return { problem: `"${category}" takes <type> or <type>/meta after it` }
    case 'cmd':
      if (count < 1 || count > 2) return { problem: '"cmd" takes <operation>[/<command id>]' }
      if (!first) return { problem: 'command operation is empty' }
      if (count === 1) return { kind: 'cmd', operation: first }
      // An empty id would be a request no one can tell apart from the capability topic.
      if (!second) return { problem: 'command id is empty' }
      return { kind: 'cmd', operation: first, id: second }
    case 'twin':
      return count === 1 && first
        ? { kind: 'twin', fragment: first }
        : { problem: '"twin" takes exactly one non-empty <fragment>' }
    case 'status':
      return count === 1 && first
        ? { kind: 'status', component: first }
        : { problem: '"status" takes exactly one non-empty <component>, e.g. status/health' }
    case 'signal':
      return count === 1 && first
        ? { kind: 'signal', type: first }
        : { problem: '"signal" takes exactly one non-empty <signal type>' }
    case 'config':
      return count === 0 ? { kind: 'config' } : { problem: '"config" takes no further levels' }
    default:
      return {
        problem: `unknown channel category "${category}" (expected one of ${TE_CHANNEL_KINDS.join(', ')})`,
      }
  }
}

/**
 * An entity topic id as written in `@parent` / `@health`. Like thin-edge, a shorter id is padded
 * with empty segments: its own docs write `"@parent": "device/child0"` for `device/child0//`.
 */
export function parseEntityTopicId(topicId: string): TeEntity | TeProblem {
  const given = topicId.split('/')
  if (given.length > 4) return { problem: `"${topicId}" has more than 4 segments` }
  if (given.some(hasWildcard)) return { problem: `"${topicId}" contains a wildcard` }
  const segments = [...given, '', '', ''].slice(0, 4) as TeEntitySegments
  return { topicId: segments.join('/'), segments }
}

export type TeEntityType = 'device' | 'child-device' | 'service'
const ENTITY_TYPES: readonly TeEntityType[] = ['device', 'child-device', 'service']

export interface TeRegistration {
  topicId: string
  type: TeEntityType
  /** Null only for the main device, which has no parent. */
  parent: string | null
  /** `@id`: the external id mappers use in the cloud; absent when they derive one themselves. */
  externalId?: string
  /** `@health`: topic id of the service reporting this child device's health. */
  healthEndpoint?: string
  /** Every non-reserved key; thin-edge republishes each one on `twin/<key>`. */
  twin: Record<string, unknown>
}

export type TeRegistrationMessage =
  | { action: 'register'; registration: TeRegistration }
  /** Empty retained payload: the entity and, transitively, its descendants go away. */
  | { action: 'deregister'; topicId: string }

const RESERVED_KEYS = new Set(['@type', '@parent', '@id', '@health'])

const optionalTopicId = (
  value: unknown,
  key: string
): { topicId: string | undefined } | TeProblem => {
  if (value === undefined) return { topicId: undefined }
  if (typeof value !== 'string') return { problem: `${key} must be a topic id string` }
  const parsed = parseEntityTopicId(value)
  return isProblem(parsed) ? { problem: `${key}: ${parsed.problem}` } : parsed
}

/**
 * The registration message retained on an entity topic. Parent-existence and cycle checks need
 * the entity store, so they are left to it; everything decidable from one message is checked here.
 */
export function parseRegistration(
  topicId: string,
  payload: string,
  mainDeviceTopicId = MAIN_DEVICE_TOPIC_ID
): TeRegistrationMessage | TeProblem {
  const entity = parseEntityTopicId(topicId)
  if (isProblem(entity)) return entity
  const id = entity.topicId
  if (payload === '') return { action: 'deregister', topicId: id }
  let body: unknown
  try {
    body = JSON.parse(payload)
  } catch (error) {
    return { problem: `registration of ${id} is not JSON: ${(error as Error).message}` }
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    return { problem: `registration of ${id} must be a JSON object` }
  const fields = body as Record<string, unknown>

  const type = fields['@type']
  if (!ENTITY_TYPES.includes(type as TeEntityType))
    return {
      problem: `registration of ${id} needs "@type" set to ${ENTITY_TYPES.map((t) => `"${t}"`).join(', ')}, got ${JSON.stringify(type)}`,
    }
  const entityType = type as TeEntityType
  const isMain = id === mainDeviceTopicId
  if (entityType === 'device' && !isMain)
    return { problem: `"@type": "device" is reserved for the main device ${mainDeviceTopicId}` }
  if (entityType !== 'device' && isMain)
    return { problem: `${id} is the main device; its "@type" is "device"` }

  const externalId = fields['@id']
  if (externalId !== undefined && (typeof externalId !== 'string' || externalId === ''))
    return { problem: `"@id" of ${id} must be a non-empty string` }

  const parent = optionalTopicId(fields['@parent'], '"@parent"')
  if (isProblem(parent)) return parent
  if (parent.topicId !== undefined && isMain)
    return { problem: 'the main device can not have a "@parent"' }
  if (parent.topicId === id) return { problem: `${id} can not be its own "@parent"` }

  const health = optionalTopicId(fields['@health'], '"@health"')
  if (isProblem(health)) return health
  if (health.topicId !== undefined && entityType !== 'child-device')
    return { problem: '"@health" is only valid for child-device entities' }

  const twin = Object.fromEntries(Object.entries(fields).filter(([k]) => !RESERVED_KEYS.has(k)))
  const registration: TeRegistration = {
    topicId: id,
    type: entityType,
    parent: parent.topicId ?? defaultParent(entity, entityType, mainDeviceTopicId),
    twin,
  }
  if (externalId !== undefined) registration.externalId = externalId as string
  if (health.topicId !== undefined) registration.healthEndpoint = health.topicId
  return { action: 'register', registration }
}

/**
 * Parent when `@parent` is absent: child devices hang off the main device; a service belongs to
 * the device its default-scheme topic names, else (custom scheme) to the main device.
 */
function defaultParent(entity: TeEntity, type: TeEntityType, main: string): string | null {
  if (type === 'device') return null
  const [first, device, third] = entity.segments
  if (type === 'service' && first === 'device' && device && third === 'service')
    return `device/${device}//`
  return main
}

/**
 * What thin-edge registers on its own when an unknown entity publishes non-registration data
 * (with a non-empty payload) under the default topic scheme: the child device, then its service,
 * parents first. Empty for the main device (pre-registered); null outside the default scheme,
 * where only explicit registration applies.
 */
export function autoRegistration(topicId: string): TeRegistration[] | null {
  const entity = parseEntityTopicId(topicId)
  if (isProblem(entity)) return null
  const [first, device, third, service] = entity.segments
  if (first !== 'device' || !device) return null
  const deviceId = `device/${device}//`
  const deviceRegistrations: TeRegistration[] =
    deviceId === MAIN_DEVICE_TOPIC_ID
      ? []
      : [
          {
            topicId: deviceId,
            type: 'child-device',
            parent: MAIN_DEVICE_TOPIC_ID,
            twin: { name: device },
          },
        ]
  if (third === '' && service === '') return deviceRegistrations
  if (third !== 'service' || !service) return null
  return [
    ...deviceRegistrations,
    { topicId: entity.topicId, type: 'service', parent: deviceId, twin: { name: service } },
  ]
}

/**
 * The message to publish on `<root>/errors` about a refused message. thin-edge documents that
 * feed as verbose free text, for debugging only and not for automation, so this is text rather
 * than JSON, naming the offending topic first.
 */
export function errorMessage(
  topic: string,
  problem: TeProblem | string,
  root = 'te'
): { topic: string; payload: string } {
  const reason = typeof problem === 'string' ? problem : problem.problem
  return { topic: `${root}/errors`, payload: `Invalid message on ${topic}: ${reason}` }
}

export { isProblem as isTeProblem }

// One import site for the whole `te/` API: payload checks live next door only for size.
export * from './te-payloads.ts'
