/**
 * thin-edge.io's file transfer routes (docs/src/references/file-transfer-service.md):
 * `PUT /te/v1/files/{path}` → 201, `GET` → 200 (404 when absent), `DELETE` → 202, plus what its
 * users lack: HEAD, `Range` for resumed downloads, `ETag` = the SHA-256, conditional requests,
 * the gateway's principals and grants, size bounds, expiry and an upload's digest check.
 * Bodies stream both ways: memory stays flat whatever a file's size.
 */
import { Hono, type Context } from 'hono'
import type { BlobInfo } from '../common/bus/blobs.ts'
import { BlobDigestError, BlobTooLargeError } from '../common/bus/blobs.ts'
import { AccessError, mayAccess, type FileCaller } from './access.ts'
import { isPathProblem, parseFilePath } from '../contracts/file-paths.ts'
import { etagListMatches, etagOf, expectedSha256, parseRange } from './http-range.ts'
import type { FileMetrics, RefusalReason } from './metrics.ts'
import { EXPIRES_AT, isExpired, type FileStore } from './store.ts'
import { PullBusy, type PullThrough } from './pull-through.ts'
import type { PushUp } from './push-up.ts'
import { fromAsyncIterable, uploadBody } from './streams.ts'

export interface FileRoutesOptions {
  files: FileStore
  metrics: FileMetrics
  callerOf(
    authorization: string | undefined,
    remoteAddress: string | undefined
  ): Promise<FileCaller>
  remoteAddress(c: Context): string | undefined
  /** Default keep of a file in ms (0 = until deleted) and the longest a PUT may ask for. */
  ttlMs: number
  maxTtlMs: number
  /** Files that come down a binding, fetched from the upstream on first GET (absent = none). */
  pull?: PullThrough
  /** Files put here under a binding going out, copied to the upstream (absent = none). */
  push?: PushUp
}

const TTL_HEADER = 'ub-ttl'

export function fileRoutes(o: FileRoutesOptions): Hono {
  const app = new Hono()
  const { files, metrics } = o

  const { refuse, admit } = createGate(o)

  app.put('/te/v1/files/*', async (c) => {
    const admitted = await admit(c)
    if (admitted instanceof Response) return admitted
    const { name } = admitted
    const ttl = ttlOf(c.req.header(TTL_HEADER), o)
    if (typeof ttl === 'string') return refuse(c, 400, 'invalid_ttl', ttl)
    const sha256 = expectedSha256({ get: (h) => c.req.header(h) })
    if (sha256 === null)
      return refuse(c, 400, 'invalid_digest', 'Content-Digest sha-256 must be 32 bytes in base64')
    const conflict =
      files.usage.conflict(name) ?? ((await files.fileAbove(name)) ? 'parent_is_file' : null)
    if (conflict) return refuse(c, 409, 'conflict', conflictMessage(name, conflict))
    const precondition = await checkPreconditions(c, files, name)
    if (precondition) return refuse(c, 412, 'precondition_failed', precondition)
    const room = files.usage.room(name)
    const declared = Number(c.req.header('content-length') ?? NaN)
    if (room.bytes === 0 || declared > room.bytes) return refuseRoom(c, room, refuse)
    const body = uploadBody(c.req.raw.body)
    const upload = files.usage.begin(name)
    metrics.inProgress.inc({ direction: 'in' })
    let info: BlobInfo
    try {
      info = await files.bucket.put(name, body.chunks, {
        maxBytes: room.bytes,
        ...(sha256 ? { expectSha256: sha256 } : {}),
        meta: metaOf(c, ttl),
        onBytes: (n) => {
          upload.add(n)
          metrics.received.inc(n)
        },
      })
    } catch (err) {
      await body.drain()
      if (err instanceof BlobTooLargeError) return refuseRoom(c, room, refuse)
      if (err instanceof BlobDigestError) return refuse(c, 400, 'digest_mismatch', err.message)
      throw err
    } finally {
      upload.end()
      metrics.inProgress.dec({ direction: 'in' })
    }
    files.usage.stored(name, info.size)
    metrics.stored.inc()
    // What a downstream's bridge puts here goes no further up: a file never circles a pair of
    // instances bound both ways.
    const { caller } = admitted
    if (o.push && !(caller.kind === 'principal' && caller.principal.kind === 'bridge'))
      o.push.stored(name)
    c.header('ETag', etagOf(info.sha256))
    c.header('Location', new URL(c.req.url).pathname)
    return c.body(null, 201)
  })

  app.get('/te/v1/files/*', (c) => download(c, { ...o, refuse, admit }))

  app.delete('/te/v1/files/*', async (c) => {
    const admitted = await admit(c)
    if (admitted instanceof Response) return admitted
    const { name } = admitted
    if (files.usage.conflict(name) === 'is_directory')
      return refuse(c, 409, 'conflict', conflictMessage(name, 'is_directory'))
    // thin-edge answers 202 whether or not the file was there: deleting is idempotent.
    if (await files.remove(name, 'request')) metrics.deleted.inc({ why: 'request' })
    return c.body(null, 202)
  })

  app.all('/te/v1/files/*', (c) =>
    refuse(c, 405, 'method_not_allowed', 'files take GET, HEAD, PUT and DELETE')
  )
  return app
}

function ttlOf(header: string | undefined, o: FileRoutesOptions): number | string {
  if (header === undefined) return o.ttlMs
  if (!/^\d{1,12}$/.test(header.trim()) || Number(header) < 1)
    return `${TTL_HEADER} is a whole number of seconds, at least 1`
  const ms = Number(header) * 1_000
  if (o.maxTtlMs > 0 && ms > o.maxTtlMs)
    return `${TTL_HEADER} may be at most ${o.maxTtlMs / 1_000} seconds`
  return ms
}

function metaOf(c: Context, ttlMs: number): Record<string, string> {
  const meta: Record<string, string> = {}
  if (ttlMs > 0) meta[EXPIRES_AT] = String(Date.now() + ttlMs)
  const type = c.req.header('content-type')
  if (type && type.length <= 200) meta.contentType = type
  return meta
}

async function checkPreconditions(c: Context, files: FileStore, name: string) {
  const ifMatch = c.req.header('if-match')
  const ifNoneMatch = c.req.header('if-none-match')
  if (ifMatch === undefined && ifNoneMatch === undefined) return null
  const current = await files.bucket.info(name)
  const etag = current && !isExpired(current) ? etagOf(current.sha256) : null
  if (ifMatch !== undefined && (etag === null || !etagListMatches(ifMatch, etag)))
    return 'If-Match names another version than the stored one'
  if (ifNoneMatch !== undefined && etag !== null && etagListMatches(ifNoneMatch, etag))
    return 'If-None-Match: the file exists'
  return null
}

function refuseRoom(
  c: Context,
  room: ReturnType<FileStore['usage']['room']>,
  refuse: Refuse
): Response {
  switch (room.limitedBy) {
    case 'file':
      return refuse(c, 413, 'too_large', `a file may have at most ${room.bytes} bytes`)
    case 'namespace':
      return refuse(c, 507, 'quota', `namespace '${room.namespace}' has no room for this file`)
    case 'total':
      return refuse(c, 507, 'quota', 'the file store has no room for this file')
    case 'count':
      return refuse(c, 507, 'quota', 'the file store holds as many files as it may')
  }
}

const conflictMessage = (name: string, conflict: 'parent_is_file' | 'is_directory') =>
  conflict === 'is_directory'
    ? `'${name}' is a directory: files lie under it`
    : `a level above '${name}' is a file`

const REFUSALS = new Set<string>([
  'invalid_path',
  'is_directory',
  'unauthorized',
  'forbidden',
  'too_large',
  'quota',
  'digest_mismatch',
  'conflict',
  'precondition_failed',
])
const isRefusal = (code: string): code is RefusalReason => REFUSALS.has(code)

/** GET and HEAD (hono routes HEAD to GET): the whole file, a range of it, or 304. */
async function download(
  c: Context,
  o: FileRoutesOptions & { refuse: Refuse; admit: Admit },
  attempt = 0
): Promise<Response> {
  const { files, metrics, pull, refuse, admit } = o
  const head = c.req.method === 'HEAD'
  const admitted = await admit(c)
  if (admitted instanceof Response) return admitted
  const { name } = admitted
  let info = await files.bucket.info(name)
  if ((!info || isExpired(info)) && pull) {
    const pulled = await pullOnce(pull, name, metrics)
    if (pulled instanceof Error) return refuse(c, pulled.status, pulled.code, pulled.message)
    if (pulled) info = await files.bucket.info(name)
    if (info) files.usage.stored(name, info.size)
  }
  if (!info || isExpired(info)) return refuse(c, 404, 'not_found', `no file '${name}'`)
  const etag = etagOf(info.sha256)
  // Headers describe the file only once it is certain to be sent: a DELETE between `info` and
  // `read` must give a plain 404, not one that claims the deleted file's length.
  const headers: Record<string, string> = {
    ETag: etag,
    'Accept-Ranges': 'bytes',
    'Last-Modified': new Date(info.modifiedAt).toUTCString(),
    'Content-Type': info.meta.contentType ?? 'application/octet-stream',
  }
  const ifNoneMatch = c.req.header('if-none-match')
  if (ifNoneMatch !== undefined && etagListMatches(ifNoneMatch, etag))
    return c.body(null, 304, headers)
  const ifRange = c.req.header('if-range')
  const range =
    ifRange !== undefined && ifRange.trim() !== etag
      ? ({ kind: 'full' } as const)
      : parseRange(c.req.header('range'), info.size)
  if (range.kind === 'unsatisfiable') {
    c.header('ETag', etag)
    c.header('Content-Range', `bytes */${info.size}`)
    return refuse(c, 416, 'range_not_satisfiable', `the file has ${info.size} bytes`)
  }
  const [start, end, status] =
    range.kind === 'partial'
      ? [range.start, range.end, 206 as const]
      : [0, info.size - 1, 200 as const]
  if (status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${info.size}`
  headers['Content-Length'] = String(Math.max(0, end - start + 1))
  if (head) return c.body(null, status, headers)
  const read = await files.bucket.read(name, { start, end })
  if (!read) return refuse(c, 404, 'not_found', `no file '${name}'`)
  // Replaced between `info` and `read`: the headers would describe another version. Ask again.
  if (read.info.sha256 !== info.sha256) {
    await read.body[Symbol.asyncIterator]().return?.()
    if (attempt < 2) return download(c, o, attempt + 1)
    return refuse(c, 503, 'busy', `'${name}' is being replaced; try again`)
  }
  metrics.served.inc()
  metrics.inProgress.inc({ direction: 'out' })
  const body = fromAsyncIterable(read.body, {
    onBytes: (n) => metrics.sent.inc(n),
    onEnd: () => metrics.inProgress.dec({ direction: 'out' }),
  })
  return c.body(body, status, headers)
}

type Refuse = (c: Context, status: number, code: string, message: string) => Response
type Admit = (c: Context) => Promise<{ name: string; caller: FileCaller } | Response>

/** Refusals (counted) and the checks every file request passes first: path, caller, grants. */
function createGate(o: FileRoutesOptions): { refuse: Refuse; admit: Admit } {
  const { metrics } = o
  const refuse = (c: Context, status: number, code: RefusalReason | string, message: string) => {
    if (isRefusal(code)) metrics.refused.inc({ reason: code })
    return c.json({ error: { code, message } }, status as 400)
  }

  /** The file name and its caller, or the answer that refuses the request. */
  async function admit(c: Context): Promise<{ name: string; caller: FileCaller } | Response> {
    const name = parseFilePath(new URL(c.req.url).pathname)
    if (isPathProblem(name)) return refuse(c, 400, name.code, name.message)
    let caller: FileCaller
    try {
      caller = await o.callerOf(c.req.header('authorization'), o.remoteAddress(c))
    } catch (err) {
      if (!(err instanceof AccessError)) throw err
      if (err.status === 401) c.header('WWW-Authenticate', 'Basic realm="uns-bridge files"')
      return refuse(c, err.status, err.status === 401 ? 'unauthorized' : err.code, err.message)
    }
    if (!mayAccess(caller, name))
      return refuse(c, 403, 'forbidden', `'${name}' lies outside what this client was granted`)
    return { name, caller }
  }

  return { refuse, admit }
}

class PullRefusal extends Error {
  constructor(
    readonly status: 502 | 503,
    readonly code: string,
    message: string
  ) {
    super(message)
  }
}

/** Fill `name` from its upstream: true when stored now, false when no upstream has it. */
async function pullOnce(
  pull: PullThrough,
  name: string,
  metrics: FileMetrics
): Promise<boolean | PullRefusal> {
  try {
    const pulled = await pull.fill(name)
    metrics.pulled.inc({ result: pulled ? 'fetched' : 'absent' })
    return pulled
  } catch (err) {
    if (err instanceof PullBusy) {
      metrics.pulled.inc({ result: 'busy' })
      return new PullRefusal(503, 'busy', 'too many files are being fetched from upstreams')
    }
    metrics.pulled.inc({ result: 'failed' })
    const status = (err as { status?: number }).status
    return new PullRefusal(
      502,
      'upstream_unavailable',
      `the upstream could not give '${name}'${status ? ` (HTTP ${status})` : ''}: ${(err as Error).message}`
    )
  }
}
