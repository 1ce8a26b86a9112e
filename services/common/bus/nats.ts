import {
  connect,
  headers as natsHeaders,
  NoRespondersError as NatsNoRespondersError,
  RequestError,
  TimeoutError,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
} from '@nats-io/transport-node'
import { Kvm } from '@nats-io/kv'
import { Objm } from '@nats-io/obj'
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import { BusTimeoutError, NoRespondersError, UbError } from '../errors.ts'
import {
  answerRequest,
  bucketName,
  callSafely,
  checkOpen,
  DEFAULT_REQUEST_TIMEOUT_MS,
  throwIfErrorReply,
  validateSubject,
  type Bus,
  type BusLogger,
  type BusMessage,
  type Headers,
  type Reply,
  type RequestOptions,
  type Subscription,
} from './bus.ts'
import { wrapNatsBlobs } from './nats-blobs.ts'
import { cancelAnsweredRequestsWithoutError } from './nats-request-cost.ts'
import { wrapNatsKv } from './nats-kv.ts'

export interface NatsBusOptions {
  servers: string | string[]
  prefix?: string
  /** Connection name shown by the server's monitoring (`/connz`). */
  name?: string
  log?: BusLogger
  /**
   * JetStream copies of each KV bucket (`busReplicas`): 3 on a three-node cluster, so a node's
   * loss loses no acknowledged write. A bucket made earlier with another count is changed to it.
   */
  replicas?: number
}

/** Oldest server the bus is verified on (ARCHITECTURE.md §13): KV, CAS, bucket TTL, direct get. */
const MIN_SERVER = [2, 9] as const

function toRecord(h: MsgHdrs | undefined): Headers | undefined {
  if (!h) return undefined
  const out: Headers = {}
  for (const k of h.keys()) out[k] = h.get(k)
  return out
}

function toNats(h: Headers | undefined): MsgHdrs | undefined {
  if (!h) return undefined
  const out = natsHeaders()
  for (const [k, v] of Object.entries(h)) out.set(k, v)
  return out
}

/** Fail at startup, naming the missing feature, rather than on the first KV call. */
function requireFeatures(nc: NatsConnection): void {
  const info = nc.info
  const version = info?.version ?? 'unknown'
  const [major = 0, minor = 0] = version.split('.').map((n) => parseInt(n, 10))
  if (!(major > MIN_SERVER[0] || (major === MIN_SERVER[0] && minor >= MIN_SERVER[1]))) {
    throw new UbError(
      'bus_unsupported',
      `nats-server ${version} is too old: the bus needs ${MIN_SERVER.join('.')} or newer (JetStream KV)`
    )
  }
  if (!info?.jetstream) {
    throw new UbError(
      'bus_unsupported',
      `nats-server ${version} has JetStream disabled: the bus needs it for KV buckets (run with -js)`
    )
  }
}

function mapRequestError(err: unknown, subject: string, timeoutMs: number): unknown {
  const cause = (err as { cause?: unknown })?.cause
  if (
    (err instanceof RequestError && err.isNoResponders()) ||
    cause instanceof NatsNoRespondersError ||
    (err as { code?: unknown })?.code === '503'
  ) {
    return new NoRespondersError(subject)
  }
  if (err instanceof TimeoutError || cause instanceof TimeoutError) {
    return new BusTimeoutError(subject, timeoutMs)
  }
  return err
}

/** Bus over one NATS connection (NATS.js v3); needs JetStream for KV. */
export async function connectNatsBus({
  servers,
  prefix = 'ub',
  name,
  log,
  replicas = 1,
}: NatsBusOptions): Promise<Bus> {
  validateSubject(prefix)
  const nc = await openConnection(servers, name)
  const kvm = new Kvm(nc)
  const objm = new Objm(nc)
  // No JetStream answer yet (a cluster still electing its leader): close, or the connection leaks.
  const jsm = await jetstreamManager(nc).catch(async (err: unknown) => {
    await nc.close()
    throw err
  })
  const link: NatsLink = { nc, prefix, cut: prefix.length + 1, log }
  let closing: Promise<void> | undefined

  const bus: Bus = {
    prefix,
    kind: 'nats',
    publish(subject, data, headers) {
      checkOpen(closing !== undefined)
      validateSubject(subject)
      const h = toNats(headers)
      // Copied: NATS.js queues the caller's array until the next write, so a later change would leak.
      nc.publish(`${prefix}.${subject}`, data.slice(), h ? { headers: h } : undefined)
    },
    subscribe(subject, handler, { queue } = {}) {
      return openSubscription(link, closing !== undefined, subject, queue, (m) => {
        const msg = toBusMessage(m, link.cut)
        callSafely(log, msg.subject, () => handler(msg))
      })
    },
    request(subject, data, options = {}) {
      return sendRequest(link, closing !== undefined, subject, data, options)
    },
    serve(subject, handler, { queue } = {}) {
      return openSubscription(link, closing !== undefined, subject, queue, (m) => {
        void answerRequest(handler, toBusMessage(m, link.cut), log).then((r) =>
          respond(m, r, subject, log)
        )
      })
    },
    async kv(bucket, { ttlMs } = {}) {
      checkOpen(closing !== undefined)
      const name = bucketName(prefix, bucket)
      // `ttl` is in ms in v3 (KvLimits.ttl); 2.9 supports only this bucket-wide max_age.
      const kv = await retryTimeouts(() =>
        kvm.create(name, { history: 1, replicas, ...(ttlMs ? { ttl: ttlMs } : {}) })
      ).catch((err: unknown) => {
        throw replicasError(err, name, replicas)
      })
      await keepReplicas(jsm, name, replicas, log)
      return wrapNatsKv(kv, name, log, jsm)
    },
    async blobs(bucket, { replicas: copies = replicas } = {}) {
      checkOpen(closing !== undefined)
      const name = bucketName(prefix, bucket)
      const os = await retryTimeouts(() => objm.create(name, { replicas: copies })).catch(
        (err: unknown) => {
          throw replicasError(err, name, copies, 'Blob')
        }
      )
      await keepReplicas(jsm, name, copies, log, 'OBJ')
      return wrapNatsBlobs({ os, js: jetstream(nc), jsm, bucket: name })
    },
    async flush() {
      checkOpen(closing !== undefined)
      await nc.flush()
    },
    async reconnect() {
      if (closing === undefined && !nc.isClosed()) await nc.reconnect()
    },
    close() {
      // drain(): finish delivering what has arrived, then close; a second call gets the same promise.
      closing ??= nc.isClosed()
        ? Promise.resolve()
        : nc.drain().catch((err: unknown) => {
            log?.warn({ err }, 'NATS drain failed; closing')
            return nc.close()
          })
      return closing
    },
    [Symbol.asyncDispose]() {
      return bus.close()
    },
  }
  return bus
}

/**
 * `natsUrl` lists servers comma-separated; nats.js takes a string as one URL, so a list would
 * dial a mangled address (it connected only when the last entry happened to be up).
 */
const serverList = (servers: string | string[]): string[] =>
  (Array.isArray(servers) ? servers : servers.split(',')).map((s) => s.trim()).filter(Boolean)

/** Connect, and check the server can carry the bus; a server that cannot is let go. */
async function openConnection(
  servers: string | string[],
  name: string | undefined
): Promise<NatsConnection> {
  let nc: NatsConnection
  cancelAnsweredRequestsWithoutError()
  try {
    nc = await connect({
      servers: serverList(servers),
      ...(name === undefined ? {} : { name }),
      // NATS.js gives up after 10 attempts 2 s apart: an outage of all servers longer than ~20 s
      // (a cluster restart, a partition) left the process with a closed bus for good.
      maxReconnectAttempts: -1,
      // Otherwise every request (each KV put and erase is one: several per queued message) builds
      // a RequestError and a TimeoutError up front for their stack traces, in case it fails: 30 %
      // of a gateway's CPU on the NATS bridge path. A failure still names its subject and cause.
      // (And one more Error per answered request: nats-request-cost.ts.)
      noAsyncTraces: true,
    })
  } catch (err) {
    throw new UbError('bus_unavailable', `cannot connect to NATS at ${String(servers)}`, {
      cause: err,
    })
  }
  try {
    requireFeatures(nc)
  } catch (err) {
    await nc.close()
    throw err
  }
  return nc
}

function toBusMessage(m: Msg, cut: number): BusMessage {
  // A plain copy: NATS hands out Buffers that view its read buffer.
  const msg: BusMessage = { subject: m.subject.slice(cut), data: new Uint8Array(m.data) }
  const h = toRecord(m.headers)
  if (h) msg.headers = h
  return msg
}

/** What the bus's calls share: the connection and the subject prefix (cut off on the way in). */
interface NatsLink {
  nc: NatsConnection
  prefix: string
  cut: number
  log: BusLogger | undefined
}

/** `closed`: the bus was closed when the call came, so it fails (a rejection, like the rest). */
async function openSubscription(
  { nc, prefix, log }: NatsLink,
  closed: boolean,
  subject: string,
  queue: string | undefined,
  onMsg: (m: Msg) => void
): Promise<Subscription> {
  checkOpen(closed)
  validateSubject(subject, { wildcards: true })
  // Callbacks stay synchronous (NATS.js v3 rule); async work is started, not awaited.
  const s = nc.subscribe(`${prefix}.${subject}`, {
    ...(queue === undefined ? {} : { queue }),
    callback: (err, m) => {
      if (err) log?.warn({ err, subject }, 'subscription ended with an error')
      else onMsg(m)
    },
  })
  await nc.flush()
  return {
    async unsubscribe() {
      if (!s.isClosed()) s.unsubscribe()
    },
  }
}

async function sendRequest(
  { nc, prefix }: NatsLink,
  closed: boolean,
  subject: string,
  data: Uint8Array,
  { timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS, headers }: RequestOptions
): Promise<BusMessage> {
  checkOpen(closed)
  validateSubject(subject)
  const h = toNats(headers)
  let m: Msg
  try {
    m = await nc.request(`${prefix}.${subject}`, data.slice(), {
      timeout: timeoutMs,
      ...(h ? { headers: h } : {}),
    })
  } catch (err) {
    throw mapRequestError(err, subject, timeoutMs)
  }
  const reply: BusMessage = { subject, data: new Uint8Array(m.data) }
  const rh = toRecord(m.headers)
  if (rh) reply.headers = rh
  return throwIfErrorReply(reply)
}

/** Send a request handler's answer back; a plain publish has nobody to answer. */
function respond(m: Msg, r: Reply, subject: string, log: BusLogger | undefined): void {
  if (!m.reply) return
  const h = toNats(r.headers)
  try {
    m.respond(r.data, h ? { headers: h } : undefined)
  } catch (err) {
    log?.warn({ err, subject }, 'could not send a reply')
  }
}

/** A bucket made with another replica count (an earlier `busReplicas`) is changed to this one. */
const BUCKET_OPEN_ATTEMPTS = 3

/**
 * nats-server 2.9 leaves one of two clients unanswered when both create the same replicated
 * bucket at once (two replicas starting together: 2 rounds in 3 timed out after 5 s). The
 * create is idempotent, so a timed-out one is asked again.
 */
async function retryTimeouts<T>(open: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await open()
    } catch (err) {
      const timedOut = err instanceof Error && /timeout/i.test(`${err.name} ${err.message}`)
      if (!timedOut || attempt >= BUCKET_OPEN_ATTEMPTS) throw err
    }
  }
}

/** `kind`: the bucket's stream is `KV_<bucket>` or `OBJ_<bucket>` (a blob bucket). */
async function keepReplicas(
  jsm: JetStreamManager,
  bucket: string,
  replicas: number,
  log: BusLogger | undefined,
  kind: 'KV' | 'OBJ' = 'KV'
): Promise<void> {
  const stream = `${kind}_${bucket}`
  const what = kind === 'KV' ? 'KV' : 'Blob'
  const info = await jsm.streams.info(stream)
  if (info.config.num_replicas === replicas) return
  try {
    await jsm.streams.update(stream, { ...info.config, num_replicas: replicas })
  } catch (err) {
    throw replicasError(err, bucket, replicas, what)
  }
  log?.warn(
    { bucket, from: info.config.num_replicas, to: replicas },
    `${what} bucket replicas changed to busReplicas`
  )
}

function replicasError(err: unknown, bucket: string, replicas: number, what = 'KV'): unknown {
  const why = err instanceof Error ? err.message : String(err)
  // Only the server's answer about placing copies is about busReplicas; a timeout is not.
  if (replicas === 1 || !/replica|insufficient resources|no suitable peers/i.test(why)) return err
  return new UbError(
    'bus_replicas',
    `${what} bucket ${bucket} cannot have ${replicas} replicas (busReplicas): ${why}; ` +
      'the NATS cluster needs at least that many JetStream servers'
  )
}
