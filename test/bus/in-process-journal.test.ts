import {
  appendFileSync,
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { decodeJson, encodeJson, type Bus } from '../../services/common/bus/bus.ts'
import { FLUSH_DELAY_MS } from '../../services/common/bus/kv-journal.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { KvConflictError } from '../../services/common/errors.ts'

/** The in-process bus with a data folder: its KV buckets outlive the bus, as NATS KV outlives a restart. */
describe('in-process KV kept on disk', () => {
  const dirs: string[] = []
  const buses: Bus[] = []
  afterEach(async () => {
    for (const b of buses.splice(0)) await b.close()
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
  })
  const folder = () => {
    const d = mkdtempSync(join(tmpdir(), 'ub-kvj-'))
    dirs.push(d)
    return d
  }
  const open = (dataDir: string) => {
    const bus = createInProcessBus({ prefix: 'j', dataDir })
    buses.push(bus)
    return bus
  }
  const text = (v: Uint8Array | undefined) => (v ? Buffer.from(v).toString() : undefined)
  const journalFile = (dir: string) =>
    join(
      dir,
      readdirSync(dir).find((f) => f.endsWith('.kv'))!
    )

  it('keeps values, revisions, deletes and erases across a restart, and never reuses a revision', async () => {
    const dir = folder()
    const first = open(dir)
    const kv = await first.kv('state')
    await kv.put('a', encodeJson({ n: 1 }))
    const bRev = await kv.put('b', Buffer.from('bee'))
    await kv.put('a', encodeJson({ n: 2 }))
    await kv.put('gone', Buffer.from('x'))
    await kv.delete('gone')
    await kv.put('erased', Buffer.from('y'))
    const lastRev = await kv.put('erased-last', Buffer.from('z'))
    await kv.erase('erased')
    await kv.erase('erased-last', lastRev)
    await first.close()

    const second = open(dir)
    const again = await second.kv('state')
    expect(decodeJson(await again.get('a').then((e) => e!.value))).toEqual({ n: 2 })
    expect(await again.get('b')).toMatchObject({ revision: bRev })
    expect(text((await again.get('b'))?.value)).toBe('bee')
    expect(await again.get('gone')).toBeNull()
    expect(await again.get('erased')).toBeNull()
    expect(await again.keys()).toEqual(['b', 'a'])
    // The delete marker is still there: create is a compare-and-set on it, as on NATS.
    await expect(again.update('gone', Buffer.from('x'), 1)).rejects.toBeInstanceOf(KvConflictError)
    expect(await again.create('gone', Buffer.from('back'))).toBeGreaterThan(lastRev)
    // Watchers of the reopened bucket see the current values first.
    const seen: string[] = []
    const w = await again.watch((e) => seen.push(`${e.key}=${text(e.value)}`))
    await new Promise((r) => setTimeout(r, 10))
    await w.unsubscribe()
    expect(seen).toEqual(['b=bee', 'a={"n":2}', 'gone=back'])
  })

  it('drops entries past the bucket TTL while it was closed', async () => {
    const dir = folder()
    const first = open(dir)
    // Wide margins: 'young' must not expire on a slow machine before it is read back.
    const kv = await first.kv('leases', { ttlMs: 2_000 })
    await kv.put('old', Buffer.from('1'))
    await new Promise((r) => setTimeout(r, 1_500))
    await kv.put('young', Buffer.from('2'))
    await first.close()
    await new Promise((r) => setTimeout(r, 600))
    const second = open(dir)
    const again = await second.kv('leases', { ttlMs: 2_000 })
    expect(await again.keys()).toEqual(['young'])
  })

  it('drops a record cut short by a crash, keeps the rest, and appends after it', async () => {
    const dir = folder()
    const first = open(dir)
    const kv = await first.kv('torn')
    await kv.put('whole', Buffer.from('ok'))
    await first.close()
    const file = join(
      dir,
      readdirSync(dir).find((f) => f.endsWith('.kv'))!
    )
    const before = statSync(file).size
    appendFileSync(file, Buffer.from([200, 0, 0, 0, 0, 1, 2, 3])) // says 200 bytes, has 4
    const second = open(dir)
    const again = await second.kv('torn')
    expect(text((await again.get('whole'))?.value)).toBe('ok')
    expect(statSync(file).size).toBe(before)
    await again.put('next', Buffer.from('fine'))
    await second.close()
    const third = open(dir)
    const last = await third.kv('torn')
    expect(await last.keys()).toEqual(['whole', 'next'])
  })

  it('never writes an entry that is erased within the batch: an acknowledged queue entry', async () => {
    const dir = folder()
    const bus = open(dir)
    const kv = await bus.kv('queue')
    const payload = Buffer.alloc(200, 1)
    for (let i = 0; i < 5_000; i++) {
      await kv.put(`q.${i}`, payload)
      await kv.erase(`q.${i}`)
    }
    await kv.put('waiting', payload) // not acknowledged: it must reach the file
    await new Promise((r) => setTimeout(r, FLUSH_DELAY_MS * 3))
    // One SEQ record per batch and the waiting entry; 5,000 × 2 records would be ~1.2 MB.
    expect(statSync(journalFile(dir)).size).toBeLessThan(1_000)
    const revision = await kv.put('after', Buffer.from('a'))
    await bus.close()
    const again = await open(dir).kv('queue')
    expect(await again.keys()).toEqual(['waiting', 'after'])
    expect(await again.put('later', Buffer.from('b'))).toBeGreaterThan(revision)
  })

  it('rewrites the file from the live entries once it is mostly erased ones', async () => {
    const dir = folder()
    const bus = createInProcessBus({ prefix: 'j', dataDir: dir, journalRewriteBytes: 64 * 1024 })
    buses.push(bus)
    const kv = await bus.kv('queue')
    await kv.put('kept', Buffer.alloc(100, 7))
    const payload = Buffer.alloc(200, 1)
    let largest = 0
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 100; i++) await kv.put(`q.${round}.${i}`, payload)
      // Written before they are erased, as when a link is down for a while.
      await new Promise((r) => setTimeout(r, FLUSH_DELAY_MS * 2))
      for (let i = 0; i < 100; i++) await kv.erase(`q.${round}.${i}`)
      largest = Math.max(largest, statSync(journalFile(dir)).size)
    }
    await new Promise((r) => setTimeout(r, FLUSH_DELAY_MS * 2))
    // 4,000 entries and their erases went through: ~1.1 MB without rewrites.
    expect(largest).toBeLessThan(4 * 64 * 1024)
    const revision = await kv.put('after', Buffer.from('a'))
    await bus.close()
    const again = await open(dir).kv('queue')
    expect(await again.keys()).toEqual(['kept', 'after'])
    expect(text((await again.get('kept'))?.value)).toBe(Buffer.alloc(100, 7).toString())
    expect(await again.put('later', Buffer.from('b'))).toBeGreaterThan(revision)
  })

  it('keeps its folder and files private to the owner, also those an older version left open', async () => {
    const fresh = join(folder(), 'bus')
    const kv = await open(fresh).kv('secrets')
    await kv.put('will', Buffer.from('payload'))
    await new Promise((r) => setTimeout(r, FLUSH_DELAY_MS * 3))
    expect(statSync(fresh).mode & 0o777).toBe(0o700)
    expect(statSync(journalFile(fresh)).mode & 0o777).toBe(0o600)

    const old = join(folder(), 'bus')
    mkdirSync(old, { mode: 0o755 })
    chmodSync(old, 0o755)
    writeFileSync(join(old, 'j_old.kv'), '', { mode: 0o644 })
    chmodSync(join(old, 'j_old.kv'), 0o644)
    await open(old).kv('old')
    expect(statSync(old).mode & 0o777).toBe(0o700)
    expect(statSync(join(old, 'j_old.kv')).mode & 0o777).toBe(0o600)
  })

  it('removes the file with the bucket', async () => {
    const dir = folder()
    const bus = open(dir)
    const kv = await bus.kv('temp')
    await kv.put('k', Buffer.from('v'))
    expect(existsSync(join(dir, 'j_temp.kv'))).toBe(true)
    await kv.destroy()
    expect(existsSync(join(dir, 'j_temp.kv'))).toBe(false)
  })
})
