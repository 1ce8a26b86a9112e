import {
  chmodSync,
  closeSync,
  fchmodSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  rmSync,
} from 'node:fs'
import { join } from 'node:path'
import { ValidationError } from '../errors.ts'
import type { BusLogger } from './bus.ts'
import {
  encode,
  FILE_HEADER,
  record,
  type JournalOp,
  type JournalRecord,
} from './kv-journal-format.ts'
import { READ_CHUNK_BYTES, scanJournal } from './kv-journal-read.ts'
import {
  backgroundRewrites,
  expired,
  liveBytesOf,
  PRIVATE_FILE,
  rewriteJournal,
  writeAll,
} from './kv-journal-rewrite.ts'

export type { JournalOp } from './kv-journal-format.ts'
export { expired } from './kv-journal-rewrite.ts'

const PRIVATE_DIR = 0o700 // owner only: other local users must not read the bus state

/**
 * The on-disk log of one in-process KV bucket, so the embedded default keeps what a NATS server
 * keeps across a restart: retained messages, persistent sessions and their queued QoS 1 messages
 * (a bridge's backlog while its upstream is down), wills, leases.
 *
 * An append-only file of records, rewritten from the live entries once it is mostly dead ones.
 * That rewrite runs in the background (kv-journal-rewrite.ts), a chunk per turn of the event
 * loop: done in one go, ~50 MB live held the loop, so every MQTT client, for 140–170 ms. The new
 * file gets the entries as they were when it began, then every batch appended since; appends go
 * on to the old file meanwhile, so a crash at any moment leaves that one whole, and the new one
 * replaces it in one synchronous step. A rewrite that fails, or falls too far behind the appends,
 * is given up, the old file kept, and tried again once the file has grown by another quarter of
 * the threshold. Only at open (damage, the older format) and after a failed append is the
 * rewrite synchronous: there the bucket must not go on until the file is whole.
 *
 * Writes go to the file in batches, one write() every `FLUSH_DELAY_MS`, behind the KV call that
 * made them. A key written and erased within one batch never reaches the file: that is a session
 * queue's entry acknowledged within the delay, which is nearly every message on a healthy link.
 * Writing each entry and its erase, and waiting for the write before the call resolved, cost
 * about a quarter of the full bridge path's throughput (docs/BENCHMARKS.md).
 *
 * A process killed within the delay loses that batch, as a NATS server killed within its own
 * write coalescing would; aedes has a window of the same kind (it acknowledges a QoS 1 PUBLISH
 * before storing it). Once written, a record is in the OS page cache and survives the process;
 * there is no fsync per write, as in JetStream's file store (it syncs every 2 min by default),
 * so a power cut may lose the last moments.
 *
 * Opening streams the file in chunks (kv-journal-read.ts), so a backlog past 2 GiB (more than one
 * Buffer holds) still opens. Every record carries a magic and a CRC-32 (kv-journal-format.ts): a
 * damaged record is skipped, counted and logged, reading goes on at the next valid record, and
 * the file is rewritten clean. A record cut short by a crash at the end is dropped and the file
 * cut back. A file from an older version (no checksums) is read the old way once and rewritten
 * in the current format at open. `erase` appends an ERASE record; `SEQ` records keep the
 * bucket's last revision when the newest entries were erased, so revisions never go back.
 */
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

/** How long writes wait to be batched, and how long a crash may reach back. */
export const FLUSH_DELAY_MS = 20
const REWRITE_AT_BYTES = 64 << 20 // 64 MiB: a rewrite (with fsync) now and then, not every second
const DEAD_RATIO = 4 // rewrite once the file is 4× its live records
/** Larger records are refused when written and read as damage (`busJournalMaxRecordBytes`). */
export const MAX_RECORD_BYTES = 512 << 20

/** What opening journals found, process-wide, for `/metrics` and the start-up log. */
export interface KvJournalStats {
  /** Damaged records skipped at open (each lost one entry or one erase). */
  damagedRecords: number
  /** Files whose last record was cut short by a crash, cut back at open. */
  tornTails: number
  /** Files in the older format without checksums, rewritten at open. */
  migratedFiles: number
  /** Writes refused because the record would pass the record bound. */
  refusedRecords: number
  /** Background rewrites given up (an error, or too much written meanwhile); the old file kept. */
  abandonedRewrites: number
}
const stats: KvJournalStats = {
  damagedRecords: 0,
  tornTails: 0,
  migratedFiles: 0,
  refusedRecords: 0,
  abandonedRewrites: 0,
}
export const kvJournalStats = (): KvJournalStats => ({ ...stats })

export interface KvJournalOptions {
  dir: string
  /** The bucket's full name (`<prefix>_<bucket>`): safe as a file name. */
  name: string
  ttlMs: number | undefined
  /** The bucket's current entries and last revision, for a rewrite. */
  live: () => { entries: Map<string, JournalEntry>; seq: number }
  log?: BusLogger
  /** Rewrite once the file is past this size and mostly dead records. */
  rewriteAtBytes?: number
  /** Refuse larger records; a larger one read back is damage (`busJournalMaxRecordBytes`). */
  maxRecordBytes?: number
  /** Read the file at open this many bytes at a time; tests lower it. */
  readChunkBytes?: number
}

export function openKvJournal({
  dir,
  name,
  ttlMs,
  live,
  log,
  rewriteAtBytes = REWRITE_AT_BYTES,
  maxRecordBytes = MAX_RECORD_BYTES,
  readChunkBytes = READ_CHUNK_BYTES,
}: KvJournalOptions): OpenedJournal {
  // Private: the journal holds retained messages, queued payloads and wills.
  mkdirSync(dir, { recursive: true, mode: PRIVATE_DIR })
  chmodSync(dir, PRIVATE_DIR) // a folder made by an older version was 0755
  const path = join(dir, `${name}.kv`)
  const opened = openJournalFile(path, { name, ttlMs, log, maxRecordBytes, readChunkBytes })
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
  const background = backgroundRewrites({
    path,
    bucket: name,
    ttlMs,
    live,
    log,
    rewriteAtBytes,
    fileBytes: () => fileBytes,
    install(next) {
      const old = fd
      ;({ fd, fileBytes, liveBytes } = next)
      return old
    },
    gaveUp: () => stats.abandonedRewrites++,
  })

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
        ;({ fd, fileBytes, liveBytes } = rewriteJournal(path, fd, live(), ttlMs))
        broken = false
      } else if (batch.length > 0 && !closed) {
        const data = encode(batch)
        writeAll(fd, data)
        fileBytes += data.length
        background.keep(data)
        if (fileBytes > rewriteAtBytes && fileBytes > DEAD_RATIO * liveBytes) background.start()
      }
    } catch (err) {
      broken = true
      background.abandon() // it would miss the batch that failed
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
      if (rec.size > maxRecordBytes) {
        // Read back, it would be taken for damage: refuse it now, while the caller can hear.
        stats.refusedRecords++
        throw new ValidationError(
          `KV value of ${rec.size} bytes passes the bus journal's record bound of ` +
            `${maxRecordBytes} bytes (busJournalMaxRecordBytes)`
        )
      }
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
      // First, so the last batch cannot start another; the old file is complete without it.
      background.close()
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

interface OpenOptions {
  name: string
  ttlMs: number | undefined
  log: BusLogger | undefined
  maxRecordBytes: number
  readChunkBytes: number
}

/**
 * Replay the bucket's file (none yet: empty) and open it for appending: cut back to its last
 * whole record, or rewritten when it held damage or was in the older format. `fileBytes` is its
 * length, `liveBytes` the part the live entries' records take.
 */
function openJournalFile(
  path: string,
  { name, ttlMs, log, maxRecordBytes, readChunkBytes }: OpenOptions
): {
  fd: number
  entries: Map<string, JournalEntry>
  seq: number
  fileBytes: number
  liveBytes: number
} {
  const entries = new Map<string, JournalEntry>()
  let seq = 0
  const scan = scanJournal(
    path,
    (r) => {
      seq = Math.max(seq, r.revision)
      if (r.op === 'PUT' || r.op === 'DEL') {
        entries.set(r.key, {
          value: r.value,
          revision: r.revision,
          operation: r.op,
          at: r.at,
          bytes: r.size,
        })
      } else if (r.op === 'ERASE') entries.delete(r.key)
    },
    { chunkBytes: readChunkBytes, maxRecordBytes }
  )
  const now = Date.now()
  for (const [key, e] of entries) if (expired(e, ttlMs, now)) entries.delete(key)
  const fd = openSync(path, 'a+', PRIVATE_FILE)
  fchmodSync(fd, PRIVATE_FILE) // likewise a file made by an older version
  const torn = scan.fileBytes - scan.validBytes
  if (scan.damaged.length > 0) {
    stats.damagedRecords += scan.damaged.length
    log?.error(
      { bucket: name, damaged: scan.damaged.length, at: scan.damaged.slice(0, 10) },
      'KV journal held damaged records (checksum or framing); skipped them, kept the rest'
    )
  }
  if (scan.format === 1) {
    stats.migratedFiles++
    log?.warn({ bucket: name }, 'KV journal in the older format; rewriting it with checksums')
  }
  if (scan.format === 1 || scan.damaged.length > 0) {
    const rewritten = rewriteJournal(path, fd, { entries, seq }, ttlMs)
    return { ...rewritten, entries, seq }
  }
  if (scan.fileBytes < FILE_HEADER.length) {
    // New (or cut within its header): start it with the header.
    ftruncateSync(fd, 0)
    writeAll(fd, FILE_HEADER)
    return { fd, entries, seq, fileBytes: FILE_HEADER.length, liveBytes: 0 }
  }
  if (torn > 0) {
    stats.tornTails++
    log?.warn(
      { bucket: name, dropped: torn },
      'KV journal ended in a partial record (a crash while writing); dropped it'
    )
    ftruncateSync(fd, scan.validBytes)
  }
  return { fd, entries, seq, fileBytes: scan.validBytes, liveBytes: liveBytesOf(entries, ttlMs) }
}
