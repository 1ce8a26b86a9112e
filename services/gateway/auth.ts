import { isWithinAny } from '../../machines/namespace.ts'
import { BRIDGE_CLIENT_PREFIX } from '../contracts/links.ts'
import { filterToSubjects } from '../common/bus/topic.ts'
import { topicKey } from './codec.ts'
import { subjectOfTopic } from './subject.ts'

/** Who a connected client is; decides what it may publish and subscribe to. */
export type Principal =
  | { kind: 'anonymous' }
  | { kind: 'user'; username: string }
  /** The fabric's own bridge supervisor: full rights, no-local. */
  | { kind: 'internal'; username: string }
  /** A downstream's bridge: username = its instance id, rights = its request's grants. */
  | { kind: 'bridge'; username: string; requestId: string | undefined; grants: string[] }

export type AnonymousPolicy = 'loopback' | 'always' | 'never'

export interface LocalUser {
  username: string
  passwordHash: string
}

/** A CONNACK return code to refuse with (3.1.1 §3.2.2.3). */
export class ConnackError extends Error {
  readonly returnCode: 2 | 3 | 4 | 5
  constructor(returnCode: 2 | 3 | 4 | 5, message: string) {
    super(message)
    this.name = 'ConnackError'
    this.returnCode = returnCode
  }
}

// NATS caps a control line at 4 KB (ARCHITECTURE.md §13); an encoded topic past this would make
// the server cut the gateway's whole bus connection.
export const MAX_TOPIC_BYTES = 3_072

export { isLoopback } from './client-address.ts'
// The authenticator lives in its own module; the broker and hooks know it by this type.
export type { Authenticator } from './authenticator.ts'

// A topic is judged by what NATS will see: its subject (escapes make up to 3 bytes of one) and its
// retained message's KV key (a base64 token per level, 2 bytes or more per 1-byte level). Past
// NATS's 4 KB control line the server closes the gateway's whole bus connection, so each must
// stay under MAX_TOPIC_BYTES; a topic of at most CERTAINLY_FITS_BYTES always does (×3 at worst).
const CERTAINLY_FITS_BYTES = 1_000

/** Is each name NATS will see for `text` within MAX_TOPIC_BYTES? `names` runs only near the limit. */
function fitsTheBusAs(text: string, names: (text: string) => string[]): boolean {
  const bytes = Buffer.byteLength(text)
  if (bytes <= CERTAINLY_FITS_BYTES) return true
  if (bytes > MAX_TOPIC_BYTES) return false
  return names(text).every((name) => Buffer.byteLength(name) <= MAX_TOPIC_BYTES)
}

// Module-level, so a publish allocates no closure to ask.
const topicNames = (topic: string): string[] => [subjectOfTopic(topic), topicKey(topic)]

/** Does `topic` stay within MAX_TOPIC_BYTES as a bus subject and as a KV key? */
export const fitsTheBus = (topic: string): boolean => fitsTheBusAs(topic, topicNames)

/** Does every subject `filter` subscribes stay within MAX_TOPIC_BYTES? */
const filterFitsTheBus = (filter: string): boolean => fitsTheBusAs(filter, filterToSubjects)

/** A client id becomes a KV key token (base64, 4/3 its size) in several buckets' keys. */
export const MAX_CLIENT_ID_BYTES = 1_024

/**
 * May this principal publish to `topic`? `$` topics are the server's [MQTT-4.7.2-1]; a bridge
 * stays inside its granted namespaces.
 */
export function mayPublish(principal: Principal, topic: string): boolean {
  if (topic.startsWith('$') || !fitsTheBus(topic)) return false
  return principal.kind !== 'bridge' || isWithinAny(topic, principal.grants)
}

/**
 * Why `principal` may not use `clientId`, or null. A principal's client ids live in its own
 * namespace, so no one can resume, drain or kick another principal's session: a bridge uses its
 * instance id or `<instance id>-…` (what our bridges send), and `ub-bridge-…` is the fabric's own
 * bridge sessions, where a backlog waits. An id the broker made up (empty in the CONNECT) is
 * unique and always fine.
 */
export function clientIdProblem(
  principal: Principal,
  clientId: string,
  madeUp: boolean
): string | null {
  if (Buffer.byteLength(clientId) > MAX_CLIENT_ID_BYTES)
    return `a client id must be at most ${MAX_CLIENT_ID_BYTES} bytes`
  if (madeUp || principal.kind === 'internal') return null
  if (principal.kind === 'bridge') {
    const own = principal.username
    return clientId === own || clientId.startsWith(own + '-')
      ? null
      : `a bridge's client id must be its instance id or start with '${own}-'`
  }
  return clientId.startsWith(BRIDGE_CLIENT_PREFIX)
    ? `client ids starting with '${BRIDGE_CLIENT_PREFIX}' are the fabric's bridge sessions`
    : null
}

/**
 * May this principal receive a message on `topic`? Checked on every delivery, whatever path the
 * message took (live, a resumed session's queue, a retained message, a will): a subscription
 * that was stored or restored is never a right by itself.
 */
export function mayReceive(principal: Principal, topic: string): boolean {
  return principal.kind !== 'bridge' || isWithinAny(topic, principal.grants)
}

/**
 * May this principal subscribe to `filter`? For a namespace without wildcards, every topic a
 * filter matches lies inside it exactly when the filter's text does (`a/#`, `a/+/b` inside `a`),
 * so the topic check applies to filters too; `#` as a grant excludes `$` filters.
 */
export function maySubscribe(principal: Principal, filter: string): boolean {
  if (!filterFitsTheBus(filter)) return false
  if (principal.kind !== 'bridge') return true
  return !filter.startsWith('$') && isWithinAny(filter, principal.grants)
}
