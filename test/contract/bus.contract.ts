import { afterEach, describe, expect, it, vi } from 'vitest'
import type { Bus, BusMessage, KvEntry } from '../../services/common/bus/bus.ts'
import { requestJson, serveJson } from '../../services/common/bus/rpc.ts'
import {
  BusTimeoutError,
  KvConflictError,
  NoRespondersError,
  NotFoundError,
  UbError,
} from '../../services/common/errors.ts'

/** Makes a bus; buses made with the same `prefix` are replicas of one service on one server. */
export type MakeBus = (options?: { prefix?: string }) => Promise<Bus>

const text = (s: string): Uint8Array => new TextEncoder().encode(s)
const str = (b: Uint8Array): string => new TextDecoder().decode(b)
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const WAIT = { timeout: 5_000, interval: 10 } // 5 s, polled every 10 ms
const TTL_MS = 1_000 // 1 s: NATS 2.9 bucket max_age, checked by the server's expiry timer

/** Every subject a handler saw, in arrival order. */
function recorder() {
  const seen: BusMessage[] = []
  return {
    seen,
    subjects: () => seen.map((m) => m.subject),
    handler: (m: BusMessage) => seen.push(m),
  }
}

function entry(
  key: string,
  value: string,
  revision: number,
  operation: KvEntry['operation'] = 'PUT'
) {
  return { key, value: text(value), revision, operation }
}

/** One suite for every Bus implementation (ARCHITECTURE.md §7; drizzle `tests()`). */
export function busContract(name: string, makeBus: MakeBus): void {
  describe(`bus contract: ${name}`, () => {
    const open: Bus[] = []
    async function bus(options?: { prefix?: string }): Promise<Bus> {
      const b = await makeBus(options)
      open.push(b)
      return b
    }
    afterEach(async () => {
      await Promise.all(open.splice(0).map((b) => b.close()))
    })

    describe('publish/subscribe', () => {
      it('delivers by exact subject, `*` (one token) and `>` (one or more tokens)', async () => {
        const b = await bus()
        const exact = recorder()
        const star = recorder()
        const tail = recorder()
        await b.subscribe('a.b', exact.handler)
        await b.subscribe('a.*', star.handler)
        await b.subscribe('a.>', tail.handler)
        for (const s of ['a.b', 'a.b.c', 'a', 'x.b', 'a.c', 'a.b']) b.publish(s, text(s))
        await vi.waitFor(() => expect(exact.seen).toHaveLength(2), WAIT)
        await vi.waitFor(() => expect(star.seen).toHaveLength(3), WAIT)
        await vi.waitFor(() => expect(tail.seen).toHaveLength(4), WAIT)
        expect(exact.seen).toEqual([
          { subject: 'a.b', data: text('a.b') },
          { subject: 'a.b', data: text('a.b') },
        ])
        expect(star.subjects()).toEqual(['a.b', 'a.c', 'a.b'])
        expect(tail.subjects()).toEqual(['a.b', 'a.b.c', 'a.c', 'a.b'])
      })

      it('keeps per-publisher order and carries headers', async () => {
        const b = await bus()
        const r = recorder()
        await b.subscribe('seq.*', r.handler)
        for (let i = 0; i < 50; i++) b.publish(`seq.${i}`, text(String(i)), { 'X-Seq': String(i) })
        await vi.waitFor(() => expect(r.seen).toHaveLength(50), WAIT)
        expect(r.seen[7]).toEqual({ subject: 'seq.7', data: text('7'), headers: { 'X-Seq': '7' } })
        expect(r.subjects()).toEqual(Array.from({ length: 50 }, (_, i) => `seq.${i}`))
      })

      it('gives receivers bytes the sender can no longer change', async () => {
        const b = await bus()
        const r = recorder()
        await b.subscribe('copy', r.handler)
        const data = text('before')
        b.publish('copy', data)
        data.set(text('AFTER!'))
        await vi.waitFor(() => expect(r.seen).toHaveLength(1), WAIT)
        expect(str(r.seen[0]!.data)).toBe('before')
      })

      it('stops delivering after unsubscribe', async () => {
        const b = await bus()
        const gone = recorder()
        const stays = recorder()
        const sub = await b.subscribe('u', gone.handler)
        await b.subscribe('u', stays.handler)
        b.publish('u', text('1'))
        await vi.waitFor(() => expect(gone.seen).toHaveLength(1), WAIT)
        await sub.unsubscribe()
        b.publish('u', text('2'))
        await vi.waitFor(() => expect(stays.seen).toHaveLength(2), WAIT)
        await b.flush()
        expect(gone.seen.map((m) => str(m.data))).toEqual(['1'])
      })

      it('keeps buses with different prefixes apart (subjects, services and buckets)', async () => {
        const a = await bus()
        const b = await bus()
        expect(a.prefix).not.toBe(b.prefix)
        const r = recorder()
        await a.subscribe('>', r.handler)
        await a.serve('svc.echo', (m) => m.data)
        b.publish('x.y', text('from b'))
        a.publish('x.z', text('from a'))
        await vi.waitFor(() => expect(r.seen).toHaveLength(1), WAIT)
        await b.flush()
        await a.flush()
        expect(r.seen).toEqual([{ subject: 'x.z', data: text('from a') }])
        await expect(b.request('svc.echo', text('hi'))).rejects.toBeInstanceOf(NoRespondersError)
        await (await a.kv('iso')).put('k', text('a'))
        expect(await (await b.kv('iso')).get('k')).toBeNull()
      })

      it('gives each message to one member of a queue group, and to every plain subscriber', async () => {
        const b = await bus()
        const one = recorder()
        const two = recorder()
        const plain = recorder()
        await b.subscribe('work.*', one.handler, { queue: 'workers' })
        await b.subscribe('work.*', two.handler, { queue: 'workers' })
        await b.subscribe('work.*', plain.handler)
        const sent = Array.from({ length: 40 }, (_, i) => `work.${i}`)
        for (const s of sent) b.publish(s, text(s))
        await vi.waitFor(() => expect(one.seen.length + two.seen.length).toBe(40), WAIT)
        await vi.waitFor(() => expect(plain.seen).toHaveLength(40), WAIT)
        await b.flush()
        // Exactly once across the group, and both members took a share.
        expect([...one.subjects(), ...two.subjects()].sort()).toEqual([...sent].sort())
        expect(one.seen.length).toBeGreaterThan(0)
        expect(two.seen.length).toBeGreaterThan(0)
        expect(plain.subjects()).toEqual(sent)
      })

      it('shares a queue group between two replicas on separate connections', async () => {
        const first = await bus()
        const second = await bus({ prefix: first.prefix })
        const client = await bus({ prefix: first.prefix })
        const served: string[][] = [[], []]
        await first.serve('svc.who', (m) => (served[0]!.push(str(m.data)), text('first')), {
          queue: 'svc',
        })
        await second.serve('svc.who', (m) => (served[1]!.push(str(m.data)), text('second')), {
          queue: 'svc',
        })
        const answers = await Promise.all(
          Array.from({ length: 30 }, (_, i) => client.request('svc.who', text(String(i))))
        )
        expect(answers.every((a) => a.subject === 'svc.who')).toBe(true)
        expect(served[0]!.length + served[1]!.length).toBe(30)
        expect(served[0]!.length).toBeGreaterThan(0)
        expect(served[1]!.length).toBeGreaterThan(0)
        // Each request answered by the replica that took it, once.
        const byFirst = answers.filter((a) => str(a.data) === 'first').length
        expect(byFirst).toBe(served[0]!.length)
      })
    })

    describe('request/reply', () => {
      it('answers a request through serve', async () => {
        const b = await bus()
        await b.serve('svc.upper', (m) => text(str(m.data).toUpperCase()))
        const reply = await b.request('svc.upper', text('hello'))
        expect(reply).toEqual({ subject: 'svc.upper', data: text('HELLO') })
      })

      it('round-trips JSON through requestJson/serveJson', async () => {
        const b = await bus()
        await serveJson<{ n: number }, { doubled: number }>(b, 'svc.double', async ({ n }) => ({
          doubled: n * 2,
        }))
        expect(await requestJson(b, 'svc.double', { n: 21 })).toEqual({ doubled: 42 })
      })

      it('fails at once with NoRespondersError when nobody serves the subject', async () => {
        const b = await bus()
        // A timeout far beyond the test's own shows the failure does not wait for it.
        const err = await b.request('svc.nobody', text('?'), { timeoutMs: 60_000 }).catch((e) => e)
        expect(err).toBeInstanceOf(NoRespondersError)
        expect(err).toMatchObject({ code: 'no_responders', message: "nobody serves 'svc.nobody'" })
      })

      it('fails with BusTimeoutError when the responder is too slow', async () => {
        const b = await bus()
        let finished = false
        await b.serve('svc.slow', async () => {
          await sleep(300)
          finished = true
          return text('late')
        })
        const err = await b.request('svc.slow', text('?'), { timeoutMs: 50 }).catch((e) => e)
        expect(err).toBeInstanceOf(BusTimeoutError)
        expect(err).toMatchObject({
          code: 'bus_timeout',
          message: "no reply on 'svc.slow' within 50 ms",
        })
        await vi.waitFor(() => expect(finished).toBe(true), WAIT) // the late reply is dropped quietly
        await b.flush()
      })

      it('carries a thrown UbError code and message back to the caller', async () => {
        const b = await bus()
        await b.serve('svc.conflict', () => {
          throw new KvConflictError('leases', 'owner.x', 'taken')
        })
        await b.serve('svc.missing', () => {
          throw new NotFoundError('binding', 'b1')
        })
        const conflict = await b.request('svc.conflict', text('')).catch((e) => e)
        expect(conflict).toBeInstanceOf(UbError)
        expect(conflict.toJSON()).toEqual({ code: 'kv_conflict', message: 'leases/owner.x: taken' })
        const missing = await requestJson<never>(b, 'svc.missing', {}).catch((e: UbError) => e)
        expect(missing.toJSON()).toEqual({
          code: 'not_found',
          message: "binding 'b1' does not exist",
        })
      })

      it('hides the internals of an unknown error behind code internal', async () => {
        const b = await bus()
        const spy = vi.spyOn(console, 'error').mockImplementation(() => {})
        await b.serve('svc.bug', () => {
          throw new TypeError('secret detail')
        })
        const err = await b.request('svc.bug', text('')).catch((e) => e)
        expect(err.toJSON()).toEqual({ code: 'internal', message: 'internal error' })
        expect(spy).toHaveBeenCalledTimes(1) // logged on the serving side, not swallowed
        spy.mockRestore()
      })
    })

    describe('key-value', () => {
      it('creates once, then refuses a second create with KvConflictError', async () => {
        const kv = await (await bus()).kv('leases')
        const rev = await kv.create('owner.b1', text('me'))
        expect(await kv.get('owner.b1')).toEqual(entry('owner.b1', 'me', rev))
        const err = await kv.create('owner.b1', text('you')).catch((e) => e)
        expect(err).toBeInstanceOf(KvConflictError)
        expect(err.code).toBe('kv_conflict')
        expect(await kv.get('owner.b1')).toEqual(entry('owner.b1', 'me', rev))
      })

      it('updates on the current revision and refuses a stale one', async () => {
        const kv = await (await bus()).kv('cas')
        const r1 = await kv.create('k', text('v1'))
        const r2 = await kv.update('k', text('v2'), r1)
        expect(r2).toBeGreaterThan(r1)
        await expect(kv.update('k', text('stale'), r1)).rejects.toBeInstanceOf(KvConflictError)
        expect(await kv.get('k')).toEqual(entry('k', 'v2', r2))
        await expect(kv.update('absent', text('x'), r2)).rejects.toBeInstanceOf(KvConflictError)
      })

      it('numbers revisions per bucket, increasing across keys', async () => {
        const kv = await (await bus()).kv('revs')
        const revs = [await kv.put('a', text('1')), await kv.put('b', text('2'))]
        await kv.delete('a')
        revs.push(await kv.put('a', text('3')))
        expect(revs).toEqual([revs[0], revs[0]! + 1, revs[0]! + 3])
      })

      it('reads a deleted key as absent, and lets create take it again', async () => {
        const kv = await (await bus()).kv('del')
        await kv.create('k', text('first'))
        await kv.delete('k')
        expect(await kv.get('k')).toBeNull()
        const rev = await kv.create('k', text('second'))
        expect(await kv.get('k')).toEqual(entry('k', 'second', rev))
      })

      it('finds the oldest live entry under a filter, with its write time', async () => {
        const kv = await (await bus()).kv('oldest')
        expect(await kv.oldest('s1.>')).toBeNull()
        const before = Date.now()
        await kv.put('s2.a', text('other session'))
        const r1 = await kv.put('s1.x.1', text('first'))
        await kv.put('s1.x.2', text('second'))
        const head = await kv.oldest('s1.>')
        expect(head).toMatchObject({ key: 's1.x.1', revision: r1, operation: 'PUT' })
        expect(Buffer.from(head!.value).toString()).toBe('first')
        expect(head!.createdAt).toBeGreaterThanOrEqual(before - 1_000)
        expect(head!.createdAt).toBeLessThanOrEqual(Date.now() + 1_000)
        // Erased and deleted heads are passed over: the next live one is the oldest.
        await kv.erase('s1.x.1')
        expect((await kv.oldest('s1.>'))?.key).toBe('s1.x.2')
        await kv.delete('s1.x.2')
        expect(await kv.oldest('s1.>')).toBeNull()
        expect((await kv.oldest('s2.*'))?.key).toBe('s2.a')
      })

      it('erases a key without a delete marker: no revision spent, no watch event', async () => {
        const kv = await (await bus()).kv('erase')
        const seen: KvEntry[] = []
        await kv.watch((e) => seen.push(e), { includeCurrent: false })
        const r1 = await kv.put('q.1', text('one'))
        await kv.erase('q.1')
        await kv.erase('q.never') // absent: nothing to do
        const r2 = await kv.put('q.2', text('two'))
        expect(r2).toBe(r1 + 1) // a delete would have appended a marker in between
        await vi.waitFor(() => expect(seen).toHaveLength(2), WAIT)
        expect(seen.map((e) => [e.key, e.operation, e.revision])).toEqual([
          ['q.1', 'PUT', r1],
          ['q.2', 'PUT', r2],
        ])
        expect(await kv.get('q.1')).toBeNull()
        expect(await kv.keys('q.>')).toEqual(['q.2'])
        const r3 = await kv.create('q.1', text('again'))
        expect(await kv.get('q.1')).toEqual(entry('q.1', 'again', r3))
      })

      it('erases only the given revision of a key, never a newer value', async () => {
        const kv = await (await bus()).kv('erase2')
        const r1 = await kv.put('w', text('old'))
        const r2 = await kv.put('w', text('new'))
        await kv.erase('w', r1)
        expect(await kv.get('w')).toEqual(entry('w', 'new', r2))
        await kv.erase('w', r2)
        expect(await kv.get('w')).toBeNull()
      })

      it('ends a listing at once when the only key goes while it is taken', async () => {
        // The listing snapshots the subjects, then reads their last values; the key erased (or
        // expired) in between left nothing to read, and the listing waited for its 10 s deadline.
        const kv = await (await bus()).kv('keys-race')
        for (let round = 0; round < 5; round++) {
          await kv.put(`only.${round}`, text('x'))
          const started = Date.now()
          const [keys] = await Promise.all([kv.keys('only.>'), kv.erase(`only.${round}`)])
          expect(keys.length).toBeLessThanOrEqual(1)
          expect(Date.now() - started).toBeLessThan(5_000)
        }
      })

      it('lists a key rewritten while the listing is taken', async () => {
        // The listing snapshots the stream, then reads last values: a key rewritten in between
        // has its last value past the snapshot, and was left out (CI: a presence record renewed
        // during GET /api/v1/cluster went missing from the view).
        const kv = await (await bus()).kv('keys-rewrite')
        for (const k of ['m.a', 'm.b', 'm.c']) await kv.put(k, text('1'))
        for (let round = 0; round < 5; round++) {
          const [keys] = await Promise.all([
            kv.keys('m.>'),
            kv.put('m.a', text(String(round))),
            kv.put('m.b', text(String(round))),
          ])
          expect(keys.sort()).toEqual(['m.a', 'm.b', 'm.c'])
        }
      })

      it('lists live keys, filtered with wildcards', async () => {
        const kv = await (await bus()).kv('keys')
        expect(await kv.keys()).toEqual([])
        for (const k of ['lease.a', 'lease.b', 'retained.x.y', 'retained.z'])
          await kv.put(k, text(k))
        await kv.delete('lease.b')
        expect((await kv.keys()).sort()).toEqual(['lease.a', 'retained.x.y', 'retained.z'])
        expect(await kv.keys('lease.*')).toEqual(['lease.a'])
        expect(await kv.keys('retained.>')).toEqual(['retained.x.y', 'retained.z'])
        expect(await kv.keys('retained.*.y')).toEqual(['retained.x.y'])
      })

      it('watches current values first, then puts and deletes in order', async () => {
        const kv = await (await bus()).kv('watch')
        const a1 = await kv.put('a', text('a1'))
        await kv.put('gone', text('x'))
        await kv.delete('gone') // deleted before the watch: not a current value
        const seen: KvEntry[] = []
        const w = await kv.watch((e) => seen.push(e))
        const b1 = await kv.put('b', text('b1'))
        await kv.delete('a')
        const a2 = await kv.put('a', text('a2'))
        await vi.waitFor(() => expect(seen).toHaveLength(4), WAIT)
        expect(seen).toEqual([
          entry('a', 'a1', a1),
          entry('b', 'b1', b1),
          { key: 'a', value: expect.any(Uint8Array), revision: b1 + 1, operation: 'DEL' },
          entry('a', 'a2', a2),
        ])
        await w.unsubscribe()
        await kv.put('after', text('unsubscribe'))
        await sleep(50)
        expect(seen).toHaveLength(4)
      })

      it('watches only updates without includeCurrent, and only keys matching the filter', async () => {
        const kv = await (await bus()).kv('watch2')
        await kv.put('lease.old', text('old'))
        const all: KvEntry[] = []
        const leases: KvEntry[] = []
        await kv.watch((e) => all.push(e), { includeCurrent: false })
        await kv.watch((e) => leases.push(e), { key: 'lease.*', includeCurrent: false })
        const r1 = await kv.put('other', text('o'))
        const r2 = await kv.put('lease.new', text('n'))
        await kv.delete('lease.old')
        await vi.waitFor(() => expect(all).toHaveLength(3), WAIT)
        await vi.waitFor(() => expect(leases).toHaveLength(2), WAIT)
        expect(all.map((e) => [e.key, e.operation, e.revision])).toEqual([
          ['other', 'PUT', r1],
          ['lease.new', 'PUT', r2],
          ['lease.old', 'DEL', r2 + 1],
        ])
        expect(leases).toEqual([all[1], all[2]])
      })

      it('expires entries after the bucket TTL, silently (no watch event, as on NATS 2.9)', async () => {
        const kv = await (await bus()).kv('ttl', { ttlMs: TTL_MS })
        const events: KvEntry[] = []
        await kv.watch((e) => events.push(e))
        const rev = await kv.create('owner.b1', text('me'))
        expect(await kv.get('owner.b1')).toEqual(entry('owner.b1', 'me', rev))
        await vi.waitFor(async () => expect(await kv.get('owner.b1')).toBeNull(), {
          timeout: TTL_MS * 8,
          interval: 100,
        })
        expect(await kv.keys()).toEqual([])
        // The lease is free: a standby's create wins and the old holder's renewal is refused.
        const next = await kv.create('owner.b1', text('standby'))
        await expect(kv.update('owner.b1', text('me'), rev)).rejects.toBeInstanceOf(KvConflictError)
        await vi.waitFor(() => expect(events).toHaveLength(2), WAIT)
        expect(events).toEqual([entry('owner.b1', 'me', rev), entry('owner.b1', 'standby', next)])
      })

      it('destroys a bucket with everything in it', async () => {
        const b = await bus()
        const kv = await b.kv('doomed')
        await kv.put('k', text('v'))
        await kv.destroy()
        await kv.destroy() // twice is fine
        await expect(kv.get('k')).rejects.toBeInstanceOf(NotFoundError)
        const again = await b.kv('doomed')
        expect(await again.get('k')).toBeNull()
        expect(await again.keys()).toEqual([])
      })

      it('shares buckets between replicas: one create wins, the other watches it', async () => {
        const first = await bus()
        const second = await bus({ prefix: first.prefix })
        const kvA = await first.kv('leases')
        const kvB = await second.kv('leases')
        expect(kvA.name).toBe(kvB.name)
        const seen: KvEntry[] = []
        await kvB.watch((e) => seen.push(e), { key: 'owner.*' })
        const rev = await kvA.create('owner.b1', text('first'))
        await expect(kvB.create('owner.b1', text('second'))).rejects.toBeInstanceOf(KvConflictError)
        const renewed = await kvA.update('owner.b1', text('first'), rev)
        await vi.waitFor(() => expect(seen).toHaveLength(2), WAIT)
        expect(seen).toEqual([entry('owner.b1', 'first', rev), entry('owner.b1', 'first', renewed)])
      })

      it('rejects keys that are not valid NATS KV keys', async () => {
        const kv = await (await bus()).kv('valid')
        for (const bad of ['', '.a', 'a.', 'a..b', 'sp ace', 'a*']) {
          await expect(kv.put(bad, text('x'))).rejects.toMatchObject({ code: 'invalid_request' })
        }
      })
    })

    describe('lifecycle', () => {
      it('closes twice without error and refuses use after close', async () => {
        const b = await bus()
        await b.close()
        await b.close()
        expect(() => b.publish('x', text('x'))).toThrow(
          expect.objectContaining({ code: 'bus_closed' })
        )
      })
    })
  })
}
