import {
  close,
  closeSync,
  constants,
  fsync,
  fsyncSync,
  openSync,
  renameSync,
  rmSync,
  write,
  writeSync,
} from 'node:fs'
import { encode, FILE_HEADER, record, type JournalRecord } from './kv-journal-format.ts'
import type { BusLogger } from './bus.ts'
import type { JournalEntry } from './kv-journal.ts'

/**
 * Rewriting a KV journal (kv-journal.ts) from its bucket's live entries: synchronously where the
 * bucket must wait for it (at open, after a failed append), else in the background.
 */

export const PRIVATE_FILE = 0o600 // owner only: retained messages, queued payloads, wills

/** A rewrite's synchronous work between two awaits: about a millisecond of encoding. */
export const REWRITE_CHUNK_BYTES = 1 << 20
// Small records cost per record more than per byte: 2,000 take about a millisecond too.
const CHUNK_RECORDS = 2_000
/** Appended during a background rewrite and held for the new file: past this, it gives up. */
export const MAX_KEPT_BYTES = 64 << 20

/** Past the bucket TTL: gone, silently (no watch event, as on NATS 2.9). */
export function expired(e: { at: number }, ttlMs: number | undefined, now: number): boolean {
  return ttlMs !== undefined && ttlMs > 0 && now - e.at >= ttlMs
}

export interface Live {
  entries: Map<string, JournalEntry>
  seq: number
}

/** The file bytes the entries' own records take: what a rewrite keeps. */
export function liveBytesOf(entries: Map<string, JournalEntry>, ttlMs: number | undefined): number {
  const now = Date.now()
  let bytes = 0
  for (const e of entries.values()) if (!expired(e, ttlMs, now)) bytes += e.bytes ?? 0
  return bytes
}

export function writeAll(target: number, data: Buffer): void {
  for (let off = 0; off < data.length;) off += writeSync(target, data, off)
}

/**
 * Write the live entries to a new file and put it in place of the old (fsynced first, so a crash
 * leaves one whole file or the other). Returns the new append descriptor and the new sizes.
 */
export function rewriteJournal(
  path: string,
  fd: number,
  { entries: current, seq: last }: Live,
  ttlMs: number | undefined
): Rewritten {
  const tmp = `${path}.tmp`
  const out = openSync(tmp, 'w', PRIVATE_FILE)
  let fileBytes = 0
  try {
    // A chunk at a time, as the background rewrite encodes them: one Buffer cannot hold a 2 GiB
    // backlog either, nor should all of its chunks be in memory at once.
    const append = (data: Buffer) => {
      writeAll(out, data)
      fileBytes += data.length
    }
    for (const data of snapshotChunks({ entries: current, seq: last }, ttlMs, 8 << 20)) append(data)
    append(encode([record('SEQ', '', last, Date.now())]))
    fsyncSync(out)
  } finally {
    closeSync(out)
  }
  renameSync(tmp, path)
  closeSync(fd)
  return {
    fd: openSync(path, 'a+', PRIVATE_FILE),
    fileBytes,
    liveBytes: liveBytesOf(current, ttlMs),
  }
}

/** A rewritten journal: its append descriptor, its length, the part live records take. */
export interface Rewritten {
  fd: number
  fileBytes: number
  liveBytes: number
}

export interface BackgroundRewrite {
  /** A batch just appended to the old file: it follows the snapshot in the new one. */
  keep(data: Buffer): void
  /** Give up (closing, or the old file took a failed append): the tmp file goes now. */
  abandon(): void
}

export interface BackgroundOptions {
  path: string
  ttlMs: number | undefined
  live: () => Live
  /**
   * Called synchronously once the new file has been renamed into place; `next.fd` appends to it
   * and is the caller's from now on. Must not throw.
   */
  install(next: Rewritten): void
  /** The rewrite stopped on its own (an error, or too much kept): the old file stays. */
  failed(err: unknown, why: string): void
  chunkBytes?: number
  maxKeptBytes?: number
}

// Appends, like the journal's own descriptor: after the rename this one becomes it.
const NEW_APPEND = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_APPEND

/**
 * Rewrite the journal at `path` without holding the event loop: a synchronous rewrite of ~50 MB
 * live held every client for 140–170 ms. The entries as they are now (see `snapshotChunks`) are
 * encoded and written to `<path>.tmp` a chunk per turn of the loop. The old file takes every
 * append meanwhile, so a crash at any moment leaves it whole; each of those batches is also held
 * (`keep`) and written after the snapshot. After an async fsync, one synchronous step writes the
 * last kept batches, renames the tmp file over the journal and hands its descriptor over (those
 * last batches are not fsynced, as no append is). Throws only if the tmp file cannot be opened.
 */
export function startBackgroundRewrite(opts: BackgroundOptions): BackgroundRewrite {
  const {
    path,
    ttlMs,
    live,
    chunkBytes = REWRITE_CHUNK_BYTES,
    maxKeptBytes = MAX_KEPT_BYTES,
  } = opts
  const tmp = `${path}.tmp`
  const snapshot = snapshotChunks(live(), ttlMs, chunkBytes)
  const out = openSync(tmp, NEW_APPEND, PRIVATE_FILE)
  let kept: Buffer[] = []
  let keptBytes = 0
  let written = 0
  // Abandoned, failed or installed: nothing more is written to `out`, nor done to `tmp`.
  let over = false
  let installed = false

  const stop = () => {
    if (over) return
    over = true
    // Now, synchronously: a later rewrite reuses the name, and any write still in flight lands
    // in the unlinked file.
    rmSync(tmp, { force: true })
  }

  /** Write kept batches, a chunk at a time, until at most `leave` bytes of them are held. */
  const drain = async (leave: number) => {
    while (!over && keptBytes > leave) {
      let take = 0
      for (let size = 0; take < kept.length && (take === 0 || size < chunkBytes); take++)
        size += kept[take]!.length
      const data = take === 1 ? kept[0]! : Buffer.concat(kept.slice(0, take))
      kept = kept.slice(take)
      keptBytes -= data.length
      await writeAllAsync(out, data)
      written += data.length
    }
  }

  const run = async () => {
    for (const data of snapshot) {
      await writeAllAsync(out, data)
      written += data.length
      if (over) return
    }
    await drain(0)
    if (over) return
    const seq = encode([record('SEQ', '', live().seq, Date.now())])
    await writeAllAsync(out, seq)
    written += seq.length
    if (over) return
    await fsyncAsync(out)
    // Batches kept during the fsync: most are written here, so the last step stays short.
    await drain(chunkBytes)
    if (over) return
    // From here one synchronous step: no append may reach the old file and miss the new one.
    const rest = Buffer.concat(kept)
    writeAll(out, rest)
    renameSync(tmp, path)
    over = installed = true
    // Summed from the bucket now: entries replaced meanwhile carry their own record's size.
    opts.install({
      fd: out,
      fileBytes: written + rest.length,
      liveBytes: liveBytesOf(live().entries, ttlMs),
    })
  }

  void run()
    .catch((err: unknown) => {
      if (over) return // abandoned: what failed was writing to a file nobody will read
      stop()
      opts.failed(err, 'writing the new file failed')
    })
    .finally(() => {
      // Off the loop, as closing it frees what was written; only ours and unlinked: no report.
      if (!installed) close(out, () => {})
    })

  return {
    keep(data) {
      if (over) return
      kept.push(data)
      keptBytes += data.length
      if (keptBytes > maxKeptBytes) {
        // The bucket writes faster than the rewrite catches up: hold no more, try again later.
        stop()
        opts.failed(undefined, `held ${keptBytes} bytes written meanwhile`)
      }
    },
    abandon: stop,
  }
}

/**
 * A journal's background rewrites: one at a time; after one is given up, the next waits until
 * the file has grown by another quarter of the threshold, so a full disk is not tried in a loop.
 */
export function backgroundRewrites(
  opts: Omit<BackgroundOptions, 'failed' | 'install'> & {
    /** Put the new file in place; returns the replaced one's descriptor, closed here. */
    install(next: Rewritten): number
    bucket: string
    log: BusLogger | undefined
    rewriteAtBytes: number
    /** The old file's length now. */
    fileBytes: () => number
    /** Count one given up. */
    gaveUp: () => void
  }
) {
  const { bucket, log } = opts
  let current: BackgroundRewrite | undefined
  let retryAt = 0
  const failed = (err: unknown, why: string) => {
    current = undefined
    opts.gaveUp()
    retryAt = opts.fileBytes() + opts.rewriteAtBytes / 4
    const msg = 'KV journal rewrite given up; kept the old file, will retry'
    if (err === undefined) log?.warn({ bucket, why }, msg)
    else log?.error({ err, bucket, why }, msg)
  }
  const install = (next: Rewritten) => {
    current = undefined
    const old = opts.install(next)
    // Off the loop: closing the last descriptor of the replaced file frees its blocks, which
    // took 20–150 ms for a few hundred MB.
    close(
      old,
      (err) => err && log?.warn({ err, bucket }, 'KV journal: closing the old file failed')
    )
  }
  const abandon = () => {
    current?.abandon()
    current = undefined
  }
  return {
    /** Start one, unless one is under way or the last gave up too recently. */
    start(): void {
      if (current !== undefined || opts.fileBytes() < retryAt) return
      try {
        current = startBackgroundRewrite({ ...opts, install, failed })
      } catch (err) {
        failed(err, 'could not open the new file')
      }
    },
    /** A batch just appended to the old file. */
    keep(data: Buffer): void {
      current?.keep(data)
    },
    abandon,
    /** Abandon, and start no other: the journal is closing. */
    close(): void {
      abandon()
      retryAt = Infinity
    },
  }
}

/**
 * The entries as they were at this call, encoded a chunk per step (the file header first).
 * Read from the bucket's map as the rewrite goes rather than copied now, as copying 400,000
 * entries held the loop for 30–80 ms: the bucket replaces an entry rather than change it, so one
 * met with a revision up to `seq` is as it was; one written since has a later revision and is
 * skipped, its record being among the kept batches (or, erased within its batch, in none); one
 * erased since is not met, or met and then erased by a kept ERASE.
 */
function* snapshotChunks(
  { entries, seq }: Live,
  ttlMs: number | undefined,
  chunkBytes: number
): Generator<Buffer> {
  const now = Date.now()
  const from = entries.entries()
  for (let done = false, first = true; !done; first = false) {
    const batch: JournalRecord[] = []
    for (let size = 0; size < chunkBytes && batch.length < CHUNK_RECORDS;) {
      const next = from.next()
      if (next.done) {
        done = true
        break
      }
      const [key, e] = next.value
      if (e.revision > seq || expired(e, ttlMs, now)) continue
      const rec = record(e.operation, key, e.revision, e.at, e.value)
      e.bytes = rec.size
      batch.push(rec)
      size += rec.size
    }
    yield encode(batch, first)
  }
}

async function writeAllAsync(fd: number, data: Buffer): Promise<void> {
  for (let off = 0; off < data.length;) {
    off += await new Promise<number>((resolve, reject) =>
      write(fd, data, off, data.length - off, null, (err, n) => (err ? reject(err) : resolve(n)))
    )
  }
}

function fsyncAsync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())))
}
