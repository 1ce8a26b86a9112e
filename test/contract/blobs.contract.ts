import { createHash, randomBytes } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import {
  BLOB_NAME_MAX_BYTES,
  BlobDigestError,
  BlobTooLargeError,
  type BlobBucket,
  type BlobReadRange,
} from '../../services/common/bus/blobs.ts'

/** Makes a bus; buses made with the same `prefix` are replicas of one service on one server. */
export type MakeBus = (options?: { prefix?: string }) => Promise<Bus>

/** What a bucket keeps on its store (bytes and items: files, or stream messages). */
export type Footprint = (bus: Bus, bucket: string) => Promise<{ bytes: number; items: number }>

const MiB = 1_024 * 1_024
const CHUNK = 128 * 1_024 // the NATS object store's chunk: ranges are tested across it

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex')

/** `data` in odd-sized pieces (1 byte to ~200 KB), as a network source would give it. */
async function* pieces(data: Uint8Array, sizes = [1, 7, 65_537, 131_071, 200_003, 3]) {
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length]!
    yield data.subarray(at, at + n)
    at += n
  }
}

/** Yields `good` bytes, then fails as a broken upload would. */
async function* failing(good: Uint8Array): AsyncIterable<Uint8Array> {
  yield* pieces(good)
  throw new Error('source broke midway')
}

async function collect(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = []
  for await (const c of body) parts.push(c)
  return Buffer.concat(parts)
}

async function readAll(b: BlobBucket, name: string, range?: BlobReadRange) {
  const r = await b.read(name, range)
  return r ? { info: r.info, bytes: await collect(r.body) } : null
}

/** One suite for every Bus implementation's blob buckets (blobs.ts). */
export function blobsContract(name: string, makeBus: MakeBus, footprint?: Footprint): void {
  describe(`blobs contract: ${name}`, () => {
    const open: Bus[] = []
    async function bus(options?: { prefix?: string }): Promise<Bus> {
      const b = await makeBus(options)
      open.push(b)
      return b
    }
    afterEach(async () => {
      await Promise.all(open.splice(0).map((b) => b.close()))
    })

    it('round-trips a few MB byte for byte, with size, sha256, meta and modifiedAt', async () => {
      const b = await (await bus()).blobs('files')
      const data = randomBytes(3 * MiB + 12_345)
      let counted = 0
      const before = Date.now()
      const put = await b.put('round/trip.bin', pieces(data), {
        meta: { owner: 'me', type: 'application/octet-stream' },
        onBytes: (n) => (counted += n),
      })
      const expected = {
        name: 'round/trip.bin',
        size: data.length,
        sha256: sha256(data),
        meta: { owner: 'me', type: 'application/octet-stream' },
      }
      expect(put).toMatchObject(expected)
      expect(put.modifiedAt).toBeGreaterThanOrEqual(before - 5)
      expect(put.modifiedAt).toBeLessThanOrEqual(Date.now() + 5)
      expect(counted).toBe(data.length)
      expect(await b.info('round/trip.bin')).toEqual(put)
      const got = await readAll(b, 'round/trip.bin')
      expect(got!.info).toEqual(put)
      expect(Buffer.compare(got!.bytes, data)).toBe(0)
    })

    it('reads byte ranges: start only, start and end, end clamped, across chunks', async () => {
      const b = await (await bus()).blobs('ranges')
      const data = randomBytes(3 * CHUNK + 4_321)
      await b.put('r', pieces(data))
      const cases: Array<[BlobReadRange, Uint8Array]> = [
        [{ start: 0 }, data],
        [{ start: 2 * CHUNK + 17 }, data.subarray(2 * CHUNK + 17)],
        [{ start: 10, end: 19 }, data.subarray(10, 20)],
        [{ start: CHUNK - 100, end: CHUNK + 99 }, data.subarray(CHUNK - 100, CHUNK + 100)],
        [{ start: CHUNK - 1, end: 3 * CHUNK }, data.subarray(CHUNK - 1, 3 * CHUNK + 1)],
        [{ start: data.length - 5, end: data.length + 1_000 }, data.subarray(data.length - 5)],
        [{ end: 0 }, data.subarray(0, 1)],
        [{ start: 3 * CHUNK, end: 3 * CHUNK }, data.subarray(3 * CHUNK, 3 * CHUNK + 1)],
        [{ start: data.length }, new Uint8Array(0)],
      ]
      for (const [range, want] of cases) {
        const got = await readAll(b, 'r', range)
        expect(got!.info.size, JSON.stringify(range)).toBe(data.length)
        expect(got!.bytes.length, JSON.stringify(range)).toBe(want.length)
        expect(Buffer.compare(got!.bytes, want), JSON.stringify(range)).toBe(0)
      }
    })

    it('stores and reads an empty blob, whole and by range', async () => {
      const b = await (await bus()).blobs('empty')
      const info = await b.put('nothing', pieces(new Uint8Array(0)))
      expect(info).toMatchObject({ size: 0, sha256: sha256(new Uint8Array(0)), meta: {} })
      expect((await readAll(b, 'nothing'))!.bytes.length).toBe(0)
      expect((await readAll(b, 'nothing', { start: 0, end: 10 }))!.bytes.length).toBe(0)
      expect(await b.read('absent')).toBeNull()
      expect(await b.info('absent')).toBeNull()
    })

    it('overwrites: a reader gets a whole version matching its info, or an error', async () => {
      const b = await (await bus()).blobs('overwrite')
      const v1 = randomBytes(MiB + 1)
      const v2 = randomBytes(2 * MiB + 3)
      await b.put('f', pieces(v1), { meta: { v: '1' } })
      const early = await b.read('f')
      const info2 = await b.put('f', pieces(v2), { meta: { v: '2' } })
      expect(info2).toMatchObject({ size: v2.length, sha256: sha256(v2), meta: { v: '2' } })
      // Opened before the overwrite: the old version whole, or refused; never a mix.
      const old = await collect(early!.body).catch((err: unknown) => err)
      if (old instanceof Buffer) {
        expect(early!.info.meta).toEqual({ v: '1' })
        expect(Buffer.compare(old, v1)).toBe(0)
      } else expect(old).toMatchObject({ code: 'blob_replaced' })
      const now = await readAll(b, 'f')
      expect(now!.info).toEqual(info2)
      expect(Buffer.compare(now!.bytes, v2)).toBe(0)
      // Reads racing more overwrites: each body that completes is the version its info names.
      const versions = [v1, v2, randomBytes(MiB / 2)]
      let writing = true
      const writer = (async () => {
        for (let i = 0; i < 6; i++) await b.put('f', pieces(versions[i % 3]!))
        writing = false
      })()
      let whole = 0
      while (writing) {
        const r = await b.read('f')
        const bytes = await collect(r!.body).catch(() => null)
        if (!bytes) continue
        whole++
        expect(sha256(bytes)).toBe(r!.info.sha256)
        expect(bytes.length).toBe(r!.info.size)
      }
      await writer
      expect(whole).toBeGreaterThan(0)
    })

    it('refuses content past maxBytes, keeping the previous version and nothing new', async () => {
      const big = await bus()
      const b = await big.blobs('limits')
      const v1 = randomBytes(1_000)
      const first = await b.put('f', pieces(v1))
      const stored = await footprint?.(big, 'limits')
      const err = await b.put('f', pieces(randomBytes(MiB)), { maxBytes: 300_000 }).catch((e) => e)
      expect(err).toBeInstanceOf(BlobTooLargeError)
      expect(err).toMatchObject({ code: 'too_large' })
      await expectUnchanged(b, 'f', v1, first)
      if (stored) expect(await footprint!(big, 'limits')).toEqual(stored)
      // Exactly maxBytes is allowed.
      expect(await b.put('g', pieces(v1), { maxBytes: v1.length })).toMatchObject({ size: 1_000 })
    })

    it('refuses content whose digest differs, keeping the previous version and nothing new', async () => {
      const owner = await bus()
      const b = await owner.blobs('digests')
      const v1 = randomBytes(5_000)
      const first = await b.put('f', pieces(v1))
      const stored = await footprint?.(owner, 'digests')
      const v2 = randomBytes(CHUNK * 2 + 1)
      const err = await b.put('f', pieces(v2), { expectSha256: sha256(v1) }).catch((e) => e)
      expect(err).toBeInstanceOf(BlobDigestError)
      expect(err).toMatchObject({ code: 'digest_mismatch' })
      await expectUnchanged(b, 'f', v1, first)
      if (stored) expect(await footprint!(owner, 'digests')).toEqual(stored)
      // The right digest, in capitals, is accepted.
      const ok = await b.put('f', pieces(v2), { expectSha256: sha256(v2).toUpperCase() })
      expect(ok).toMatchObject({ size: v2.length, sha256: sha256(v2) })
    })

    it('keeps the previous version when the source throws midway, and nothing new', async () => {
      const owner = await bus()
      const b = await owner.blobs('broken')
      const v1 = randomBytes(CHUNK + 5)
      const first = await b.put('f', pieces(v1))
      const stored = await footprint?.(owner, 'broken')
      const err = await b.put('f', failing(randomBytes(3 * CHUNK))).catch((e) => e)
      expect(err).toMatchObject({ message: 'source broke midway' })
      await expectUnchanged(b, 'f', v1, first)
      if (stored) expect(await footprint!(owner, 'broken')).toEqual(stored)
      // A new name that fails leaves no blob behind.
      await b.put('new', failing(randomBytes(1_000))).catch(() => {})
      expect(await b.info('new')).toBeNull()
      expect((await b.list()).map((i) => i.name)).toEqual(['f'])
    })

    namesAndListing(bus)
    sharingAndAbandon(bus)
  })
}

async function expectUnchanged(
  b: BlobBucket,
  name: string,
  data: Uint8Array,
  info: Awaited<ReturnType<BlobBucket['put']>>
) {
  expect(await b.info(name)).toEqual(info)
  const got = await readAll(b, name)
  expect(Buffer.compare(got!.bytes, data)).toBe(0)
}

function namesAndListing(bus: MakeBus): void {
  it('deletes: true when something was there, then absent everywhere', async () => {
    const b = await (await bus()).blobs('deletes')
    await b.put('gone', pieces(randomBytes(CHUNK * 2)))
    await b.put('kept', pieces(randomBytes(10)))
    expect(await b.delete('gone')).toBe(true)
    expect(await b.delete('gone')).toBe(false)
    expect(await b.delete('never')).toBe(false)
    expect(await b.info('gone')).toBeNull()
    expect(await b.read('gone')).toBeNull()
    expect((await b.list()).map((i) => i.name)).toEqual(['kept'])
    // A deleted name can be used again.
    await b.put('gone', pieces(randomBytes(3)))
    expect((await b.info('gone'))!.size).toBe(3)
  })

  it('lists every blob with its info, and nothing for an empty bucket', async () => {
    const b = await (await bus()).blobs('listing')
    expect(await b.list()).toEqual([])
    const infos = []
    for (const [i, n] of ['a', 'b/c', 'd e'].entries())
      infos.push(await b.put(n, pieces(randomBytes(i * 1_000 + 1)), { meta: { i: String(i) } }))
    const listed = await b.list()
    expect(listed.sort((x, y) => x.name.localeCompare(y.name))).toEqual(infos)
  })

  it('accepts names with `/`, spaces and unicode up to the byte limit, and refuses others', async () => {
    const b = await (await bus()).blobs('names')
    const longest = 'é'.repeat(BLOB_NAME_MAX_BYTES / 2) // 2 bytes each
    const names = ['a/b/c.txt', 'with spaces .pdf', 'ünï cødé/名前 🚀', '../x', '.', longest]
    for (const [i, n] of names.entries()) await b.put(n, pieces(Buffer.from(`#${i}`)))
    for (const [i, n] of names.entries()) {
      expect((await b.info(n))!.name).toBe(n)
      expect((await readAll(b, n))!.bytes.toString()).toBe(`#${i}`)
    }
    expect((await b.list()).map((i) => i.name).sort()).toEqual([...names].sort())
    for (const bad of ['', 'a\0b', `${longest}x`]) {
      const err = await b.put(bad, pieces(Buffer.from('x'))).catch((e) => e)
      expect(err).toMatchObject({ code: 'invalid_name' })
    }
  })
}

function sharingAndAbandon(bus: MakeBus): void {
  it('shares blobs between buses with the same prefix, not with others', async () => {
    const first = await bus()
    const second = await bus({ prefix: first.prefix })
    const other = await bus()
    const data = randomBytes(CHUNK + 77)
    const put = await (await first.blobs('shared')).put('s', pieces(data), { meta: { k: 'v' } })
    const there = await second.blobs('shared')
    const got = await readAll(there, 's')
    expect(got!.info).toEqual(put)
    expect(Buffer.compare(got!.bytes, data)).toBe(0)
    expect(await (await other.blobs('shared')).info('s')).toBeNull()
    expect(await there.delete('s')).toBe(true)
    expect(await (await first.blobs('shared')).info('s')).toBeNull()
  })

  it('releases a read abandoned early, whole or ranged', async () => {
    const b = await (await bus()).blobs('abandon')
    const data = randomBytes(4 * CHUNK)
    await b.put('f', pieces(data))
    for (const range of [{}, { start: 2 * CHUNK + 1 }]) {
      const r = await b.read('f', range)
      const started = Date.now()
      for await (const c of r!.body) {
        expect(c.length).toBeGreaterThan(0)
        break
      }
      expect(Date.now() - started).toBeLessThan(2_000)
    }
    // The bucket stays usable: overwritten, read again, deleted and destroyed.
    await b.put('f', pieces(data.subarray(0, 10)))
    expect((await readAll(b, 'f'))!.bytes.length).toBe(10)
    expect(await b.delete('f')).toBe(true)
    await b.destroy()
  })
}
