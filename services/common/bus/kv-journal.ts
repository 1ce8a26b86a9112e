import {
  chmodSync,
  fchmodSync,
  closeSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs'
import { join } from 'node:path'
import type { BusLogger } from './bus.ts'

const PRIVATE_DIR = 0o700 // owner only: other local users must not read the bus state
const PRIVATE_FILE = 0o600

/**
 * The on-disk log of one in-process KV bucket, so the embedded default keeps what a NATS server
 * keeps across a restart: retained messages, persistent sessions and their queued QoS 1 messages
 * (a bridge's backlog while its upstream is down), wills, leases.
 *
 * An append-only file of records, rewritten from the live entries once it is mostly dead ones.
 * Writes go to the file in batches, one write() every `FLUSH_DELAY_MS`, behind the KV call that
 * made them. A key written and erased within one batch never reaches the file: that is a session
 * queue's entry acknowledged within the delay, which is nearly every message on a healthy link.
 * Writing each entry and its erase, and waiting for the write before the call resolved, cost
 * about a quarter of the full bridge path's throughput (README, Benchmarks).
 *
 * A process killed within the delay loses that batch, as a NATS server killed within its own
 * write coalescing would; aedes has a window of the same kind (it acknowledges a QoS 1 PUBLISH
 * before storing it). Once written, a record is in the OS page cache and survives the process;
 * there is no fsync per write, as in JetStream's file store (it syncs every 2 min by default),
 * so a power cut may lose the last moments. A record cut short by a crash is dropped, and the
 * file cut back to the last whole record, when the bucket is opened again.
 *
 * Record: u32 length of the rest, u8 op, f64 revision, f64 write time (ms), u16 key length, key
 * (UTF-8), value (the rest). `erase` appends an ERASE record; `seq` records keep the bucket's
 * last revision when the newest entries were erased, so revisions never go back.
 */
export type JournalOp = 'PUT' | 'DEL' | 'ERASE' | 'SEQ'

/** One key's current entry, as the in-process bucket holds it and the journal replays it. */
export interface JournalEntry {
  value: Uint8Array
  revision: number
  operation: 'PUT' | 'DEL'
  /** Write time in ms (Date.now), for the bucket TTL. */
  at: number
  /** Bytes of this entry's record in the file, when the bucket has a journal. */
  bytes?: number
}

/** Past the bucket TTL: gone, silently (no watch event, as on NATS 2.9). */
export function expired(e: { at: number }, ttlMs: number | undefined, now: number): boolean {
  return ttlMs !== undefined && ttlMs > 0 && now - e.at >= ttlMs
}

export interface KvJournal {
  /**
   * Queue a record for the next batch. `replacedBytes` is the record size of the entry this one
   * replaces or erases; `fresh` says the key had no entry before this PUT, so an ERASE in the
   * same batch cancels both. Returns this record's size.
   */
  append(
    op: JournalOp,
    key: string,
    revision: number,
    at: number,
    value?: Uint8Array,
    replacedBytes?: number,
    fresh?: boolean
  ): number
  /** Write what is queued now, synchronously (closing). */
  flushNow(): void
  close(): void
  /** Close and delete the file (the bucket was destroyed). */
  remove(): void
}

export interface OpenedJournal {
  journal: KvJournal
  entries: Map<string, JournalEntry>
  seq: number
}

const OPS: JournalOp[] = ['PUT', 'DEL', 'ERASE', 'SEQ']
/** How long writes wait to be batched, and how long a crash may reach back. */
export const FLUSH_DELAY_MS = 20
const HEADER_BYTES = 4 + 1 + 8 + 8 + 2
const REWRITE_AT_BYTES = 64 << 20 // 64 MiB: a rewrite (with fsync) now and then, not every second
const DEAD_RATIO = 4 // rewrite once the file is 4× its live records

interface JournalRecord {
  op: JournalOp
  key: string
  revision: number
  at: number
  value: Uint8Array
  /** Encoded size: HEADER_BYTES + key bytes + value bytes. */
  size: number
}

const EMPTY = new Uint8Array(0)

function record(
  op: JournalOp,
  key: string,
  revision: number,
  at: number,
  value: Uint8Array = EMPTY
): JournalRecord {
  return {
    op,
    key,
    revision,
    at,
    value,
    size: HEADER_BYTES + Buffer.byteLength(key) + value.length,
  }
}

/** Encode records into one buffer: a batch is one allocation and one write(). */
function encode(records: readonly JournalRecord[]): Buffer {
  let total = 0
  for (const r of records) total += r.size
  const buf = Buffer.allocUnsafe(total)
  let at = 0
  for (const r of records) {
    const keyAt = at + HEADER_BYTES
    const valueAt = keyAt + buf.write(r.key, keyAt, 'utf8')
    buf.writeUInt32LE(r.size - 4, at)
    buf.writeUInt8(OPS.indexOf(r.op), at + 4)
    buf.writeDoubleLE(r.revision, at + 5)
    buf.writeDoubleLE(r.at, at + 13)
    buf.writeUInt16LE(valueAt - keyAt, at + 21)
    buf.set(r.value, valueAt)
    at += r.size
  }
  return buf
}

interface Replayed {
  entries: Map<string, JournalEntry>
  seq: number
  /** Length of the whole records; anything after it is a torn tail. */
  validBytes: number
}

function replay(file: Buffer, ttlMs: number | undefined, now: number): Replayed {
  const entries = new Map<string, JournalEntry>()
  let seq = 0
  let at = 0
  while (at + 4 <= file.length) {
    const length = file.readUInt32LE(at)
    const end = at + 4 + length
    if (length < HEADER_BYTES - 4 || end > file.length) break
    const op = OPS[file.readUInt8(at + 4)]
    const keyBytes = file.readUInt16LE(at + 21)
    if (op === undefined || HEADER_BYTES + keyBytes > length + 4) break
    const revision = file.readDoubleLE(at + 5)
    const writtenAt = file.readDoubleLE(at + 13)
    const key = file.toString('utf8', at + HEADER_BYTES, at + HEADER_BYTES + keyBytes)
    seq = Math.max(seq, revision)
    if (op === 'PUT' || op === 'DEL') {
      // A copy: the file buffer is dropped once replayed.
      const value = new Uint8Array(file.subarray(at + HEADER_BYTES + keyBytes, end))
      entries.set(key, { value, revision, operation: op, at: writtenAt, bytes: end - at })
    } else if (op === 'ERASE') {
      entries.delete(key)
    }
    at = end
  }
  for (const [key, e] of entries) if (expired(e, ttlMs, now)) entries.delete(key)
  return { entries, seq, validBytes: at }
}

export function openKvJournal({
  dir,
  name,
  ttlMs,
  live,
  log,
  rewriteAtBytes = REWRITE_AT_BYTES,
}: {
  dir: string
  /** The bucket's full name (`<prefix>_<bucket>`): safe as a file name. */
  name: string
  ttlMs: number | undefined
  /** The bucket's current entries and last revision, for a rewrite. */
  live: () => { entries: Map<string, JournalEntry>; seq: number }
  log?: BusLogger
  /** Rewrite once the file is past this size and mostly dead records. */
  rewriteAtBytes?: number
}): OpenedJournal {
  // Private: the journal holds retained messages, queued payloads and wills.
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR })
  chmodSync(dir, PRIVATE_DIR) // a folder made by an older version was 0755
  const path = join(dir, `${name}.kv`)
  const opened = openJournalFile(path, name, ttlMs, log)
  const { entries, seq } = opened
  let { fd, fileBytes, liveBytes } = opened

  // The batch; a cancelled PUT leaves null in its place.
  let pending: Array<JournalRecord | null> = []
  // Keys PUT in this batch with no entry before: their position in `pending`.
  let cancellable = new Map<string, number>()
  let scheduled: ReturnType<typeof setTimeout> | undefined
  let closed = false
  // After a failed append the file may lack records the bucket holds: rewrite it whole next time.
  let broken = false

  function rewrite(): void {
    ;({ fd, fileBytes, liveBytes } = rewriteJournal(path, fd, live(), ttlMs))
  }

  function flush(): void {
    clearTimeout(scheduled)
    scheduled = undefined
    const batch = pending.filter((r): r is JournalRecord => r !== null)
    // Cancelled PUTs took revisions: keep the last one, so a restart never hands them out again.
    if (batch.length < pending.length) batch.push(record('SEQ', '', live().seq, Date.now()))
    pending = []
    cancellable = new Map()
    try {
      if (broken && !closed) {
        rewrite()
        broken = false
      } else if (batch.length > 0 && !closed) {
        const data = encode(batch)
        writeAll(fd, data)
        fileBytes += data.length
        if (fileBytes > rewriteAtBytes && fileBytes > DEAD_RATIO * liveBytes) rewrite()
      }
    } catch (err) {
      broken = true
      log?.error({ err, bucket: name }, 'KV journal write failed; the next write rewrites it whole')
    }
  }

  const journal: KvJournal = {
    append(op, key, revision, at, value, replacedBytes = 0, fresh = false) {
      if (op === 'ERASE') {
        liveBytes -= replacedBytes
        const slot = cancellable.get(key)
        if (slot !== undefined) {
          // Written and erased within the batch: neither reaches the file.
          pending[slot] = null
          cancellable.delete(key)
          return 0
        }
      }
      // Encoded at flush time: a cancelled PUT never is.
      const rec = record(op, key, revision, at, value)
      if (op === 'PUT' || op === 'DEL') liveBytes += rec.size - replacedBytes
      if (op === 'PUT' && fresh) cancellable.set(key, pending.length)
      else cancellable.delete(key)
      pending.push(rec)
      if (scheduled === undefined) {
        scheduled = setTimeout(flush, FLUSH_DELAY_MS)
        // A batch waiting to be written must not keep the process alive; close() writes it.
        ;(scheduled as { unref?: () => void }).unref?.()
      }
      return rec.size
    },
    flushNow() {
      if (scheduled !== undefined) flush()
    },
    close() {
      if (closed) return
      journal.flushNow()
      closed = true
      closeSync(fd)
    },
    remove() {
      journal.close()
      rmSync(path, { force: true })
    },
  }

  return { journal, entries, seq }
}

/**
 * Replay the bucket's file (none yet: empty) and open it for appending, cut back to its last
 * whole record. `fileBytes` is its length, `liveBytes` the part the live entries' records take.
 */
function openJournalFile(
  path: string,
  name: string,
  ttlMs: number | undefined,
  log: BusLogger | undefined
): {
  fd: number
  entries: Map<string, JournalEntry>
  seq: number
  fileBytes: number
  liveBytes: number
} {
  let file: Buffer
  try {
    file = readFileSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    file = Buffer.alloc(0)
  }
  const { entries, seq, validBytes } = replay(file, ttlMs, Date.now())
  const fd = openSync(path, 'a+', PRIVATE_FILE)
  fchmodSync(fd, PRIVATE_FILE) // likewise a file made by an older version
  if (validBytes < file.length) {
    log?.warn(
      { bucket: name, dropped: file.length - validBytes },
      'KV journal ended in a partial record (a crash while writing); dropped it'
    )
    ftruncateSync(fd, validBytes)
  }
  let liveBytes = 0
  for (const e of entries.values()) liveBytes += e.bytes ?? 0
  return { fd, entries, seq, fileBytes: validBytes, liveBytes }
}

function writeAll(target: number, data: Buffer): void {
  for (let off = 0; off < data.length;) off += writeSync(target, data, off)
}

/**
 * Write the live entries to a new file and put it in place of the old (fsynced first, so a crash
 * leaves one whole file or the other). Returns the new append descriptor and the new sizes.
 */
function rewriteJournal(
  path: string,
  fd: number,
  { entries: current, seq: last }: { entries: Map<string, JournalEntry>; seq: number },
  ttlMs: number | undefined
): { fd: number; fileBytes: number; liveBytes: number } {
  const now = Date.now()
  const records: JournalRecord[] = []
  let bytes = 0
  for (const [key, e] of current) {
    if (expired(e, ttlMs, now)) continue
    const rec = record(e.operation, key, e.revision, e.at, e.value)
    e.bytes = rec.size
    records.push(rec)
    bytes += rec.size
  }
  const seqRecord = record('SEQ', '', last, now)
  records.push(seqRecord)
  const tmp = `${path}.tmp`
  const out = openSync(tmp, 'w', PRIVATE_FILE)
  try {
    writeAll(out, encode(records))
    fsyncSync(out)
  } finally {
    closeSync(out)
  }
  renameSync(tmp, path)
  closeSync(fd)
  return {
    fd: openSync(path, 'a+', PRIVATE_FILE),
    fileBytes: bytes + seqRecord.size,
    liveBytes: bytes,
  }
}
