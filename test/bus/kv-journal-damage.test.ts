import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { kvJournalStats } from '../../services/common/bus/kv-journal.ts'
import {
  crc32,
  encode,
  FILE_HEADER,
  HEADER_BYTES,
  record,
  tableCrc32,
} from '../../services/common/bus/kv-journal-format.ts'
import { scanJournal } from '../../services/common/bus/kv-journal-read.ts'

/** The journal read in chunks, with checksums: damage loses one record, size no longer matters. */
describe('KV journal: streaming read, checksums, older files', () => {
  const dirs: string[] = []
  const buses: Bus[] = []
  afterEach(async () => {
    for (const b of buses.splice(0)) await b.close()
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })
  const folder = () => {
    const d = mkdtempSync(join(tmpdir(), 'ub-kvd-'))
    dirs.push(d)
    return d
  }
  const open = (dataDir: string, chunk?: number) => {
    const bus = createInProcessBus({
      prefix: 'd',
      dataDir,
      ...(chunk ? { journalReadChunkBytes: chunk } : {}),
    })
    buses.push(bus)
    return bus
  }
  const text = (v: Uint8Array | undefined) => (v ? Buffer.from(v).toString() : undefined)
  const fileOf = (dir: string) =>
    join(
      dir,
      readdirSync(dir).find((f) => f.endsWith('.kv'))!
    )
  /** A journal of `keys` PUTs `k0…`, written as the bus writes them. */
  const write = async (dir: string, keys: number, value = (i: number) => `value-${i}`) => {
    const bus = open(dir)
    const kv = await bus.kv('state')
    for (let i = 0; i < keys; i++) await kv.put(`k${i}`, Buffer.from(value(i)))
    await bus.close()
    buses.splice(buses.indexOf(bus), 1)
    return fileOf(dir)
  }
  /** Offset of key `k<i>`'s record in a file of equal-sized records. */
  const offsetOf = (file: string, i: number) => {
    const bytes = readFileSync(file)
    return bytes.indexOf(Buffer.from(`k${i}value-${i}`)) - HEADER_BYTES
  }

  it('uses the same CRC-32 with and without node:zlib', () => {
    const data = Buffer.from('123456789')
    expect(tableCrc32(data)).toBe(0xcbf43926)
    expect(crc32(data)).toBe(0xcbf43926)
  })

  it('a flipped byte in a value loses only that record', async () => {
    const dir = folder()
    const file = await write(dir, 50)
    const bytes = readFileSync(file)
    const at = bytes.indexOf(Buffer.from('value-20'))
    bytes.writeUInt8(bytes.readUInt8(at + 2) ^ 0x01, at + 2)
    writeFileSync(file, bytes)
    const before = kvJournalStats().damagedRecords
    const kv = await open(dir).kv('state')
    expect(await kv.get('k20')).toBeNull()
    const keys = await kv.keys()
    expect(keys).toHaveLength(49)
    expect(text((await kv.get('k49'))?.value)).toBe('value-49')
    expect(kvJournalStats().damagedRecords).toBe(before + 1)
  })

  it('a damaged length loses only that record, and the file is rewritten clean', async () => {
    const dir = folder()
    const file = await write(dir, 50)
    const bytes = readFileSync(file)
    const at = offsetOf(file, 10)
    bytes.writeUInt32LE(0x7fff_fff0, at + 8) // the length field: far past the end
    writeFileSync(file, bytes)
    const first = open(dir)
    const kv = await first.kv('state')
    expect(await kv.keys()).toHaveLength(49)
    expect(await kv.get('k10')).toBeNull()
    expect(text((await kv.get('k11'))?.value)).toBe('value-11')
    await kv.put('after', Buffer.from('x'))
    await first.close()
    const before = kvJournalStats().damagedRecords
    const again = await open(dir).kv('state')
    expect(await again.keys()).toHaveLength(50)
    expect(kvJournalStats().damagedRecords).toBe(before) // rewritten: nothing damaged left
  })

  it('opens a journal past 2 GiB (sparse), reading it with a bounded buffer', async () => {
    const dir = folder()
    const file = join(dir, 'd_big.kv')
    const fd = openSync(file, 'w', 0o600)
    writeSync(fd, encode([record('PUT', 'first', 1, Date.now(), Buffer.from('a'))], true))
    // A hole of 2.1 GiB reads as zeros: damage, skipped while looking for the next record.
    const last = encode([record('PUT', 'last', 2, Date.now(), Buffer.from('z'))])
    writeSync(fd, last, 0, last.length, 2 ** 31 + (100 << 20))
    closeSync(fd)
    expect(statSync(file).size).toBeGreaterThan(2 ** 31)
    const seen: string[] = []
    const scan = scanJournal(file, (r) => seen.push(r.key), {
      chunkBytes: 4 << 20,
      maxRecordBytes: 512 << 20,
    })
    expect(seen).toEqual(['first', 'last'])
    expect(scan.damaged).toHaveLength(1)
    expect(scan.peakBufferBytes).toBe(4 << 20)
    // And through the bus, which then rewrites it small.
    const kv = await open(dir).kv('big')
    expect(await kv.keys()).toEqual(['first', 'last'])
    expect(statSync(file).size).toBeLessThan(1_000)
  }, 120_000)

  it('reads 50 MB in 64 KiB chunks: the buffer stays one chunk', async () => {
    const dir = folder()
    const path = join(dir, 'd_many.kv')
    const value = Buffer.alloc(10_000, 7)
    const fd = openSync(path, 'w', 0o600)
    writeSync(fd, FILE_HEADER)
    for (let b = 0; b < 50; b++) {
      const batch = Array.from({ length: 500 }, (_, i) =>
        record('PUT', `k${b}.${i}`, b * 500 + i + 1, Date.now(), value)
      )
      writeSync(fd, encode(batch))
    }
    closeSync(fd)
    expect(statSync(path).size).toBeGreaterThan(50e6)
    let count = 0
    const scan = scanJournal(path, () => count++, {
      chunkBytes: 64 * 1024,
      maxRecordBytes: 512 << 20,
    })
    expect(count).toBe(25_000)
    expect(scan.peakBufferBytes).toBe(64 * 1024)
    // One record larger than a chunk grows the buffer to that record, no further.
    const big = join(dir, 'd_big.kv')
    writeFileSync(big, encode([record('PUT', 'big', 1, 0, Buffer.alloc(300_000))], true))
    const one = scanJournal(big, () => {}, { chunkBytes: 64 * 1024, maxRecordBytes: 1 << 20 })
    expect(one.peakBufferBytes).toBe(300_000 + HEADER_BYTES + 3)
    // Past the record bound it is damage, not an allocation.
    const bounded = scanJournal(big, () => count++, {
      chunkBytes: 64 * 1024,
      maxRecordBytes: 100_000,
    })
    expect(bounded.peakBufferBytes).toBe(64 * 1024)
    expect(bounded.validBytes).toBe(FILE_HEADER.length) // nothing valid after it: a torn tail
  })

  it('opens a journal an older version wrote (no checksums) and rewrites it', async () => {
    const dir = folder()
    const file = join(dir, 'd_state.kv')
    // The older format: u32 length of the rest, u8 op, f64 revision, f64 time, u16 key length.
    const v1 = (op: number, key: string, rev: number, value: string) => {
      const k = Buffer.from(key)
      const v = Buffer.from(value)
      const b = Buffer.alloc(23 + k.length + v.length)
      b.writeUInt32LE(b.length - 4, 0)
      b.writeUInt8(op, 4)
      b.writeDoubleLE(rev, 5)
      b.writeDoubleLE(Date.now(), 13)
      b.writeUInt16LE(k.length, 21)
      k.copy(b, 23)
      v.copy(b, 23 + k.length)
      return b
    }
    writeFileSync(
      file,
      Buffer.concat([
        v1(0, 'a', 1, 'one'),
        v1(0, 'b', 2, 'two'),
        v1(2, 'a', 3, ''), // ERASE a
        v1(0, 'c', 4, 'three'),
        Buffer.from([99, 0, 0, 0, 0]), // torn tail
      ])
    )
    const migrated = kvJournalStats().migratedFiles
    const first = open(dir)
    const kv = await first.kv('state')
    expect(await kv.keys()).toEqual(['b', 'c'])
    expect(text((await kv.get('c'))?.value)).toBe('three')
    expect(kvJournalStats().migratedFiles).toBe(migrated + 1)
    expect(readFileSync(file).subarray(0, FILE_HEADER.length)).toEqual(FILE_HEADER)
    expect(await kv.put('d', Buffer.from('four'))).toBe(5)
    await first.close()
    const again = await open(dir).kv('state')
    expect(await again.keys()).toEqual(['b', 'c', 'd'])
    expect(kvJournalStats().migratedFiles).toBe(migrated + 1)
  })

  it('cuts a torn tail back to the last whole record', async () => {
    const dir = folder()
    const file = await write(dir, 5)
    const whole = statSync(file).size
    const next = encode([record('PUT', 'torn', 99, Date.now(), Buffer.from('half'))])
    writeFileSync(file, Buffer.concat([readFileSync(file), next.subarray(0, next.length - 3)]))
    const before = kvJournalStats()
    const kv = await open(dir).kv('state')
    expect(await kv.keys()).toHaveLength(5)
    expect(statSync(file).size).toBe(whole)
    expect(kvJournalStats().tornTails).toBe(before.tornTails + 1)
    expect(kvJournalStats().damagedRecords).toBe(before.damagedRecords)
  })

  it('refuses a value past the record bound on write', async () => {
    const bus = createInProcessBus({ prefix: 'd', dataDir: folder(), journalMaxRecordBytes: 4096 })
    buses.push(bus)
    const kv = await bus.kv('state')
    await expect(kv.put('big', Buffer.alloc(5000))).rejects.toThrow(/busJournalMaxRecordBytes/)
    await kv.put('small', Buffer.alloc(100))
    expect(await kv.keys()).toEqual(['small'])
  })
})
