/**
 * The bus: what the services share besides the binding store's API (ARCHITECTURE.md §7).
 * Two implementations pass one contract suite: NATS (distributed) and in-process (embedded).
 *
 * Every subject given to a Bus is relative: the bus puts `<prefix>.` in front, and bucket names
 * become `<prefix>_<bucket>`, so fabrics and test runs that share one NATS never meet.
 */
import type { BlobBucket, BlobBucketOptions } from './blobs.ts'
import { errorFromCode, toErrorBody, UbError, ValidationError } from '../errors.ts'

export type Headers = Record<string, string>

export interface BusMessage {
  /** Relative subject (prefix removed). */
  subject: string
  data: Uint8Array
  headers?: Headers
}

export interface Subscription {
  unsubscribe(): Promise<void>
}

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group. */
  queue?: string
}

export interface RequestOptions {
  timeoutMs?: number
  headers?: Headers
}

export type MessageHandler = (msg: BusMessage) => void

/** A request handler answers with bytes; a throw becomes an error reply with the error's code. */
export type RequestHandler = (msg: BusMessage) => Promise<Uint8Array> | Uint8Array

export interface KvEntry {
  key: string
  value: Uint8Array
  revision: number
  operation: 'PUT' | 'DEL'
}

export interface OldestEntry extends KvEntry {
  /** When the entry was written, ms since the epoch. */
  createdAt: number
}

export interface KvOptions {
  /** Entries older than this vanish (bucket-wide max age, as NATS 2.9 supports). */
  ttlMs?: number
}

export interface KvGetOptions {
  /**
   * Read from the stream's leader. A plain get is a direct get, which any replica may answer,
   * and a replica may not hold yet a write the leader acknowledged: read-after-write is not
   * promised (nats-server 2.9 before 2.9.17 answered from a restarted replica that had not caught
   * up, nats-server#4162). For a miss that has to mean "gone".
   */
  latest?: boolean
}

export interface KvKeysOptions {
  /**
   * The keys of every message the stream holds under the filter, as its leader says, delete
   * markers included, without reading a value. Exact for keys that are only ever erased (queue
   * entries). The default listing reads each key's last value through a consumer to leave out
   * deleted keys, and on nats-server 2.9.10 a purge of another key under the filter while it ran
   * moved that consumer past values it had not delivered yet: the list came back short, often
   * empty.
   */
  withDeleted?: boolean
}

export interface KvWatchOptions {
  /** Key filter with NATS wildcards (`lease.*`, `retained.>`); all keys when absent. */
  key?: string
  /** Deliver current values first (live keys only, oldest revision first), then updates. Default true. */
  includeCurrent?: boolean
}

/**
 * Both implementations behave alike where the contract suite checks them:
 * - revisions are per bucket and increase with every write (a JetStream stream sequence);
 * - a bucket opened again keeps the options it was created with (as `Kvm.create` does);
 * - `ttlMs` expiry is silent: like NATS 2.9 (no delete markers before 2.11), an expired key
 *   emits no watch event, so lease standbys must poll `get` or retry `create`.
 */
export interface KvBucket {
  /** The bucket's name on the server: `<prefix>_<bucket>`. */
  readonly name: string
  get(key: string, options?: KvGetOptions): Promise<KvEntry | null>
  /** Succeeds only if the key is absent (or deleted); otherwise throws KvConflictError. */
  create(key: string, value: Uint8Array): Promise<number>
  /** Compare-and-set on the key's revision; throws KvConflictError if it moved. */
  update(key: string, value: Uint8Array, revision: number): Promise<number>
  put(key: string, value: Uint8Array): Promise<number>
  delete(key: string): Promise<void>
  /**
   * Remove the key without leaving a delete marker: watchers see nothing, as with TTL expiry.
   * For keys written once and removed once (queue entries), whose markers would otherwise pile
   * up, one per key, until the bucket's TTL. Not for keys that other processes watch. With
   * `revision`, only that write is erased: a newer value of the key stays.
   */
  erase(key: string, revision?: number): Promise<void>
  keys(filter?: string, options?: KvKeysOptions): Promise<string[]>
  /**
   * The live entry under `filter` written first (lowest revision), with its write time: the head
   * of a queue kept one key per message (a session's oldest unsent message). Null when none.
   */
  oldest(filter: string): Promise<OldestEntry | null>
  watch(onEntry: (entry: KvEntry) => void, options?: KvWatchOptions): Promise<Subscription>
  /** Remove the bucket and everything in it (tests and teardown). */
  destroy(): Promise<void>
}

export interface Bus {
  readonly prefix: string
  readonly kind: 'in-process' | 'nats'
  publish(subject: string, data: Uint8Array, headers?: Headers): void
  /** Resolves once the server knows the interest, so a publish right after is seen. */
  subscribe(
    subject: string,
    handler: MessageHandler,
    options?: SubscribeOptions
  ): Promise<Subscription>
  /**
   * Throws NoRespondersError when nobody serves the subject, BusTimeoutError on timeout, and the
   * responder's error (as a UbError with its code) when the handler threw. The reply's `subject`
   * is the request's subject.
   */
  request(subject: string, data: Uint8Array, options?: RequestOptions): Promise<BusMessage>
  serve(subject: string, handler: RequestHandler, options?: SubscribeOptions): Promise<Subscription>
  kv(bucket: string, options?: KvOptions): Promise<KvBucket>
  /** A blob bucket (blobs.ts): `<prefix>_<bucket>` on the server, as for KV. */
  blobs(bucket: string, options?: BlobBucketOptions): Promise<BlobBucket>
  /** Round trip to the server: everything published before has been received by it. */
  flush(): Promise<void>
  /**
   * Drop the connection to the server and dial again (NATS): a connection gone silent (a
   * partition) is otherwise noticed only after minutes of missed pings. In process: nothing.
   */
  reconnect?(): Promise<void>
  /**
   * Whether a publish on `subject` now would reach a subscription other than those in `own`. Only
   * where the bus sees every subscriber (in process); absent on NATS, whose other servers' interest
   * is not known here. Lets a publisher skip encoding what nobody else would receive.
   */
  reachesBeyond?(subject: string, own: ReadonlySet<Subscription>): boolean
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000 // 5 s

const encoder = new TextEncoder()
const decoder = new TextDecoder()

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value))
}

export function decodeJson<T = unknown>(data: Uint8Array): T {
  return JSON.parse(decoder.decode(data)) as T
}

/** Every call but `close` on a closed bus fails with this, on both buses. */
export function checkOpen(closed: boolean): void {
  if (closed) throw new UbError('bus_closed', 'the bus is closed')
}

/** Error replies carry these headers (as NATS services carry Nats-Service-Error-Code). */
export const ERROR_CODE_HEADER = 'Ub-Error-Code'
export const ERROR_MESSAGE_HEADER = 'Ub-Error-Message'

/** KV bucket name on the server; JetStream allows only `[A-Za-z0-9_-]` in stream names. */
export function bucketName(prefix: string, bucket: string): string {
  return `${prefix}_${bucket}`.replace(/[^A-Za-z0-9_-]/g, '_')
}

// The NATS protocol splits on space and tab and ends lines at CR LF; a token that is exactly
// `*` or `>` is a wildcard, while `a>b` is a literal.
const SUBJECT_TOKEN = /^[^ \t\r\n.]+$/

/** Throws a ValidationError unless `subject` is valid NATS (wildcards only where allowed). */
export function validateSubject(subject: string, { wildcards = false } = {}): void {
  const tokens = subject.split('.')
  const ok = tokens.every((t, i) =>
    t === '*' || t === '>'
      ? wildcards && (t === '*' || i === tokens.length - 1)
      : SUBJECT_TOKEN.test(t)
  )
  if (!ok) throw new ValidationError(`invalid subject '${subject}'`, { subject })
}

/** Throws a ValidationError unless `key` is a valid KV key (or, with wildcards, a key filter). */
export function validateKvKey(key: string, options?: { wildcards?: boolean }): void {
  // No default options object: this runs on every KV call, several per queued message.
  if (options?.wildcards) return validateSubject(key, { wildcards: true })
  if (!isKvKey(key)) throw new ValidationError(`invalid KV key '${key}'`, { key })
}

/**
 * What the NATS KV client accepts as a key (kv.ts validateKey, `^[-/=.\w]+$` in dot-separated
 * non-empty tokens), without a regular expression: it ran 3 times per queued message (put,
 * erase, a read) and was 2.2 % of the co-located bridge path's CPU; this loop is 1.0 %.
 */
export function isKvKey(key: string): boolean {
  let tokenStart = true
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i)
    if (c === 0x2e /* . */) {
      if (tokenStart) return false // empty token
      tokenStart = true
      continue
    }
    tokenStart = false
    if (!(
      (c >= 0x61 && c <= 0x7a) || // a-z
      (c >= 0x41 && c <= 0x5a) || // A-Z
      (c >= 0x30 && c <= 0x39) || // 0-9
      c === 0x5f || // _
      c === 0x2d || // -
      c === 0x2f || // /
      c === 0x3d // =
    ))
      return false
  }
  return !tokenStart // not empty, not ending in a dot
}

/** Is `subject` matched by `pattern`? (`*` = one token, `>` = one or more trailing tokens) */
export function subjectMatches(pattern: string[], subject: string[]): boolean {
  for (let i = 0; i < pattern.length; i++) {
    if (pattern[i] === '>') return subject.length > i
    if (i >= subject.length || (pattern[i] !== '*' && pattern[i] !== subject[i])) return false
  }
  return pattern.length === subject.length
}

export interface Reply {
  data: Uint8Array
  headers?: Headers
}

/**
 * Run a request handler and turn a throw into an error reply. A UbError travels with its code
 * and message; anything else is logged here and goes out as a generic 'internal' error.
 */
export async function answerRequest(
  handler: RequestHandler,
  msg: BusMessage,
  log?: BusLogger
): Promise<Reply> {
  try {
    return { data: await handler(msg) }
  } catch (err) {
    if (!(err instanceof UbError))
      logError(log, { err, subject: msg.subject }, 'request handler failed')
    const body = toErrorBody(err)
    return {
      data: new Uint8Array(0),
      headers: { [ERROR_CODE_HEADER]: body.code, [ERROR_MESSAGE_HEADER]: body.message },
    }
  }
}

/** Turn an error reply back into the thrown error; pass other replies through. */
export function throwIfErrorReply(reply: BusMessage): BusMessage {
  const code = reply.headers?.[ERROR_CODE_HEADER]
  if (code === undefined) return reply
  throw errorFromCode(code, reply.headers?.[ERROR_MESSAGE_HEADER] ?? code)
}

/** The slice of a pino logger the bus uses. */
export interface BusLogger {
  warn(obj: object, msg: string): void
  error(obj: object, msg: string): void
}

/** Call a subscriber; a throw is the subscriber's bug, so log it and keep delivering. */
export function callSafely(log: BusLogger | undefined, subject: string, fn: () => void): void {
  try {
    fn()
  } catch (err) {
    logError(log, { err, subject }, 'bus subscriber threw')
  }
}

/** Without a logger, still say it: a swallowed handler error would hide a bug. */
function logError(log: BusLogger | undefined, obj: { err: unknown; subject: string }, msg: string) {
  if (log) log.error(obj, msg)
  else console.error(`${msg} (${obj.subject}):`, obj.err)
}
