import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { afterEach, describe, expect, it } from 'vitest'
import type { Bus, BusLogger, KvBucket } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import {
  FLUSH_DELAY_MS,
  kvJournalStats,
  type JournalEntry,
} from '../../services/common/bus/kv-journal.ts'
import { encode, FILE_HEADER, record } from '../../services/common/bus/kv-journal-format.ts'
import { rewriteJournal } from '../../services/common/bus/kv-journal-rewrite.ts'

const VALUE_BYTES = 10_000
const LIVE_KEYS = 5_000 // ~50 MB live: a few session backlogs
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A value whose first bytes say what it is, so a read-back is checked without 10 kB compares. */
const valueOf = (tag: string) => {
  const b = Buffer.alloc(VALUE_BYTES, tag.length)
  b.write(`${tag}|`, 0, 'latin1')
  return b
}
const tagOf = (v: Uint8Array) => {
  const b = Buffer.from(v.buffer, v.byteOffset, Math.min(v.length, 64))
  return b.toString('latin1').split('|')[0]
}

const writeAll = (fd: number, data: Buffer) => {
  for (let off = 0; off < data.length;) off += writeSync(fd, data, off)
}

/**
 * A journal of LIVE_KEYS entries `s.<i>` after erased records of over four times their size: the
 * next write through the bus passes the rewrite threshold. Written directly, as the bus
 * would have over time, because building 250 MB through `put` only makes the test slow.
 */
function bigJournal(file: string): void {
  const fd = openSync(file, 'w', 0o600)
  const now = Date.now()
  let rev = 0
  writeAll(fd, FILE_HEADER)
  const junk = encode([record('PUT', 'junk', ++rev, now, Buffer.alloc(20 << 20))])
  for (let dead = 0; dead < 4.4 * LIVE_KEYS * VALUE_BYTES; dead += junk.length) writeAll(fd, junk)
  writeAll(fd, encode([record('ERASE', 'junk', rev, now)]))
  for (let start = 0; start < LIVE_KEYS; start += 500) {
    const batch = []
    for (let i = start; i < start + 500; i++)
      batch.push(record('PUT', `s.${i}`, ++rev, now, valueOf(`s.${i}`)))
    writeAll(fd, encode(batch))
  }
  closeSync(fd)
}

/** The longest gap between ticks of a 1 ms interval: how long the event loop was held. */
function loopGaps() {
  let last = performance.now()
  let longest = 0
  const ticker = setInterval(() => {
    const now = performance.now()
    longest = Math.max(longest, now - last)
    last = now
  }, 1)
  return () => {
    clearInterval(ticker)
    // The gap up to now too: the wait that ends the measure may run before the ticker's turn.
    return Math.max(longest, performance.now() - last)
  }
}

async function until(what: string, cond: () => boolean, ms = 20_000, step = 1): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(step)
  }
}

/** Descriptors this process holds on files under `dir` (Linux; elsewhere none are seen). */
const fdsUnder = (dir: string) =>
  existsSync('/proc/self/fd')
    ? readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir)
        } catch {
          return false // closed while listing
        }
      })
    : []

/** Every key's tag (null: erased or deleted), checked against the bucket. */
async function expectState(kv: KvBucket, expected: Map<string, string | null>): Promise<void> {
  const live = [...expected].filter(([, tag]) => tag !== null).map(([k]) => k)
  expect((await kv.keys()).sort()).toEqual(live.sort())
  for (const [key, tag] of expected) {
    const e = await kv.get(key)
    expect(e === null ? null : tagOf(e.value), key).toBe(tag)
  }
}

/** The background rewrite: the event loop keeps turning, and nothing written meanwhile is lost. */
describe('KV journal: rewriting in the background', () => {
  const dirs: string[] = []
  const buses: Bus[] = []
  afterEach(async () => {
    for (const b of buses.splice(0)) await b.close()
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
    logged.splice(0)
  })
  const folder = () => {
    const d = mkdtempSync(join(tmpdir(), 'ub-kvr-'))
    dirs.push(d)
    return d
  }
  const logged: Array<{ level: string; obj: object; msg: string }> = []
  const log: BusLogger = {
    warn: (obj, msg) => logged.push({ level: 'warn', obj, msg }),
    error: (obj, msg) => logged.push({ level: 'error', obj, msg }),
  }
  const open = (dataDir: string, journalRewriteBytes = 1 << 20) => {
    const bus = createInProcessBus({ prefix: 'r', dataDir, journalRewriteBytes, log })
    buses.push(bus)
    return bus
  }
  const closeBus = async (bus: Bus) => {
    buses.splice(buses.indexOf(bus), 1)
    await bus.close()
  }
  const snapshotState = () => {
    const state = new Map<string, string | null>()
    for (let i = 0; i < LIVE_KEYS; i++) state.set(`s.${i}`, `s.${i}`)
    return state
  }

  it('does not hold the event loop while it rewrites ~50 MB live', async () => {
    const dir = folder()
    const file = join(dir, 'r_state.kv')
    bigJournal(file)
    const before = statSync(file).size
    const kv = await open(dir).kv('state')
    // Free the 220 MB of dead values read back at open first: that pause is not the rewrite's.
    setFlagsFromString('--expose-gc')
    ;(runInNewContext('gc') as () => void)()
    const stop = loopGaps()
    await kv.put('trigger', valueOf('trigger'))
    await until('the rewrite', () => !existsSync(`${file}.tmp`) && statSync(file).size < before / 3)
    const longest = stop()

    // What the synchronous rewrite costs on this machine, for the same entries.
    const entries = new Map<string, JournalEntry>()
    for (let i = 0; i < LIVE_KEYS; i++) {
      const value = valueOf(`s.${i}`)
      entries.set(`s.${i}`, { value, revision: i + 1, operation: 'PUT', at: Date.now() })
    }
    const scratch = join(dir, 'scratch.kv')
    const started = performance.now()
    closeSync(rewriteJournal(scratch, openSync(scratch, 'a+'), { entries, seq: LIVE_KEYS }, 0).fd)
    const synchronous = performance.now() - started
    console.log(
      `KV journal rewrite of ${(statSync(file).size / 1e6).toFixed(0)} MB: longest event loop ` +
        `gap ${longest.toFixed(1)} ms in the background; ${synchronous.toFixed(1)} ms synchronous`
    )
    expect(longest).toBeLessThan(50)
    expect(await kv.keys()).toHaveLength(LIVE_KEYS + 1)
  }, 60_000)

  it('keeps every write made during the rewrite, in the new file and after a reopen', async () => {
    const dir = folder()
    const file = join(dir, 'r_state.kv')
    const tmp = `${file}.tmp`
    bigJournal(file)
    const before = statSync(file).size
    const bus = open(dir)
    const kv = await bus.kv('state')
    const expected = snapshotState()
    const set = async (key: string, tag: string) => {
      await kv.put(key, valueOf(tag))
      expected.set(key, tag)
    }
    await set('trigger', 'trigger')
    await until('the rewrite to start', () => existsSync(tmp))
    let rounds = 0
    for (; existsSync(tmp) && rounds < 40; rounds++) {
      const r = rounds
      await set(`s.${r}`, `overwritten.${r}`) // a snapshot entry replaced
      await kv.erase(`s.${1000 + r}`) // one erased
      expected.set(`s.${1000 + r}`, null)
      await kv.delete(`s.${2000 + r}`) // one deleted (a DEL marker)
      expected.set(`s.${2000 + r}`, null)
      if (r > 0) await set(`s.${1000 + r - 1}`, `back.${r}`) // erased last round, written again
      await set(`n.${r}`, `new.${r}`) // new keys
      if (r > 0) {
        await kv.erase(`n.${r - 1}`) // a new key from the last batch, erased
        expected.set(`n.${r - 1}`, null)
      }
      await kv.put(`c.${r}`, valueOf('cancelled')) // written and erased within one batch
      await kv.erase(`c.${r}`)
      expected.set(`c.${r}`, null)
      await kv.erase(`s.${3000 + r}`) // a snapshot entry erased, written again, erased again
      await kv.put(`s.${3000 + r}`, valueOf('cancelled'))
      await kv.erase(`s.${3000 + r}`)
      expected.set(`s.${3000 + r}`, null)
      await sleep(FLUSH_DELAY_MS + 5)
    }
    expect(rounds, 'flushes during the rewrite').toBeGreaterThanOrEqual(2)
    await until('the rewrite', () => !existsSync(tmp))
    await sleep(FLUSH_DELAY_MS * 2)
    expect(statSync(file).size).toBeLessThan(before / 3)
    await expectState(kv, expected)
    const last = await kv.put('last', valueOf('last'))
    expected.set('last', 'last')
    await closeBus(bus)

    const again = await open(dir).kv('state')
    await expectState(again, expected)
    expect(await again.put('after', valueOf('after'))).toBeGreaterThan(last)
    expect(logged.filter((l) => l.level === 'error')).toEqual([])
  }, 60_000)

  it('close() and destroy() during a rewrite leave no tmp file, no descriptor, the full state', async () => {
    const dir = folder()
    const file = join(dir, 'r_state.kv')
    const tmp = `${file}.tmp`
    bigJournal(file)
    const bus = open(dir)
    const kv = await bus.kv('state')
    const expected = snapshotState()
    await kv.put('trigger', valueOf('trigger'))
    expected.set('trigger', 'trigger')
    await until('the rewrite to start', () => existsSync(tmp))
    await kv.put('s.7', valueOf('during'))
    expected.set('s.7', 'during')
    await kv.erase('s.8')
    expected.set('s.8', null)
    await closeBus(bus) // writes the last batch to the old file
    expect(existsSync(tmp)).toBe(false)
    // A write in flight when it closed finishes into the unlinked file, then lets it go.
    await until('descriptors closed', () => fdsUnder(dir).length === 0, 5_000, 10)
    expect(existsSync(tmp)).toBe(false)
    const sizeAfterClose = statSync(file).size
    await sleep(100)
    expect(statSync(file).size, 'nothing written after close').toBe(sizeAfterClose)

    const again = open(dir)
    const reopened = await again.kv('state')
    await expectState(reopened, expected)
    // destroy() during the next rewrite removes both files.
    await reopened.put('trigger', valueOf('again'))
    await until('the next rewrite to start', () => existsSync(tmp))
    await reopened.destroy()
    expect(existsSync(tmp)).toBe(false)
    expect(existsSync(file)).toBe(false)
    await closeBus(again)
    await until('descriptors closed', () => fdsUnder(dir).length === 0, 5_000, 10)
    expect(readdirSync(dir)).toEqual([])
  }, 60_000)

  it('a crash mid-rewrite (old file and a partial tmp) opens to the full state', async () => {
    const dir = folder()
    const file = join(dir, 'r_state.kv')
    const tmp = `${file}.tmp`
    bigJournal(file)
    const kv = await open(dir).kv('state')
    const expected = snapshotState()
    await kv.put('trigger', valueOf('trigger'))
    expected.set('trigger', 'trigger')
    await until('the rewrite to start', () => existsSync(tmp))
    await kv.put('s.3', valueOf('during'))
    expected.set('s.3', 'during')
    await kv.erase('s.4')
    expected.set('s.4', null)
    await sleep(FLUSH_DELAY_MS * 2) // written to the old file: what a crash keeps
    expect(existsSync(tmp), 'still rewriting').toBe(true)
    // The crash: both files as they are now (synchronous copies, so nothing moves between them).
    const crashed = folder()
    copyFileSync(tmp, join(crashed, 'r_state.kv.tmp'))
    copyFileSync(file, join(crashed, 'r_state.kv'))
    expect(statSync(join(crashed, 'r_state.kv.tmp')).size).toBeLessThan(statSync(file).size)

    const bus = open(crashed)
    const reopened = await bus.kv('state')
    await expectState(reopened, expected)
    // The leftover tmp file is no obstacle to the next rewrite.
    await reopened.put('trigger', valueOf('again'))
    expected.set('trigger', 'again')
    await until('the rewrite', () => statSync(join(crashed, 'r_state.kv')).size < 100e6)
    await until('the tmp file to go', () => !existsSync(join(crashed, 'r_state.kv.tmp')))
    await closeBus(bus)
    await expectState(await open(crashed).kv('state'), expected)
  }, 60_000)

  it('a failed rewrite keeps the old file, logs, and is tried again once the file grew', async () => {
    const dir = folder()
    const file = join(dir, 'r_queue.kv')
    const tmp = `${file}.tmp`
    const bus = open(dir, 64 * 1024)
    const kv = await bus.kv('queue')
    await kv.put('kept', Buffer.from('k'))
    /** Dead records: `n` entries written (one batch), then erased (another). */
    const dead = async (n: number) => {
      for (let i = 0; i < n; i++) await kv.put(`q.${i}`, Buffer.alloc(200, 1))
      await sleep(FLUSH_DELAY_MS * 2)
      for (let i = 0; i < n; i++) await kv.erase(`q.${i}`)
      await sleep(FLUSH_DELAY_MS * 2)
    }
    const errors = () => logged.filter((l) => l.level === 'error')
    const given = kvJournalStats().abandonedRewrites

    // The tmp file cannot be opened: the rewrite does not start.
    mkdirSync(tmp)
    while (errors().length === 0) await dead(100)
    expect(errors()[0]).toMatchObject({ obj: { bucket: 'r_queue', err: { code: 'EISDIR' } } })
    expect(kvJournalStats().abandonedRewrites).toBe(given + 1)
    const failedAt = statSync(file).size
    // Not tried again at every write: only once the file grew by a quarter of the threshold.
    while (statSync(file).size < failedAt + 12 * 1024) await dead(1)
    expect(errors()).toHaveLength(1)
    while (errors().length === 1) await dead(10)
    expect(statSync(file).size).toBeGreaterThan(failedAt + 16 * 1024)
    rmSync(tmp, { recursive: true })

    // Writing the tmp file fails (ENOSPC) once started: it is removed, the old file kept.
    if (existsSync('/dev/full')) {
      symlinkSync('/dev/full', tmp)
      while (errors().length === 2) await dead(100)
      expect(errors()[2]).toMatchObject({ obj: { err: { code: 'ENOSPC' } } })
      expect(existsSync(tmp)).toBe(false)
      expect(kvJournalStats().abandonedRewrites).toBe(given + 3)
    }
    // And then it succeeds.
    const grown = statSync(file).size
    while (statSync(file).size >= grown / 2) await dead(100)
    expect(existsSync(tmp)).toBe(false)
    await kv.put('after', Buffer.from('a'))
    await closeBus(bus)
    const again = await open(dir).kv('queue')
    expect(await again.keys()).toEqual(['kept', 'after'])
  }, 60_000)
})
