import { z } from '@hono/zod-openapi'
import { UbError } from '../common/errors.ts'
import type { TlsOptions } from '../store/api.ts'
import { tlsFetch } from './tls-fetch.ts'

/**
 * The downstream's side of the handshake: HTTP calls to an upstream server's
 * `/api/v1/handshake/requests`. Every answer is validated: the server is another party.
 */
export interface RemoteClient {
  sendRequest(
    target: RemoteTarget,
    body: { instanceId: string; secretHash: string }
  ): Promise<RemoteAccepted>
  getStatus(target: RemoteTarget, requestId: string, secret: string): Promise<RemoteStatus>
  withdraw(target: RemoteTarget, requestId: string, secret: string): Promise<RemoteStatus>
}

export interface RemoteTarget {
  /** `mqtt://host` etc.: the host name is what the HTTP call goes to. */
  host: string
  httpPort: number
  /** The upstream's TLS options; they also apply to its handshake API over https. */
  tls?: TlsOptions | null
}

const Accepted = z.object({
  requestId: z.string(),
  status: z.string(),
  instanceId: z.string().optional(),
})
const Status = z.object({
  requestId: z.string(),
  status: z.string(),
  grants: z.array(z.string()).default([]),
  instanceId: z.string().optional(),
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

const MAX_ANSWER_BYTES = 64 * 1_024 // 64 KiB: a status answer is a few hundred bytes

/** The body as text, cut off past MAX_ANSWER_BYTES: the server is another party, maybe hostile. */
async function readCapped(res: Response): Promise<string> {
  if (!res.body) return ''
  const reader = res.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) break
      size += value.length
      if (size > MAX_ANSWER_BYTES) {
        await reader.cancel()
        break
      }
      chunks.push(value)
    }
  } catch {
    // The connection broke mid-body: judge by what arrived (usually nothing parseable).
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
}: { fetch?: typeof globalThis.fetch; timeoutMs?: number } = {}): RemoteClient {
  async function call<T>(
    target: RemoteTarget,
    path: string,
    init: RequestInit,
    schema: z.ZodType<T>
  ): Promise<T> {
    const url = handshakeBase(target) + path
    let res: Response
    try {
      const viaTls = url.startsWith('https:') && hasTlsOptions(target.tls)
      res = await (viaTls ? tlsFetch(target.tls!) : fetchFn)(url, {
        ...init,
        signal: AbortSignal.timeout(timeoutMs),
      })
    } catch (cause) {
      const inner = (cause as { cause?: { code?: string; message?: string } }).cause
      const why = inner?.code ?? inner?.message ?? (cause as Error).message
      throw new RemoteError(`cannot reach ${url}: ${why}`, null, { cause })
    }
    const text = await readCapped(res)
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
    sendRequest: (target, body) =>
      call(
        target,
        '/api/v1/handshake/requests',
        {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        },
        Accepted
      ),
    getStatus: (target, requestId, secret) =>
      call(target, requestPath(requestId), { method: 'GET', headers: auth(secret) }, Status),
    withdraw: (target, requestId, secret) =>
      call(target, requestPath(requestId), { method: 'DELETE', headers: auth(secret) }, Status),
  }
}
