/**
 * thin-edge.io 1.x JSON payloads on the `m`, `e`, `a` and `cmd` channels, checked against its
 * documented rules so a bad message can be refused (and explained on `te/errors`) before it is
 * mirrored. Pure: no I/O.
 */
import type { TeProblem } from './te-schema.ts'

/** Unix seconds (fractions allowed) or an RFC 3339 / ISO 8601 string with a zone. */
export type TeTimestamp = number | string

type JsonObject = Record<string, unknown>

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/

export function isTeTimestamp(value: unknown): value is TeTimestamp {
  if (typeof value === 'number') return Number.isFinite(value)
  return typeof value === 'string' && RFC3339.test(value) && !Number.isNaN(Date.parse(value))
}

const TIMESTAMP_RULE = 'an RFC 3339 string or unix seconds'

function parseObject(payload: string, what: string): JsonObject | TeProblem {
  let value: unknown
  try {
    value = JSON.parse(payload)
  } catch (error) {
    return { problem: `${what} is not JSON: ${(error as Error).message}` }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { problem: `${what} must be a JSON object` }
  return value as JsonObject
}

const isProblem = (value: unknown): value is TeProblem =>
  typeof value === 'object' && value !== null && 'problem' in value

const isObject = (value: unknown): value is JsonObject =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

export interface TeMeasurement {
  time?: TeTimestamp
  /** Single values, and groups (multi-valued measurements) one level deep. */
  values: Record<string, number | Record<string, number>>
  /** Free-form context passed through uninterpreted. */
  properties?: JsonObject
}

// As thin-edge's own parser (tedge_api measurement/parser.rs) takes them: any key but `time`
// and those starting with an underscore (its docs ask for alphanumerics; its code takes `temp-1`).
function keyProblem(key: string): string | null {
  if (key.startsWith('_')) return `measurement key "${key}" must not start with an underscore`
  return null
}

function numberProblem(key: string, value: unknown): string | null {
  if (typeof value !== 'number')
    return `measurement "${key}" must be a number, got ${value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value}`
  // JSON.parse turns an over-large literal such as 1e999 into Infinity.
  return Number.isFinite(value) ? null : `measurement "${key}" is out of float64 range`
}

function parseGroup(name: string, group: JsonObject): Record<string, number> | TeProblem {
  const entries = Object.entries(group)
  if (entries.length === 0) return { problem: `group "${name}" must hold at least one measurement` }
  for (const [key, value] of entries) {
    const path = `${name}.${key}`
    if (key === 'time') return { problem: `"time" belongs at the root, not inside "${name}"` }
    if (isObject(value))
      return { problem: `"${path}" nests too deep: groups hold numbers only (one level)` }
    const problem = keyProblem(key) ?? numberProblem(path, value)
    if (problem) return { problem }
  }
  return group as Record<string, number>
}

/** A thin-edge JSON measurement (`m/<type>`): values must be numbers; only `time` may be a string. */
export function validateMeasurement(payload: string): TeMeasurement | TeProblem {
  const body = parseObject(payload, 'measurement')
  if (isProblem(body)) return body
  const measurement: TeMeasurement = { values: {} }
  for (const [key, value] of Object.entries(body)) {
    if (key === 'time') {
      if (!isTeTimestamp(value)) return { problem: `"time" must be ${TIMESTAMP_RULE}` }
      measurement.time = value
    } else if (key === 'properties') {
      if (!isObject(value)) return { problem: '"properties" must be a JSON object' }
      measurement.properties = value
    } else if (isObject(value)) {
      const problem = keyProblem(key)
      if (problem) return { problem }
      const group = parseGroup(key, value)
      if (isProblem(group)) return group
      measurement.values[key] = group
    } else {
      const problem = keyProblem(key) ?? numberProblem(key, value)
      if (problem) return { problem }
      measurement.values[key] = value as number
    }
  }
  if (Object.keys(measurement.values).length === 0)
    return { problem: 'measurement must hold at least one measurement value' }
  return measurement
}

export interface TeEvent {
  text?: string
  time?: TeTimestamp
  /** Custom fragments, forwarded as-is. */
  extras: JsonObject
}

/** `text` and `time` are checked when present; everything else is a custom fragment. */
function parseTextAndTime(body: JsonObject, what: string): TeEvent | TeProblem {
  const { text, time, ...extras } = body
  if (text !== undefined && typeof text !== 'string')
    return { problem: `${what} "text" must be a string` }
  if (time !== undefined && !isTeTimestamp(time))
    return { problem: `${what} "time" must be ${TIMESTAMP_RULE}` }
  const parsed: TeEvent = { extras }
  if (text !== undefined) parsed.text = text as string
  if (time !== undefined) parsed.time = time as TeTimestamp
  return parsed
}

/** An event (`e/<type>`); an empty payload is a valid event with neither text nor time. */
export function validateEvent(payload: string): TeEvent | TeProblem {
  if (payload === '') return { extras: {} }
  const body = parseObject(payload, 'event')
  return isProblem(body) ? body : parseTextAndTime(body, 'event')
}

/** Recommended, not enforced: thin-edge forwards any severity string. */
export const TE_ALARM_SEVERITIES = ['critical', 'major', 'minor', 'warning'] as const

export type TeAlarmMessage =
  | { action: 'clear' }
  | { action: 'raise'; severity?: string; text?: string; time?: TeTimestamp; extras: JsonObject }

/**
 * An alarm (`a/<type>`): an empty payload clears it, `{}` raises it with defaults. Both must be
 * retained, as the alarm's state is the retained message; pass `retained` to have that checked.
 */
export function validateAlarm(
  payload: string,
  options: { retained?: boolean } = {}
): TeAlarmMessage | TeProblem {
  if (options.retained === false)
    return { problem: 'alarm messages must be retained: the retained message is the alarm state' }
  if (payload === '') return { action: 'clear' }
  const body = parseObject(payload, 'alarm')
  if (isProblem(body)) return body
  const { severity, ...rest } = body
  if (severity !== undefined && typeof severity !== 'string')
    return { problem: 'alarm "severity" must be a string, e.g. "major"' }
  const parsed = parseTextAndTime(rest, 'alarm')
  if (isProblem(parsed)) return parsed
  return severity === undefined
    ? { action: 'raise', ...parsed }
    : { action: 'raise', severity: severity as string, ...parsed }
}

/** Statuses every operation shares; operations add their own between init and the end. */
export const TE_COMMAND_STATUSES = ['init', 'executing', 'successful', 'failed'] as const
const TERMINAL = new Set(['successful', 'failed'])

export type TeCommandMessage =
  /** Empty retained payload: the requester removes the finished (or abandoned) command. */
  { action: 'clear' } | { action: 'update'; status: string; reason?: string; fields: JsonObject }

/** A command state (`cmd/<operation>/<id>`); a missing `status` means `init`, as documented. */
export function validateCommandStatus(payload: string): TeCommandMessage | TeProblem {
  if (payload === '') return { action: 'clear' }
  const body = parseObject(payload, 'command')
  if (isProblem(body)) return body
  const { status = 'init', reason } = body
  if (typeof status !== 'string' || status === '')
    return { problem: 'command "status" must be a non-empty string' }
  const update: TeCommandMessage = { action: 'update', status, fields: body }
  if (typeof reason === 'string') update.reason = reason
  return update
}

/**
 * Whether a command may move from `previous` (undefined: not seen yet) to `next`. Only the
 * documented invariants are enforced: `init` is the one initial state, `successful` and `failed`
 * the only terminal ones; operation-specific states in between are free.
 */
export function checkCommandTransition(
  previous: string | undefined,
  next: string
): TeProblem | null {
  if (previous === undefined)
    return next === 'init' ? null : { problem: `a new command starts at "init", not "${next}"` }
  // A retained state is redelivered on every reconnect; seeing it again is no transition.
  if (previous === next) return null
  if (TERMINAL.has(previous))
    return { problem: `command already ended "${previous}"; it can only be cleared` }
  if (next === 'init') return { problem: `command can not return to "init" from "${previous}"` }
  return null
}
