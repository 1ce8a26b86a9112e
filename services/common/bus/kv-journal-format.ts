import * as zlib from 'node:zlib'

/**
 * The bytes of a KV journal file (kv-journal.ts), both formats.
 *
 * Format 2 (written since the checksum): an 8-byte file header `UBKVJ2\r\n`, then records of
 *   u32 MAGIC, u32 crc32 of everything after it, u32 length of what follows the length,
 *   u8 op, f64 revision, f64 write time (ms), u16 key length, key (UTF-8), value (the rest).
 * The magic lets a reader find the next record after a damaged one; the checksum covers the
 * length too, so a flipped length is found rather than followed.
 *
 * Format 1 (older versions; read once, then rewritten as format 2): no file header, records of
 *   u32 length of the rest, u8 op, f64 revision, f64 write time, u16 key length, key, value.
 */
export type JournalOp = 'PUT' | 'DEL' | 'ERASE' | 'SEQ'
export const OPS: readonly JournalOp[] = ['PUT', 'DEL', 'ERASE', 'SEQ']

export const FILE_HEADER = Buffer.from('UBKVJ2\r\n', 'latin1')
export const MAGIC = 0xe14a_32b5
export const MAGIC_BYTES = Buffer.from([0xb5, 0x32, 0x4a, 0xe1]) // MAGIC, little-endian
/** magic, crc, length */
export const PREFIX_BYTES = 12
/** op, revision, time, key length */
const FIELD_BYTES = 1 + 8 + 8 + 2
export const HEADER_BYTES = PREFIX_BYTES + FIELD_BYTES
export const V1_HEADER_BYTES = 4 + FIELD_BYTES

export interface JournalRecord {
  op: JournalOp
  key: string
  revision: number
  at: number
  value: Uint8Array
  /** Encoded size: HEADER_BYTES + key bytes + value bytes. */
  size: number
}

const EMPTY = new Uint8Array(0)

export function record(
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
export function encode(records: readonly JournalRecord[], withFileHeader = false): Buffer {
  let total = withFileHeader ? FILE_HEADER.length : 0
  for (const r of records) total += r.size
  const buf = Buffer.allocUnsafe(total)
  let at = 0
  if (withFileHeader) at += FILE_HEADER.copy(buf, 0)
  for (const r of records) {
    const keyAt = at + HEADER_BYTES
    const valueAt = keyAt + buf.write(r.key, keyAt, 'utf8')
    buf.writeUInt32LE(MAGIC, at)
    buf.writeUInt32LE(r.size - PREFIX_BYTES, at + 8)
    buf.writeUInt8(OPS.indexOf(r.op), at + 12)
    buf.writeDoubleLE(r.revision, at + 13)
    buf.writeDoubleLE(r.at, at + 21)
    buf.writeUInt16LE(valueAt - keyAt, at + 29)
    buf.set(r.value, valueAt)
    buf.writeUInt32LE(crc32(buf.subarray(at + 8, at + r.size)), at + 4)
    at += r.size
  }
  return buf
}

/** A record read back: the same shape, its value a copy (the read buffer is reused). */
export type DecodedRecord = JournalRecord

/** Size of the format-2 record whose prefix is at `at`, or null when no record starts there. */
export function recordLength(buf: Buffer, at: number, maxRecordBytes: number): number | null {
  if (buf.readUInt32LE(at) !== MAGIC) return null
  const size = PREFIX_BYTES + buf.readUInt32LE(at + 8)
  if (size < HEADER_BYTES || size > maxRecordBytes) return null
  return size
}

/** Decode a format-2 record whose `size` bytes are in `buf` at `at`; null if it fails its checks. */
export function decodeV2(buf: Buffer, at: number, size: number): DecodedRecord | null {
  if (crc32(buf.subarray(at + 8, at + size)) !== buf.readUInt32LE(at + 4)) return null
  return fields(buf, at + 12, at + size, size)
}

/** Length of the format-1 record at `at` (prefix included), or null when implausible. */
export function v1RecordLength(buf: Buffer, at: number, maxRecordBytes: number): number | null {
  const size = 4 + buf.readUInt32LE(at)
  return size < V1_HEADER_BYTES || size > maxRecordBytes ? null : size
}

export function decodeV1(buf: Buffer, at: number, size: number): DecodedRecord | null {
  return fields(buf, at + 4, at + size, size)
}

function fields(buf: Buffer, at: number, end: number, size: number): DecodedRecord | null {
  const op = OPS[buf.readUInt8(at)]
  const keyBytes = buf.readUInt16LE(at + 17)
  const keyAt = at + FIELD_BYTES
  if (op === undefined || keyAt + keyBytes > end) return null
  return {
    op,
    revision: buf.readDoubleLE(at + 1),
    at: buf.readDoubleLE(at + 9),
    key: buf.toString('utf8', keyAt, keyAt + keyBytes),
    value: new Uint8Array(buf.subarray(keyAt + keyBytes, end)),
    size,
  }
}

// CRC-32 (IEEE, as zlib): node:zlib's native one where the runtime has it (Node ≥ 20.15),
// else a table. Both give the same numbers, so a file moves between runtimes.
const TABLE = (() => {
  const t = new Uint32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb8_8320 ^ (c >>> 1) : c >>> 1
    t[n] = c >>> 0
  }
  return t
})()

export function tableCrc32(data: Uint8Array): number {
  let c = 0xffff_ffff
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8)
  return (c ^ 0xffff_ffff) >>> 0
}

const native = (zlib as { crc32?: (data: Uint8Array) => number }).crc32
export const crc32: (data: Uint8Array) => number = native ?? tableCrc32
