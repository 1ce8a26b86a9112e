import {
  GRANT_ALL,
  MACHINES,
  namespaceProblem,
  type Binding,
  type MachineKind,
} from '../../machines/index.ts'
import { ValidationError } from '../common/errors.ts'
import type {
  CreateRequestInput,
  CreateUpstreamInput,
  EventActor,
  SendEventInput,
  TlsOptions,
} from './api.ts'

const MAX_EVENT_BYTES = 64 * 1_024 // 64 KiB: an event is a few bindings, not a payload
const MAX_BINDINGS = 1_000
const MAX_ID_CHARS = 128
const ACTOR_KINDS = new Set(['operator', 'remote', 'system'])
const HOST_PROTOCOLS = new Set(['mqtt:', 'mqtts:', 'ws:', 'wss:'])
const SECRET_HASH = /^[0-9a-f]{64}$/i
// Lenient on purpose: the `UB_xxxxxx` shape is what we make, but an instance ID is only a name
// (the MQTT username), and MQTT usernames are UTF-8 strings.
const INSTANCE_ID = /^[A-Za-z0-9_.-]{1,64}$/

const fail = (message: string, details?: unknown): never => {
  throw new ValidationError(message, details)
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

export function requireObject(input: unknown, what = 'input'): Record<string, unknown> {
  if (!isObject(input)) fail(`${what} must be an object`)
  return input as Record<string, unknown>
}

export function requireId(input: unknown, key = 'id'): string {
  const id = isObject(input) ? input[key] : undefined
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_CHARS)
    fail(`'${key}' must be a non-empty string of at most ${MAX_ID_CHARS} characters`)
  return id as string
}

export function requireMachine(value: unknown): MachineKind {
  if (typeof value !== 'string' || !Object.hasOwn(MACHINES, value))
    fail(`'machine' must be one of ${Object.keys(MACHINES).join(', ')}`)
  return value as MachineKind
}

export function requireActor(value: unknown): EventActor {
  if (!isObject(value) || typeof value.kind !== 'string' || !ACTOR_KINDS.has(value.kind))
    return fail("'actor.kind' must be one of operator, remote, system")
  const actor: EventActor = { kind: value.kind as EventActor['kind'] }
  for (const key of ['id', 'ip'] as const) {
    const v = value[key]
    if (v === undefined || v === null) continue
    if (typeof v !== 'string' || v.length > MAX_ID_CHARS)
      fail(`'actor.${key}' must be a short string`)
    actor[key] = v as string
  }
  return actor
}

/** jsonb refuses `\u0000` (SQLSTATE 22P05); say so as a bad request rather than a storage error. */
function requireStorableJson(value: unknown, what: string): void {
  const text = JSON.stringify(value)
  if (text.length > MAX_EVENT_BYTES) fail(`${what} is larger than ${MAX_EVENT_BYTES} bytes`)
  if (text.includes('\\u0000')) fail(`${what} must not contain NUL characters`)
}

function requireNamespaces(
  value: unknown,
  key: string,
  { allowAll }: { allowAll: boolean }
): string[] {
  if (!Array.isArray(value)) return fail(`'${key}' must be a list of namespaces`)
  return value.map((ns, i) => {
    if (allowAll && ns === GRANT_ALL) return ns
    const problem = namespaceProblem(ns)
    if (problem) fail(`'${key}[${i}]' ${problem}`, { key: `${key}[${i}]`, problem })
    return ns as string
  })
}

export function requireBindings(value: unknown, key = 'event.bindings'): Binding[] {
  if (!Array.isArray(value)) return fail(`'${key}' must be a list of {source, target}`)
  if (value.length > MAX_BINDINGS) fail(`'${key}' holds more than ${MAX_BINDINGS} bindings`)
  const seen = new Set<string>()
  return value.map((b, i) => {
    if (!isObject(b)) return fail(`'${key}[${i}]' must be {source, target}`)
    for (const side of ['source', 'target'] as const) {
      const problem = namespaceProblem(b[side])
      if (problem)
        fail(`'${key}[${i}].${side}' ${problem}`, { key: `${key}[${i}].${side}`, problem })
    }
    const source = b.source as string
    if (seen.has(source))
      fail(`'${key}[${i}].source' repeats '${source}'`, { key: `${key}[${i}].source` })
    seen.add(source)
    return { source, target: b.target as string }
  })
}

/** A well-formed event the machine knows, with its payload normalized. */
export function requireEvent(input: SendEventInput): SendEventInput {
  const body = requireObject(input)
  const machine = requireMachine(body.machine)
  const id = requireId(body)
  const actor = requireActor(body.actor)
  const event = body.event
  if (!isObject(event) || typeof event.type !== 'string')
    return fail("'event' must be an object with a string 'type'")
  if (!MACHINES[machine].eventTypes.includes(event.type))
    fail(`unknown ${machine} event type '${event.type}'`, { type: event.type })
  const clean: SendEventInput['event'] = { ...event, type: event.type }
  if (event.type === 'upstream.bindings.set') clean.bindings = requireBindings(event.bindings)
  if (
    (event.type === 'upstream.approve' || event.type === 'request.accept') &&
    event.grants !== undefined
  )
    clean.grants = requireNamespaces(event.grants, 'event.grants', { allowAll: true })
  requireStorableJson(clean, "'event'")
  return { machine, id, actor, event: clean }
}

function optionalString(
  body: Record<string, unknown>,
  key: string,
  max = 4_096
): string | undefined {
  const v = body[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || v.length > max || v.includes('\u0000'))
    fail(`'${key}' must be a string of at most ${max} characters`)
  return v as string
}

function requirePort(value: unknown, key: string): number {
  if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 65_535)
    fail(`'${key}' must be a port number (1–65535)`)
  return value as number
}

export function requireCreateUpstream(input: unknown): CreateUpstreamInput {
  const body = requireObject(input)
  const kind = body.kind ?? 'uns'
  if (kind !== 'uns' && kind !== 'mqtt') fail("'kind' must be 'uns' or 'mqtt'")
  const host = optionalString(body, 'host', 2_048)
  let url: URL | undefined
  try {
    url = host ? new URL(host) : undefined
  } catch {
    // Reported just below, with the key.
  }
  if (!url || !HOST_PROTOCOLS.has(url.protocol) || !url.hostname)
    fail("'host' must be a URL with protocol mqtt, mqtts, ws or wss")
  let tls: TlsOptions | undefined
  if (body.tls !== undefined && body.tls !== null) {
    const t = requireObject(body.tls, "'tls'")
    tls = {}
    for (const key of ['ca', 'cert', 'key', 'servername'] as const) {
      const v = optionalString(t, key, 64 * 1_024)
      if (v !== undefined) tls[key] = v
    }
    if (t.rejectUnauthorized !== undefined) {
      if (typeof t.rejectUnauthorized !== 'boolean')
        fail("'tls.rejectUnauthorized' must be a boolean")
      tls.rejectUnauthorized = t.rejectUnauthorized as boolean
    }
  }
  const out: CreateUpstreamInput = {
    kind: kind as 'uns' | 'mqtt',
    host: host as string,
    brokerPort: requirePort(body.brokerPort, 'brokerPort'),
    httpPort: requirePort(body.httpPort, 'httpPort'),
    actor: requireActor(body.actor),
  }
  const secret = optionalString(body, 'secret', 1_024)
  const username = optionalString(body, 'username', 1_024)
  if (secret !== undefined) out.secret = secret
  if (username !== undefined) out.username = username
  if (tls) out.tls = tls
  return out
}

export function requireCreateRequest(input: unknown): CreateRequestInput {
  const body = requireObject(input)
  if (typeof body.instanceId !== 'string' || !INSTANCE_ID.test(body.instanceId))
    fail("'instanceId' must be 1–64 letters, digits, '_', '.' or '-'")
  if (typeof body.secretHash !== 'string' || !SECRET_HASH.test(body.secretHash))
    fail("'secretHash' must be a sha-256 digest in hex (64 characters)")
  const sourceIp = optionalString(body, 'sourceIp', 64)
  if (!sourceIp) fail("'sourceIp' must be a non-empty string")
  return {
    instanceId: body.instanceId as string,
    secretHash: (body.secretHash as string).toLowerCase(),
    sourceIp: sourceIp as string,
    actor: requireActor(body.actor),
  }
}

export { isObject, optionalString }
