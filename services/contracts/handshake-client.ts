import { z } from 'zod'
import { UbError } from '../common/errors.ts'
import { PUBLIC_KEY_PATTERN } from '../common/instance-key.ts'
import { TopologyExchangeSchema, type TopologyExchange } from '../common/topology-db.ts'
import { InstanceId, SecretHash, type TlsOptions } from './values.ts'
import { tlsFetch } from './tls-fetch.ts'

/**
 * The one client of a remote instance's handshake API (`/api/v1/handshake/requests`): the poller,
 * peer discovery and the mesh's topology exchange all go through it, so all of them switch to
 * https for an upstream reached over mqtts:// or wss://, cap what they read, and time out.
 * Every answer is validated: the server is another party.
 */
export interface RemoteClient {
  sendRequest(
    target: RemoteTarget,
    body: z.input<typeof HandshakeRequestSchema>
  ): Promise<RemoteAccepted>
  getStatus(target: RemoteTarget, requestId: string, secret: string): Promise<RemoteStatus>
  /**
   * The status once it is no longer `seen`, or after `waitS` seconds (a long poll); a server
   * that does not wait answers at once, as getStatus.
   */
  waitStatus(
    target: RemoteTarget,
    requestId: string,
    secret: string,
    seen: string,
    waitS: number
  ): Promise<RemoteStatus>
  withdraw(target: RemoteTarget, requestId: string, secret: string): Promise<RemoteStatus>
  /** The mesh's link-state exchange: post our topology database, get theirs. */
  exchangeTopology(
    target: RemoteTarget,
    requestId: string,
    secret: string,
    mine: TopologyExchange,
    options?: { timeoutMs?: number }
  ): Promise<TopologyExchange>
}

export interface RemoteTarget {
  /** `mqtt://host` etc.: the host name is what the HTTP call goes to. */
  host: string
  httpPort: number
  /** The upstream's TLS options; they also apply to its handshake API over https. */
  tls?: TlsOptions | null
}

/** An instance's Ed25519 public key (base64url of the raw 32 bytes): it signs its topology adverts. */
export const PublicKey = z
  .string()
  .regex(PUBLIC_KEY_PATTERN)
  .describe(
    "the instance's Ed25519 public key (base64url, 32 bytes), for its signed topology adverts"
  )

/**
 * The downstream's request: its instance id, the sha-256 of the secret it keeps, and its public
 * key (optional: older downstreams send none, and their adverts are not believed).
 */
export const HandshakeRequestSchema = z.strictObject({
  instanceId: InstanceId,
  secretHash: SecretHash,
  publicKey: PublicKey.optional(),
})
/** The server's answer to a request: recorded (or the live request it already had). */
export const HandshakeAcceptedSchema = z.object({
  requestId: z.string(),
  status: z.string(),
  instanceId: z.string().describe("the upstream server's instance ID"),
  created: z.boolean(),
  publicKey: PublicKey.optional(),
})
/** A request's status and grants, for its downstream (who proves the secret). */
export const HandshakeStatusSchema = z.object({
  requestId: z.string(),
  status: z.string(),
  grants: z.array(z.string()),
  instanceId: z.string().describe("the upstream server's instance ID"),
  publicKey: PublicKey.optional(),
})

// What this client accepts: the same answers, lenient where an older server sent less.
const Accepted = HandshakeAcceptedSchema.partial({ instanceId: true, created: true })
const Status = HandshakeStatusSchema.partial({ instanceId: true }).extend({
  grants: z.array(z.string()).default([]),
})
export type RemoteAccepted = z.infer<typeof Accepted>
export type RemoteStatus = z.infer<typeof Status>

/** A failed call to an upstream server; `status` is the HTTP status when it answered at all. */
export class RemoteError extends UbError {
  readonly status: number | null
  constructor(message: string, status: number | null, options?: { cause?: unknown }) {
    super(status === null ? 'upstream_unreachable' : 'upstream_error', message, options)
    this.name = 'RemoteError'
    this.status = status
  }
}

const MAX_STATUS_BYTES = 64 * 1_024 // 64 KiB: a status answer is a few hundred bytes
const MAX_TOPOLOGY_BYTES = 1_024 * 1_024 // 1 MiB: a mesh's adverts, a few hundred bytes per instance

/** The body as text, cut off past `maxBytes`: the server is another party, maybe hostile. */
async function readCapped(res: Response, maxBytes: number): Promise<string> {
  if (!res.body) return ''
  const reader = res.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  let tooLarge = false
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      size += value.length
      if (size > maxBytes) {
        tooLarge = true
        break
      }
      chunks.push(value)
    }
  } catch {
    // The connection broke mid-body: judge by what arrived (usually nothing parseable).
  }
  if (tooLarge) {
    await reader.cancel()
    throw new RemoteError(
      `${res.url || 'the server'} answered more than ${maxBytes} bytes`,
      res.status
    )
  }
  const all = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0))
  let at = 0
  for (const c of chunks) {
    all.set(c, at)
    at += c.length
  }
  return new TextDecoder().decode(all)
}

export const DEFAULT_REMOTE_TIMEOUT_MS = 5_000 // 5 s: a poll must not pile up behind a dead server

/**
 * `http(s)://<host name>:<httpPort>`; IPv6 literals keep their brackets. An upstream reached over
 * a secure transport (mqtts://, wss://) is asked over https too: the status polls carry the
 * secret, which must cross the network no more in the clear than the MQTT password does.
 */
export function handshakeBase({ host, httpPort }: RemoteTarget): string {
  const url = new URL(host)
  const scheme = url.protocol === 'mqtts:' || url.protocol === 'wss:' ? 'https' : 'http'
  return `${scheme}://${url.hostname}:${httpPort}`
}

const hasTlsOptions = (tls: TlsOptions | null | undefined): tls is TlsOptions =>
  !!tls && Object.values(tls).some((v) => v !== undefined)

export function createRemoteClient({
  fetch: fetchFn = globalThis.fetch,
  timeoutMs = DEFAULT_REMOTE_TIMEOUT_MS,
  publicKey,
}: {
  fetch?: typeof globalThis.fetch
  timeoutMs?: number
  /** This instance's public key, sent with every request that does not carry one already. */
  publicKey?: () => Promise<string>
} = {}): RemoteClient {
  async function call<T>(
    target: RemoteTarget,
    path: string,
    init: RequestInit,
    schema: z.ZodType<T>,
    {
      maxBytes = MAX_STATUS_BYTES,
      timeout = timeoutMs,
    }: { maxBytes?: number; timeout?: number } = {}
  ): Promise<T> {
    const url = handshakeBase(target) + path
    let res: Response
    try {
      const viaTls = url.startsWith('https:') && hasTlsOptions(target.tls)
      res = await (viaTls ? tlsFetch(target.tls!) : fetchFn)(url, {
        ...init,
        signal: AbortSignal.timeout(timeout),
      })
    } catch (cause) {
      const inner = (cause as { cause?: { code?: string; message?: string } }).cause
      const why = inner?.code ?? inner?.message ?? (cause as Error).message
      throw new RemoteError(`cannot reach ${url}: ${why}`, null, { cause })
    }
    const text = await readCapped(res, maxBytes)
    let body: unknown
    try {
      body = text ? JSON.parse(text) : undefined
    } catch {
      body = undefined
    }
    if (!res.ok) {
      const err = (body as { error?: { code?: string; message?: string } } | undefined)?.error
      const what = err?.message
        ? `${err.code}: ${err.message}`
        : text.slice(0, 200) || res.statusText
      throw new RemoteError(`${init.method} ${url} answered ${res.status} (${what})`, res.status)
    }
    const parsed = schema.safeParse(body)
    if (!parsed.success)
      throw new RemoteError(`${url} answered ${res.status} with an unexpected body`, res.status)
    return parsed.data
  }

  const auth = (secret: string) => ({ authorization: `Bearer ${secret}` })
  const requestPath = (id: string) => `/api/v1/handshake/requests/${encodeURIComponent(id)}`

  return {
    sendRequest: async (target, body) =>
      call(
        target,
        '/api/v1/handshake/requests',
        {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(
            body.publicKey || !publicKey ? body : { ...body, publicKey: await publicKey() }
          ),
        },
        Accepted
      ),
    getStatus: (target, requestId, secret) =>
      call(target, requestPath(requestId), { method: 'GET', headers: auth(secret) }, Status),
    waitStatus: (target, requestId, secret, seen, waitS) =>
      call(
        target,
        `${requestPath(requestId)}?wait=${waitS}&seen=${encodeURIComponent(seen)}`,
        { method: 'GET', headers: auth(secret) },
        Status,
        { timeout: waitS * 1_000 + timeoutMs }
      ),
    withdraw: (target, requestId, secret) =>
      call(target, requestPath(requestId), { method: 'DELETE', headers: auth(secret) }, Status),
    exchangeTopology: (target, requestId, secret, mine, options = {}) =>
      call(
        target,
        `${requestPath(requestId)}/topology`,
        {
          method: 'POST',
          headers: { ...auth(secret), 'content-type': 'application/json' },
          body: JSON.stringify(mine),
        },
        TopologyExchangeSchema,
        {
          maxBytes: MAX_TOPOLOGY_BYTES,
          ...(options.timeoutMs === undefined ? {} : { timeout: options.timeoutMs }),
        }
      ),
  }
}
