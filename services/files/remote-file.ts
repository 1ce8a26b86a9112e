/**
 * One file of another instance's file service, streamed: a GET over http or https (the
 * upstream's TLS options), authenticated with HTTP Basic, and resumed with `Range` + `If-Range`
 * after a cut, so a WAN that drops halfway costs the rest, not the whole file again.
 */
import type { IncomingMessage } from 'node:http'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { nodeTlsOptions } from '../contracts/node-tls.ts'
import type { TlsOptions } from '../contracts/store.ts'

export interface RemoteFile {
  url: string
  tls: TlsOptions | null
  username: string
  password: string
}

/** Resumed at most this many times after a cut, waiting twice as long each time from 500 ms. */
export const MAX_RESUMES = 5
const FIRST_RETRY_MS = 500
/** A connection silent this long is cut (then resumed). */
const IDLE_TIMEOUT_MS = 30_000

export class RemoteFileError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message)
  }
}

export function fetchResuming(
  file: RemoteFile
): AsyncIterable<Uint8Array> & { sha256(): string | undefined } {
  let etag: string | undefined
  async function* chunks(): AsyncIterable<Uint8Array> {
    let received = 0
    for (let resumes = 0; ; resumes++) {
      const headers: Record<string, string> = {
        authorization:
          'Basic ' + Buffer.from(`${file.username}:${file.password}`).toString('base64'),
      }
      if (received > 0 && etag)
        Object.assign(headers, { range: `bytes=${received}-`, 'if-range': etag })
      let res: IncomingMessage
      try {
        res = await get(file, headers)
      } catch (err) {
        if (resumes >= MAX_RESUMES) throw err
        await sleep(FIRST_RETRY_MS * 2 ** resumes)
        continue
      }
      const status = res.statusCode ?? 0
      if (status !== 200 && status !== 206) {
        res.resume()
        throw new RemoteFileError(status, `${file.url} answered ${status}`)
      }
      // The file changed upstream since the first part: the parts would not make one file.
      if (received > 0 && status !== 206)
        throw new RemoteFileError(409, `${file.url} changed while it was fetched`)
      if (received === 0) etag = res.headers.etag
      try {
        for await (const chunk of res as AsyncIterable<Buffer>) {
          received += chunk.byteLength
          yield chunk
        }
        if (!res.complete) throw new Error('the response ended early')
        return
      } catch (err) {
        if (resumes >= MAX_RESUMES) throw err
        await sleep(FIRST_RETRY_MS * 2 ** resumes)
      } finally {
        // Stopped early (the put refused it) or cut: the connection goes.
        if (!res.complete) res.destroy()
      }
    }
  }
  const iterable = chunks()
  return Object.assign(iterable, {
    /** The SHA-256 the upstream's ETag names (our file services' ETag is the quoted hex digest). */
    sha256: () => (etag && /^"[0-9a-f]{64}"$/.test(etag) ? etag.slice(1, -1) : undefined),
  })
}

function get(file: RemoteFile, headers: Record<string, string>): Promise<IncomingMessage> {
  const url = new URL(file.url)
  const secure = url.protocol === 'https:'
  return new Promise((resolve, reject) => {
    const req = (secure ? httpsRequest : httpRequest)(
      url,
      { headers, ...(secure && file.tls ? nodeTlsOptions(file.tls) : {}) },
      resolve
    )
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(new Error('the upstream went silent')))
    req.on('error', reject)
    req.end()
  })
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * PUT `body` (`size` bytes, SHA-256 `sha256`) to another instance's file service; its
 * Content-Digest lets that service refuse a copy that was damaged on the way. Throws a
 * RemoteFileError with the status when it is not stored.
 */
export async function putRemote(
  file: RemoteFile,
  body: AsyncIterable<Uint8Array>,
  { size, sha256, ttlSeconds }: { size: number; sha256: string; ttlSeconds?: number }
): Promise<void> {
  const url = new URL(file.url)
  const secure = url.protocol === 'https:'
  const headers: Record<string, string> = {
    authorization: 'Basic ' + Buffer.from(`${file.username}:${file.password}`).toString('base64'),
    'content-length': String(size),
    'content-digest': `sha-256=:${Buffer.from(sha256, 'hex').toString('base64')}:`,
    ...(ttlSeconds ? { 'ub-ttl': String(ttlSeconds) } : {}),
  }
  const status = await new Promise<number>((resolve, reject) => {
    const req = (secure ? httpsRequest : httpRequest)(
      url,
      { method: 'PUT', headers, ...(secure && file.tls ? nodeTlsOptions(file.tls) : {}) },
      (res) => {
        res.resume()
        res.on('end', () => resolve(res.statusCode ?? 0))
      }
    )
    req.setTimeout(IDLE_TIMEOUT_MS, () => req.destroy(new Error('the upstream went silent')))
    req.on('error', reject)
    pipeTo(body, req).catch((err: unknown) => req.destroy(err as Error))
  })
  if (status !== 201) throw new RemoteFileError(status, `${file.url} answered ${status}`)
}

/** Write `body` to `req` with back-pressure, then end it. */
async function pipeTo(
  body: AsyncIterable<Uint8Array>,
  req: import('node:http').ClientRequest
): Promise<void> {
  for await (const chunk of body) {
    if (!req.write(chunk)) await new Promise<void>((r) => req.once('drain', () => r()))
  }
  req.end()
}
