import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import {
  decodeV1,
  decodeV2,
  FILE_HEADER,
  MAGIC_BYTES,
  PREFIX_BYTES,
  recordLength,
  V1_HEADER_BYTES,
  v1RecordLength,
  type DecodedRecord,
} from './kv-journal-format.ts'

/** Read this much at a time: the file is never read whole (a bridge backlog may pass 2 GiB). */
export const READ_CHUNK_BYTES = 1 << 20

export interface ScanResult {
  /** 1: an older version's file (no checksums), to be rewritten; 2: current. */
  format: 1 | 2
  /** End of the last whole record: anything after it is a torn tail. */
  validBytes: number
  fileBytes: number
  /** Damaged records skipped (format 2: each followed by a valid record found by its magic). */
  damaged: Array<{ offset: number; bytes: number }>
  /** The largest the read buffer grew: a chunk, or one record when a record is larger. */
  peakBufferBytes: number
}

/**
 * A sliding window over a file: `fill(pos, n)` makes bytes [pos, pos + n) readable at
 * `buf[pos - start]`, dropping what lies before `pos`. The buffer holds a chunk, or one record
 * when a record is larger (records are bounded by `maxRecordBytes`).
 */
class Window {
  buf: Buffer
  start = 0
  len = 0
  peak: number
  constructor(
    private readonly fd: number,
    private readonly size: number,
    private readonly chunk: number
  ) {
    this.buf = Buffer.allocUnsafe(chunk)
    this.peak = chunk
  }
  fill(pos: number, n: number): boolean {
    if (pos + n > this.size) return false
    if (pos >= this.start && pos + n <= this.start + this.len) return true
    const keep = pos >= this.start && pos < this.start + this.len ? this.start + this.len - pos : 0
    if (n > this.buf.length) {
      const grown = Buffer.allocUnsafe(n)
      this.buf.copy(grown, 0, pos - this.start, pos - this.start + keep)
      this.buf = grown
      this.peak = Math.max(this.peak, n)
    } else if (keep > 0) {
      this.buf.copy(this.buf, 0, pos - this.start, pos - this.start + keep)
    }
    this.start = pos
    this.len = keep
    // Read at least a chunk ahead, so a run of small records costs one read per chunk.
    const want = Math.min(Math.max(n, Math.min(this.chunk, this.buf.length)), this.size - pos)
    while (this.len < want) {
      const got = readSync(this.fd, this.buf, this.len, want - this.len, pos + this.len)
      if (got === 0) return false
      this.len += got
    }
    return true
  }
  /** Offset in the buffer of file position `pos` (after a successful `fill`). */
  at(pos: number): number {
    return pos - this.start
  }
}

/**
 * Stream the journal at `path` through `onRecord`, oldest first. A missing file reads as empty.
 * Format 2 skips a damaged record and carries on at the next valid one; a damaged record with no
 * valid one after it is a torn tail. Format 1 stops at the first bad record, as it always did.
 */
export function scanJournal(
  path: string,
  onRecord: (r: DecodedRecord) => void,
  { chunkBytes = READ_CHUNK_BYTES, maxRecordBytes }: { chunkBytes?: number; maxRecordBytes: number }
): ScanResult {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    return { format: 2, validBytes: 0, fileBytes: 0, damaged: [], peakBufferBytes: 0 }
  }
  try {
    const size = fstatSync(fd).size
    const win = new Window(fd, size, Math.max(chunkBytes, 64))
    const format = detectFormat(win, size, maxRecordBytes)
    const scan = format === 1 ? scanV1 : scanV2
    const { validBytes, damaged } = scan(win, maxRecordBytes, onRecord)
    return { format, validBytes, fileBytes: size, damaged, peakBufferBytes: win.peak }
  } finally {
    closeSync(fd)
  }
}

/**
 * Format 2 when the file starts with its header (or is empty). Otherwise format 1 only if the
 * first record parses as one: a format-2 file whose header was damaged is still read as format 2.
 */
function detectFormat(win: Window, size: number, maxRecordBytes: number): 1 | 2 {
  if (size === 0) return 2
  if (win.fill(0, FILE_HEADER.length)) {
    const b = win.buf.subarray(win.at(0), win.at(0) + FILE_HEADER.length)
    if (b.equals(FILE_HEADER)) return 2
  }
  if (!win.fill(0, V1_HEADER_BYTES)) return 2
  const length = v1RecordLength(win.buf, win.at(0), maxRecordBytes)
  if (length === null || !win.fill(0, length)) return 2
  return decodeV1(win.buf, win.at(0), length) === null ? 2 : 1
}

type Scan = (
  win: Window,
  maxRecordBytes: number,
  onRecord: (r: DecodedRecord) => void
) => { validBytes: number; damaged: ScanResult['damaged'] }

const scanV1: Scan = (win, maxRecordBytes, onRecord) => {
  let pos = 0
  while (win.fill(pos, V1_HEADER_BYTES)) {
    const length = v1RecordLength(win.buf, win.at(pos), maxRecordBytes)
    if (length === null || !win.fill(pos, length)) break
    const r = decodeV1(win.buf, win.at(pos), length)
    if (r === null) break
    onRecord(r)
    pos += length
  }
  return { validBytes: pos, damaged: [] }
}

const scanV2: Scan = (win, maxRecordBytes, onRecord) => {
  const damaged: ScanResult['damaged'] = []
  let pos = FILE_HEADER.length
  for (;;) {
    const r = recordAt(win, pos, maxRecordBytes)
    if (r !== null) {
      onRecord(r)
      pos += r.size
      continue
    }
    if (!win.fill(pos, 1)) return { validBytes: pos, damaged } // the end, cleanly
    const next = nextValid(win, pos + 1, maxRecordBytes)
    if (next === null) return { validBytes: pos, damaged } // nothing whole after it: torn
    damaged.push({ offset: pos, bytes: next.pos - pos })
    onRecord(next.record)
    pos = next.pos + next.record.size
  }
}

function recordAt(win: Window, pos: number, maxRecordBytes: number): DecodedRecord | null {
  if (!win.fill(pos, PREFIX_BYTES)) return null
  const size = recordLength(win.buf, win.at(pos), maxRecordBytes)
  if (size === null || !win.fill(pos, size)) return null
  return decodeV2(win.buf, win.at(pos), size)
}

/** The first valid record at or after `from`, found by its magic; null if none before the end. */
function nextValid(
  win: Window,
  from: number,
  maxRecordBytes: number
): { pos: number; record: DecodedRecord } | null {
  let pos = from
  while (win.fill(pos, MAGIC_BYTES.length)) {
    const i = win.buf.indexOf(MAGIC_BYTES, win.at(pos))
    if (i === -1 || i + MAGIC_BYTES.length > win.len) {
      // Not in this window: move on, keeping the last bytes in case a magic straddles the edge.
      pos = win.start + Math.max(win.at(pos) + 1, win.len - MAGIC_BYTES.length + 1)
      continue
    }
    const candidate = win.start + i
    const record = recordAt(win, candidate, maxRecordBytes)
    if (record !== null) return { pos: candidate, record }
    pos = candidate + 1
  }
  return null
}
