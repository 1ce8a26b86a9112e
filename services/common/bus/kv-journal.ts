import {
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

/**
 * The on-disk log of one in-process KV bucket, so the embedded default keeps what a NATS server
 * keeps across a restart: retained messages, persistent sessions and their queued QoS 1 messages
 * (a bridge's backlog while its upstream is down), wills, leases.
 *
 * An append-only file of records, rewritten from the live entries once it is mostly dead ones
 * (a session queue writes and erases every message). The writes of one turn of the event loop
 * go to the file with one write() at the end of that turn (setImmediate), behind the KV call that
 * made them: a process killed in that turn loses them, the same window in which aedes has already
 * acknowledged a QoS 1 PUBLISH it has not yet stored. Waiting for the write before resolving
 * cost a quarter of the full bridge path's throughput (README, Benchmarks). Once written, a
 * record is in the OS page cache and survives the process; there is no fsync per write, as in
 * JetStream's file store (it syncs every 2 min by default), so a power cut may lose the last
 * moments. A record cut short by a crash is dropped, and the file cut back to the last whole
 * record, when the bucket is opened again.
 *
 * Record: u32 length of the rest, u8 op, f64 revision, f64 write time (ms), u16 key length, key
 * (UTF-8), value (the rest). `erase` appends an ERASE record; `seq` records keep the bucket's
 * last revision when the newest entries were erased, so revisions never go back.
 */
export type JournalOp = 'PUT' | 'DEL' | 'ERASE' | 'SEQ'

export interface JournalEntry {
  value: Uint8Array
  revision: number
  operation: 'PUT' | 'DEL'
  at: number
  /** Bytes of this entry's record in the file: what a rewrite would keep. */
  bytes?: number
}

export interface KvJournal {
  /**
   * Queue a record; it reaches the file at the next turn of the event loop. `replacedBytes` is
   * the record size of the entry this one replaces or erases. Returns this record's size.
   */
  append(
    op: JournalOp,
    key: string,
    revision: number,
    at: number,
    value?: Uint8Array,
    replacedBytes?: number
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
const HEADER_BYTES = 4 + 1 + 8 + 8 + 2
const MIN_REWRITE_BYTES = 64 << 20 // 64 MiB: a rewrite (with fsync) now and then, not every second under load
const DEAD_RATIO = 4 // rewrite once the file is 4× its live records

export function encodeRecord(
  op: JournalOp,
  key: string,
  revision: number,
  at: number,
  value: Uint8Array = new Uint8Array(0)
): Buffer {
  const keyBytes = Buffer.byteLength(key)
  const buf = Buffer.allocUnsafe(HEADER_BYTES + keyBytes + value.length)
  buf.writeUInt32LE(buf.length - 4, 0)
  buf.writeUInt8(OPS.indexOf(op), 4)
  buf.writeDoubleLE(revision, 5)
  buf.writeDoubleLE(at, 13)
  buf.writeUInt16LE(keyBytes, 21)
  buf.write(key, HEADER_BYTES, 'utf8')
  buf.set(value, HEADER_BYTES + keyBytes)
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
  if (ttlMs) {
    for (const [key, e] of entries) if (now - e.at >= ttlMs) entries.delete(key)
  }
  return { entries, seq, validBytes: at }
}

export function openKvJournal({
  dir,
  name,
  ttlMs,
  live,
  log,
}: {
  dir: string
  /** The bucket's full name (`<prefix>_<bucket>`): safe as a file name. */
  name: string
  ttlMs: number | undefined
  /** The bucket's current entries and last revision, for a rewrite. */
  live: () => { entries: Map<string, JournalEntry>; seq: number }
  log?: BusLogger
}): OpenedJournal {
  mkdirSync(dir, { recursive: true })
  const path = join(dir, `${name}.kv`)
  let file: Buffer
  try {
    file = readFileSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    file = Buffer.alloc(0)
  }
  const { entries, seq, validBytes } = replay(file, ttlMs, Date.now())
  let fd = openSync(path, 'a+')
  if (validBytes < file.length) {
    log?.warn(
      { bucket: name, dropped: file.length - validBytes },
      'KV journal ended in a partial record (a crash while writing); dropped it'
    )
    ftruncateSync(fd, validBytes)
  }
  let fileBytes = validBytes
  let liveBytes = 0
  for (const e of entries.values()) liveBytes += e.bytes ?? 0

  let pending: Buffer[] = []
  let scheduled = false
  let closed = false
  // After a failed append the file may lack records the bucket holds: rewrite it whole next time.
  let broken = false

  function writeAll(target: number, data: Buffer): void {
    for (let off = 0; off < data.length;) off += writeSync(target, data, off)
  }

  function rewrite(): void {
    const { entries: current, seq: last } = live()
    const now = Date.now()
    const parts: Buffer[] = []
    let bytes = 0
    for (const [key, e] of current) {
      if (ttlMs && now - e.at >= ttlMs) continue
      const rec = encodeRecord(e.operation, key, e.revision, e.at, e.value)
      e.bytes = rec.length
      parts.push(rec)
      bytes += rec.length
    }
    const seqRecord = encodeRecord('SEQ', '', last, now)
    parts.push(seqRecord)
    const tmp = `${path}.tmp`
    const out = openSync(tmp, 'w')
    try {
      writeAll(out, Buffer.concat(parts))
      fsyncSync(out)
    } finally {
      closeSync(out)
    }
    renameSync(tmp, path)
    closeSync(fd)
    fd = openSync(path, 'a+')
    fileBytes = bytes + seqRecord.length
    liveBytes = bytes
  }

  function flush(): void {
    scheduled = false
    const batch = pending
    pending = []
    try {
      if (broken && !closed) {
        rewrite()
        broken = false
      } else if (batch.length > 0 && !closed) {
        const data = batch.length === 1 ? batch[0]! : Buffer.concat(batch)
        writeAll(fd, data)
        fileBytes += data.length
        if (fileBytes > MIN_REWRITE_BYTES && fileBytes > DEAD_RATIO * liveBytes) rewrite()
      }
    } catch (err) {
      broken = true
      log?.error({ err, bucket: name }, 'KV journal write failed; the next write rewrites it whole')
    }
  }

  const journal: KvJournal = {
    append(op, key, revision, at, value, replacedBytes = 0) {
      const rec = encodeRecord(op, key, revision, at, value)
      if (op === 'PUT' || op === 'DEL') liveBytes += rec.length - replacedBytes
      else if (op === 'ERASE') liveBytes -= replacedBytes
      pending.push(rec)
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
      return rec.length
    },
    flushNow() {
      if (scheduled) flush()
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
