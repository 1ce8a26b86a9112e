import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ApiFailure, UsageError } from './io.ts'

/** The flags every API command takes (commands/program.ts adds them). */
export interface ApiOptions {
  url?: string
  token?: string
  dataDir?: string
  json?: boolean
}

/**
 * Where the API is and the token for it. URL: `--url`, else UB_URL, else this machine on
 * UB_HTTP_PORT (8080). Token: `--token`, else UB_ADMIN_TOKEN, else `<data dir>/admin-token`
 * (`--data-dir`, else UB_DATA_DIR, else .data): run beside the instance, no setting is needed.
 */
export function resolveConnection(
  opts: ApiOptions,
  env: NodeJS.ProcessEnv
): { url: string; token: string } {
  const url = (opts.url || env.UB_URL || `http://127.0.0.1:${env.UB_HTTP_PORT || 8080}`).replace(
    /\/+$/,
    ''
  )
  if (!/^https?:\/\/[^/]/.test(url)) throw new UsageError(`--url must be http(s)://host[:port]`)
  const dataDir = opts.dataDir || env.UB_DATA_DIR || '.data'
  const token = opts.token || env.UB_ADMIN_TOKEN || readTokenFile(dataDir)
  if (!token) {
    throw new UsageError(
      `no admin token: set UB_ADMIN_TOKEN, pass --token, or point --data-dir at the folder holding admin-token (tried ${dataDir})`
    )
  }
  return { url, token }
}

function readTokenFile(dataDir: string): string | null {
  try {
    return readFileSync(join(dataDir, 'admin-token'), 'utf8').trim() || null
  } catch {
    return null
  }
}

export interface SseEvent {
  event: string
  data: string
  id: string | null
}

export interface ApiClient {
  readonly url: string
  /** The JSON body of a 2xx answer; anything else throws ApiFailure naming the API's error. */
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<T>
  /** Every page of a cursor-paged list (`X-Next-Cursor`), in order. */
  list<T = unknown>(path: string): Promise<T[]>
  /** Server-sent events from `path` until the stream ends or `signal` aborts. */
  events(path: string, signal?: AbortSignal): AsyncGenerator<SseEvent>
}

export function apiClient(opts: ApiOptions, env: NodeJS.ProcessEnv): ApiClient {
  const { url, token } = resolveConnection(opts, env)
  const send = async (method: string, path: string, init: RequestInit = {}) => {
    const endpoint = url + path
    try {
      return await fetch(endpoint, {
        ...init,
        method,
        headers: { authorization: `Bearer ${token}`, ...(init.headers as object) },
      })
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err
      const cause = (err as Error).cause as { code?: string; message?: string } | undefined
      const why = cause?.code ?? cause?.message ?? (err as Error).message
      throw new ApiFailure(`cannot reach ${endpoint}: ${why}`, null, null)
    }
  }
  const answer = async <T>(method: string, path: string, body?: unknown) => {
    const res = await send(
      method,
      path,
      body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }
    )
    const text = await res.text()
    let parsed: unknown = null
    try {
      parsed = text ? JSON.parse(text) : null
    } catch {
      parsed = null
    }
    if (!res.ok) throw failure(method, url + path, res.status, parsed, text)
    return { body: parsed as T, next: res.headers.get('x-next-cursor') }
  }
  return {
    url,
    call: async (method, path, body) => (await answer(method, path, body)).body as never,
    async list<T>(path: string) {
      const items: T[] = []
      let cursor: string | null = null
      do {
        const sep: string = path.includes('?') ? '&' : '?'
        const page: string =
          cursor === null ? path : `${path}${sep}cursor=${encodeURIComponent(cursor)}`
        const { body, next } = await answer<T[]>('GET', page)
        items.push(...body)
        cursor = next
      } while (cursor)
      return items
    },
    async *events(path, signal) {
      const res = await send('GET', path, {
        headers: { accept: 'text/event-stream' },
        ...(signal ? { signal } : {}),
      })
      if (!res.ok || !res.body) {
        const text = await res.text()
        throw failure('GET', url + path, res.status, safeJson(text), text)
      }
      yield* parseSse(res.body, signal)
    },
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return null
  }
}

/** The API's `{error: {code, message}}` as one line: `not_found: upstream x not found (HTTP 404 …)`. */
function failure(
  method: string,
  endpoint: string,
  status: number,
  body: unknown,
  text: string
): ApiFailure {
  const error = (body as { error?: { code?: string; message?: string } } | null)?.error
  const code = error?.code ?? null
  const message = error?.message ?? (text.slice(0, 200) || 'no message')
  return new ApiFailure(
    `${code ?? 'error'}: ${message} (HTTP ${status} from ${method} ${endpoint})`,
    status,
    code
  )
}

/** text/event-stream to events: `event:`, `data:` (joined by newlines), `id:`, a blank line ends one. */
export async function* parseSse(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal
): AsyncGenerator<SseEvent> {
  const decoder = new TextDecoder()
  let buffer = ''
  let event = 'message'
  let data: string[] = []
  let id: string | null = null
  const reader = body.getReader()
  const stop = () => void reader.cancel().catch(() => {})
  signal?.addEventListener('abort', stop, { once: true })
  try {
    for (;;) {
      const chunk = await reader.read().catch((err: unknown) => {
        if (signal?.aborted) return { done: true as const, value: undefined }
        throw err
      })
      if (chunk.done) return
      buffer += decoder.decode(chunk.value, { stream: true })
      let newline: number
      while ((newline = buffer.search(/\r?\n/)) !== -1) {
        const line = buffer.slice(0, newline)
        buffer = buffer.slice(newline + (buffer[newline] === '\r' ? 2 : 1))
        if (line === '') {
          if (data.length > 0 || event !== 'message') yield { event, data: data.join('\n'), id }
          event = 'message'
          data = []
          continue
        }
        const colon = line.indexOf(':')
        const field = colon === -1 ? line : line.slice(0, colon)
        const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
        if (field === 'event') event = value
        else if (field === 'data') data.push(value)
        else if (field === 'id') id = value
      }
    }
  } finally {
    signal?.removeEventListener('abort', stop)
    stop()
  }
}
