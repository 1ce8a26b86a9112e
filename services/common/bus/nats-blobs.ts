/**
 * Blob buckets over NATS JetStream's Object Store (@nats-io/obj): a stream `OBJ_<bucket>` whose
 * `$O.<bucket>.C.<nuid>` subjects hold one version's chunks (128 KiB each) and whose
 * `$O.<bucket>.M.<base64 name>` subject holds the version's description, published last.
 *
 * Put, all or nothing: ObjectStore.put reads a ReadableStream chunk by chunk, publishing each,
 * and commits by publishing the description; when that stream errors it purges the chunks it
 * sent and publishes nothing, so the previous version stays. Every refusal is therefore made an
 * error of the stream we hand it: the source failing, passing `maxBytes`, and a wrong digest.
 * The digest is known only after the last byte, so there the stream errors instead of closing,
 * before the library commits. No staging object or copy is needed (objects cannot be renamed),
 * and memory stays one chunk.
 *
 * Read: the library's get() pushes every chunk into an unbounded queue (a slow reader would hold
 * the whole object) and cannot skip. Here chunks are fetched one by one, one ahead, as the body
 * is consumed (a message get `next_by_subj` the chunk subject, from the last one's sequence);
 * chunks before the range are skipped by finding the first wanted chunk's sequence through a
 * headers-only consumer (no payloads sent), deleted at once. No consumer lives while the body is
 * read, so an abandoned body has nothing to release but the one chunk asked ahead. A put of the
 * same name purges the old version's chunks: a read still under way then fails with
 * `blob_replaced` rather than mixing versions (the embedded bucket lets it finish the old one).
 */
import { createHash } from 'node:crypto'
import type { JetStreamClient, JetStreamManager, MsgRequest, StoredMsg } from '@nats-io/jetstream'
import { setSha256Backend, type ObjectInfo, type ObjectStore } from '@nats-io/obj'
import { UbError } from '../errors.ts'
import {
  BlobDigestError,
  BlobTooLargeError,
  validateBlobName,
  type BlobBucket,
  type BlobInfo,
  type BlobPutOptions,
} from './blobs.ts'

// The library hashes every chunk too (it stores the digest); node:crypto is far faster than its
// pure-JS default. Process-wide, which is what it is meant to be.
setSha256Backend('native')

const DEFAULT_CHUNK = 128 * 1_024 // ObjectStore.put's default chunk size
const SKIP_TIMEOUT_MS = 10_000

export class BlobReplacedError extends UbError {
  constructor(bucket: string, name: string) {
    super('blob_replaced', `blob ${name} of ${bucket} was replaced or deleted while being read`, {
      details: { bucket, name },
    })
  }
}

/** What ObjectStore.info() and list() give (list hands out the plain stored JSON). */
type StoredInfo = Pick<ObjectInfo, 'name' | 'size' | 'digest' | 'mtime'> & {
  metadata?: Record<string, string>
}

/**
 * The library base64-encodes an object's name into its meta subject with btoa(), which takes only
 * Latin-1 text ('名' throws). Its name is therefore our UTF-8 name's bytes as Latin-1 characters:
 * ASCII names are unchanged, and the subject is the base64 of the UTF-8 bytes, as Go's client
 * makes it. Mapped back on the way out.
 */
const objectName = (name: string): string => Buffer.from(name, 'utf8').toString('latin1')
const blobName = (stored: string): string => Buffer.from(stored, 'latin1').toString('utf8')

function toBlobInfo(o: StoredInfo): BlobInfo {
  // The library's digest is `SHA-256=<base64url>`; ours is hex, as the put computed it.
  const b64 = o.digest.startsWith('SHA-256=') ? o.digest.slice(8) : ''
  return {
    name: blobName(o.name),
    size: o.size,
    sha256: Buffer.from(b64, 'base64url').toString('hex'),
    modifiedAt: Date.parse(o.mtime),
    meta: { ...o.metadata },
  }
}

function isValidName(name: string): boolean {
  try {
    validateBlobName(name)
    return true
  } catch {
    return false
  }
}

export interface NatsBlobsLink {
  os: ObjectStore
  js: JetStreamClient
  jsm: JetStreamManager
  /** The object store's bucket name (its stream is `OBJ_<bucket>`). */
  bucket: string
}

export function wrapNatsBlobs(link: NatsBlobsLink): BlobBucket {
  const { os, bucket } = link
  async function current(name: string): Promise<ObjectInfo | null> {
    // No blob can have an invalid name: absent, as in the embedded bucket (the library throws).
    if (!isValidName(name)) return null
    const info = await os.info(objectName(name))
    return info && !info.deleted ? info : null
  }
  return {
    name: bucket,
    async put(name, content, options = {}) {
      validateBlobName(name)
      const guarded = guardedStream(content, options)
      try {
        const meta = { name: objectName(name), metadata: { ...options.meta } }
        const info = await os.put(meta, guarded.stream)
        return toBlobInfo(info)
      } finally {
        await guarded.release()
      }
    },
    async info(name) {
      const info = await current(name)
      return info ? toBlobInfo(info) : null
    },
    async read(name, { start: from = 0, end = Infinity } = {}) {
      const info = await current(name)
      if (!info) return null
      const start = Math.max(from, 0)
      const last = Math.min(end, info.size - 1)
      const body =
        info.size === 0 || start > last ? emptyBody() : readChunks(link, info, start, last)
      return { info: toBlobInfo(info), body }
    },
    async delete(name) {
      if (!(await current(name))) return false
      await os.delete(objectName(name))
      return true
    },
    async list() {
      const all = (await os.list()) as StoredInfo[]
      return all.map(toBlobInfo)
    },
    async destroy() {
      await os.destroy()
    },
  }
}

/**
 * `content` as the ReadableStream ObjectStore.put reads: counted, hashed, reported to onBytes,
 * and errored (so the library keeps nothing) past maxBytes or on a wrong digest at the end.
 * `release` ends the source when the put stopped reading it early.
 */
function guardedStream(
  content: AsyncIterable<Uint8Array>,
  { maxBytes = Infinity, expectSha256, onBytes }: BlobPutOptions
): { stream: ReadableStream<Uint8Array>; release(): Promise<void> } {
  const source = content[Symbol.asyncIterator]()
  const hash = createHash('sha256')
  let size = 0
  let ended = false
  const stream = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let next: IteratorResult<Uint8Array>
        try {
          next = await source.next()
        } catch (err) {
          ended = true
          throw err
        }
        if (next.done) {
          ended = true
          const sha256 = hash.digest('hex')
          if (expectSha256 !== undefined && expectSha256.toLowerCase() !== sha256)
            throw new BlobDigestError(expectSha256, sha256)
          controller.close()
          return
        }
        const chunk = next.value
        size += chunk.byteLength
        if (size > maxBytes) throw new BlobTooLargeError(maxBytes)
        hash.update(chunk)
        onBytes?.(chunk.byteLength)
        controller.enqueue(chunk)
      },
    },
    // Pull only when the library asks: one chunk in flight, whatever the source's pace.
    { highWaterMark: 0 }
  )
  return {
    stream,
    async release() {
      if (ended) return
      ended = true
      await source.return?.().catch(() => {})
    },
  }
}

async function* emptyBody(): AsyncIterable<Uint8Array> {}

/** Bytes `first`..`last` (inclusive) of the version `info`, fetched a chunk at a time. */
async function* readChunks(
  link: NatsBlobsLink,
  info: ObjectInfo,
  first: number,
  last: number
): AsyncIterable<Uint8Array> {
  const { bucket } = link
  const subject = `$O.${bucket}.C.${info.nuid}`
  const chunkSize = info.options?.max_chunk_size ?? DEFAULT_CHUNK
  const firstChunk = Math.floor(first / chunkSize)
  const lastChunk = Math.floor(last / chunkSize)
  // A whole read checks the digest as the library's get() does; a range cannot.
  const hash = first === 0 && last === info.size - 1 ? createHash('sha256') : undefined
  const seq =
    firstChunk === 0 ? 1 : await chunkSequence(link, subject, firstChunk, blobName(info.name))
  // One chunk is fetched ahead while the caller handles the current one: two in memory at most.
  let ahead: Promise<StoredMsg | null> | undefined = nextChunk(link, subject, seq)
  try {
    for (let i = firstChunk; i <= lastChunk; i++) {
      const m: StoredMsg | null = await ahead!
      if (!m || m.seq >= info.revision) throw new BlobReplacedError(bucket, blobName(info.name))
      ahead = i < lastChunk ? nextChunk(link, subject, m.seq + 1) : undefined
      hash?.update(m.data)
      const offset = i * chunkSize
      // A copy: the message's bytes view the connection's read buffer, which must not be kept.
      yield m.data.slice(Math.max(first - offset, 0), Math.min(last - offset + 1, m.data.length))
    }
  } finally {
    ahead?.catch(() => {}) // abandoned: its answer is dropped
  }
  if (hash) {
    const sha256 = hash.digest('hex')
    const expected = toBlobInfo(info).sha256
    if (sha256 !== expected) throw new BlobDigestError(expected, sha256)
  }
}

/**
 * The first chunk of `subject` at or after `seq`. Any replica answers a direct get (three times
 * faster than the leader's JSON answer); one that has not caught up with a put yet says "not
 * found" (a version's chunks all precede its description, so it cannot give a wrong one), so the
 * leader is asked before that is believed.
 */
async function nextChunk(
  { jsm, bucket }: NatsBlobsLink,
  subject: string,
  seq: number
): Promise<StoredMsg | null> {
  const stream = `OBJ_${bucket}`
  const query = { seq, next_by_subj: subject }
  // `next_by_subj` is in the server's message get since 2.9; the client types list it for
  // direct gets only.
  return (
    (await jsm.direct.getMessage(stream, query)) ??
    (await jsm.streams.getMessage(stream, query as unknown as MsgRequest))
  )
}

/** The stream sequence of chunk `index` (0-based): counted on headers only, no payloads. */
async function chunkSequence(
  { js, bucket }: NatsBlobsLink,
  subject: string,
  index: number,
  name: string
): Promise<number> {
  const consumer = await js.consumers.get(`OBJ_${bucket}`, {
    filter_subjects: subject,
    headers_only: true,
  })
  try {
    const batch = await consumer.fetch({ max_messages: index + 1, expires: SKIP_TIMEOUT_MS })
    let n = 0
    for await (const m of batch) {
      if (n++ === index) return m.seq
    }
  } finally {
    // An ordered consumer outlives its client by minutes unless deleted.
    await consumer.delete().catch(() => false)
  }
  throw new BlobReplacedError(bucket, name)
}
