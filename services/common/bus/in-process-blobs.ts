/**
 * Blob buckets of the embedded default: a folder per bucket. Each version's bytes go to their own
 * file (`d/<random>`), written to the end before a small metadata file (`m/<sha256 of name>.json`)
 * is renamed over the old one: the rename is the commit, so a reader sees a whole version or the
 * previous one, and a crash mid-put leaves only an orphan data file (removed on the next open).
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import {
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { once } from 'node:events'
import { finished } from 'node:stream/promises'
import {
  BlobDigestError,
  BlobTooLargeError,
  validateBlobName,
  type BlobBucket,
  type BlobInfo,
  type BlobPutOptions,
  type BlobReadRange,
} from './blobs.ts'

interface StoredMeta extends BlobInfo {
  /** The data file holding this version. */
  data: string
}

const ORPHAN_AGE_MS = 3_600_000 // 1 h without a write: no put is still filling it

const metaFile = (name: string) => createHash('sha256').update(name).digest('hex') + '.json'

/** Open (creating) the bucket's folder `<root>/<bucket>`; data files no version names are removed. */
export async function openFolderBlobs(root: string, bucket: string): Promise<BlobBucket> {
  const dir = join(root, bucket)
  const dataDir = join(dir, 'd')
  const metaDir = join(dir, 'm')
  await mkdir(dataDir, { recursive: true, mode: 0o700 })
  await mkdir(metaDir, { recursive: true, mode: 0o700 })
  await removeOrphans(dataDir, metaDir)

  async function readMeta(name: string): Promise<StoredMeta | null> {
    try {
      return JSON.parse(await readFile(join(metaDir, metaFile(name)), 'utf8')) as StoredMeta
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
  }
  const publicInfo = ({ data: _data, ...info }: StoredMeta): BlobInfo => info

  return {
    name: bucket,
    async put(name, content, options: BlobPutOptions = {}) {
      validateBlobName(name)
      const data = randomBytes(12).toString('hex')
      const path = join(dataDir, data)
      let written: { size: number; sha256: string }
      try {
        written = await writeAll(path, content, options)
      } catch (err) {
        await rm(path, { force: true })
        throw err
      }
      const stored: StoredMeta = {
        name,
        ...written,
        modifiedAt: Date.now(),
        meta: { ...options.meta },
        data,
      }
      const before = await readMeta(name)
      const target = join(metaDir, metaFile(name))
      const temp = `${target}.${data}.tmp`
      await writeFile(temp, JSON.stringify(stored), { mode: 0o600 })
      await rename(temp, target)
      // A reader that opened the old version keeps its file open; unlinking does not cut it.
      if (before) await rm(join(dataDir, before.data), { force: true })
      return publicInfo(stored)
    },
    async info(name) {
      const stored = await readMeta(name)
      return stored ? publicInfo(stored) : null
    },
    async read(name, range: BlobReadRange = {}) {
      // A put may replace the version between reading its metadata and opening its file: ask again.
      for (let attempt = 0; attempt < 3; attempt++) {
        const stored = await readMeta(name)
        if (!stored) return null
        const body = await openRange(join(dataDir, stored.data), stored.size, range)
        if (body) return { info: publicInfo(stored), body }
      }
      return null
    },
    async delete(name) {
      const stored = await readMeta(name)
      if (!stored) return false
      await rm(join(metaDir, metaFile(name)), { force: true })
      await rm(join(dataDir, stored.data), { force: true })
      return true
    },
    async list() {
      const files = (await readdir(metaDir)).filter((f) => f.endsWith('.json'))
      const infos = await Promise.all(
        files.map(async (f) => {
          try {
            return publicInfo(JSON.parse(await readFile(join(metaDir, f), 'utf8')) as StoredMeta)
          } catch {
            return null // deleted meanwhile
          }
        })
      )
      return infos.filter((i): i is BlobInfo => i !== null)
    },
    async destroy() {
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/** Write `content` to `path`, counting and hashing as it goes; refuses past maxBytes or a wrong digest. */
async function writeAll(
  path: string,
  content: AsyncIterable<Uint8Array>,
  { maxBytes = Infinity, expectSha256, onBytes }: BlobPutOptions
): Promise<{ size: number; sha256: string }> {
  const out = createWriteStream(path, { mode: 0o600 })
  // Listened to from the start: an error after a failed put destroyed the stream (a write still
  // pending) would otherwise be unhandled and end the process.
  let failure: unknown
  out.on('error', (err) => (failure ??= err))
  const hash = createHash('sha256')
  let size = 0
  try {
    for await (const chunk of content) {
      size += chunk.byteLength
      if (size > maxBytes) throw new BlobTooLargeError(maxBytes)
      hash.update(chunk)
      onBytes?.(chunk.byteLength)
      // Back-pressure: wait for the disk when its buffer is full, so memory stays flat.
      if (!out.write(chunk)) await once(out, 'drain')
      if (failure) throw failure
    }
    out.end()
    await finished(out)
  } catch (err) {
    out.destroy()
    await finished(out).catch(() => {})
    throw err
  }
  const sha256 = hash.digest('hex')
  if (expectSha256 !== undefined && expectSha256.toLowerCase() !== sha256)
    throw new BlobDigestError(expectSha256, sha256)
  return { size, sha256 }
}

/** A stream of `path` within `range`, or null when the file is gone (replaced meanwhile). */
async function openRange(
  path: string,
  size: number,
  { start = 0, end = size - 1 }: BlobReadRange
): Promise<AsyncIterable<Uint8Array> | null> {
  const last = Math.min(end, size - 1)
  if (size === 0 || start > last) return emptyBody()
  const stream = createReadStream(path, { start, end: last, highWaterMark: 256 * 1_024 })
  try {
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve())
      stream.once('error', reject)
    })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw err
  }
  return stream
}

async function* emptyBody(): AsyncIterable<Uint8Array> {}

async function removeOrphans(dataDir: string, metaDir: string): Promise<void> {
  const named = new Set<string>()
  for (const f of await readdir(metaDir)) {
    if (f.endsWith('.tmp')) {
      await unlink(join(metaDir, f)).catch(() => {})
      continue
    }
    try {
      named.add((JSON.parse(await readFile(join(metaDir, f), 'utf8')) as StoredMeta).data)
    } catch {
      // unreadable metadata: its data file stays, the name reads as absent
    }
  }
  // Another process sharing the folder may be writing a version right now: only old ones go.
  const before = Date.now() - ORPHAN_AGE_MS
  for (const f of await readdir(dataDir)) {
    if (named.has(f)) continue
    const path = join(dataDir, f)
    const stats = await stat(path).catch(() => null)
    if (stats && stats.mtimeMs < before) await unlink(path).catch(() => {})
  }
}

/** A private temporary root for a bus without a data folder (tests); removed by `remove`. */
export async function temporaryBlobRoot(): Promise<{ root: string; remove(): Promise<void> }> {
  const root = await mkdtemp(join(tmpdir(), 'ub-blobs-'))
  return { root, remove: () => rm(root, { recursive: true, force: true }) }
}
