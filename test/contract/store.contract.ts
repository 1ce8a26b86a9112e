import { createHash } from 'node:crypto'
import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { DbKind } from '../../db/client.ts'
import { decodeJson, type Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { silentLogger } from '../../services/common/log.ts'
import {
  ALL_TRANSITIONS,
  createStoreClient,
  startStore,
  type EventActor,
  type SendEventInput,
  type Store,
  type StoreClient,
  type StoreHooks,
  type TransitionRecord,
} from '../../services/store/index.ts'
import { transitionHash } from '../../services/store/hash.ts'
import { createGroupCommit } from '../../services/store/group-commit.ts'
import { COMMIT_ORDER_LOCK_KEY } from '../../services/store/repo.ts'
import { applyEvent, MACHINES } from '../../machines/index.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { uniquePrefix } from '../helpers/nats.ts'

const operator: EventActor = { kind: 'operator', id: 'admin' }
const sha256 = (s: string) => createHash('sha256').update(s).digest('hex')
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

/** One suite for the store over the bus, run against PGlite and real Postgres. */
export function storeContract(kind: DbKind): void {
  describe(`binding store on ${kind}`, () => {
    let t: TestDb
    let bus: Bus
    let store: Store
    let client: StoreClient
    const hooks: StoreHooks = {}
    const published: TransitionRecord[] = []

    beforeAll(async () => {
      t = await createTestDb(kind)
      bus = createInProcessBus({ prefix: uniquePrefix('store') })
      await bus.subscribe(ALL_TRANSITIONS, (msg) => published.push(decodeJson(msg.data)))
      store = await startStore({ bus, db: t.db, log: silentLogger(), hooks })
      client = createStoreClient({ bus })
    })
    afterAll(async () => {
      await store?.close()
      await bus?.close()
      await t?.close()
    })

    const send = (
      id: string,
      event: SendEventInput['event'],
      machine: 'upstream' | 'request' = 'upstream'
    ) => client.call('event', { machine, id, event, actor: operator })
    const newUpstream = () =>
      client.call('upstream.create', {
        host: 'mqtts://broker.example',
        brokerPort: 8883,
        httpPort: 443,
        secret: 's3cret',
        actor: operator,
      })
    /** An upstream taken to Active through `n` logged transitions (create, approve, bindings, activate). */
    async function activeUpstream() {
      const up = await newUpstream()
      await send(up.id, { type: 'upstream.approve', grants: ['acme'] })
      await send(up.id, {
        type: 'upstream.bindings.set',
        bindings: [{ source: 'p1', target: 'acme/p1' }],
      })
      await send(up.id, { type: 'upstream.activate' })
      return up
    }

    it('creates the instance once and keeps it', async () => {
      expect(store.instance.instanceId).toMatch(/^UB_[0-9A-Za-z]{6}$/)
      expect(store.instance.adminToken).toMatch(/^ubt_/)
      const again = await client.call('instance.get', {})
      expect(again).toEqual({
        instanceId: store.instance.instanceId,
        createdAt: store.instance.createdAt,
      })
      const token = store.instance.adminToken!
      expect(await client.call('instance.verifyAdminToken', { token })).toEqual({ ok: true })
      expect(await client.call('instance.verifyAdminToken', { token: token + 'x' })).toEqual({
        ok: false,
      })
    })

    it('creates, gets and lists upstreams, logging the creation as the first transition', async () => {
      const up = await newUpstream()
      expect(up).toEqual({
        id: expect.stringMatching(/^up_[0-9A-Za-z]{12}$/),
        kind: 'uns',
        host: 'mqtts://broker.example',
        brokerPort: 8883,
        httpPort: 443,
        status: 'Pending',
        active: false,
        bindings: [],
        grants: [],
        remoteRequestId: null,
        lastError: null,
        withdrawalOwed: false,
        username: null,
        tls: null,
        seq: 1,
        createdAt: expect.stringMatching(ISO),
        updatedAt: expect.stringMatching(ISO),
      })
      expect(await client.call('upstream.get', { id: up.id })).toEqual(up)
      expect((await client.call('upstream.list', {})).map((u) => u.id)).toContain(up.id)
      expect(
        (await client.call('upstream.list', { status: 'Active' })).map((u) => u.id)
      ).not.toContain(up.id)
      expect(await client.call('upstream.credentials', { id: up.id })).toEqual({
        username: null,
        password: 's3cret',
      })
      const log = await client.call('log', { machine: 'upstream', id: up.id })
      expect(log.items).toEqual([
        expect.objectContaining({
          seq: 1,
          from: null,
          to: 'Pending',
          event: {
            type: 'upstream.create',
            input: { kind: 'uns' },
            host: up.host,
            brokerPort: 8883,
            httpPort: 443,
          },
          actor: operator,
          prevHash: '0'.repeat(64),
        }),
      ])
      const patched = await client.call('upstream.patch', {
        id: up.id,
        lastError: 'refused',
        remoteRequestId: 'rq_x',
      })
      expect(patched).toMatchObject({ lastError: 'refused', remoteRequestId: 'rq_x', seq: 1 })
    })

    it('applies events, and refuses what the machine refuses with its reason, changing nothing', async () => {
      const up = await newUpstream()
      const approved = await send(up.id, { type: 'upstream.approve' })
      expect(approved).toMatchObject({
        machine: 'upstream',
        machineId: up.id,
        seq: 2,
        from: 'Pending',
        to: 'Approved',
      })
      await expect(send(up.id, { type: 'upstream.activate' })).rejects.toMatchObject({
        code: 'invalid_transition',
        message: 'activate needs at least one binding',
      })
      expect(await client.call('upstream.get', { id: up.id })).toMatchObject({
        status: 'Approved',
        seq: 2,
      })
      await send(up.id, {
        type: 'upstream.bindings.set',
        bindings: [{ source: 'a/b', target: 'x/a/b' }],
      })
      const active = await send(up.id, { type: 'upstream.activate' })
      expect(active).toMatchObject({
        seq: 4,
        from: 'Approved',
        to: 'Active',
        at: expect.stringMatching(ISO),
      })
      expect(active.hash).toBe(transitionHash(active.prevHash, active))
      expect(await client.call('upstream.get', { id: up.id })).toMatchObject({
        status: 'Active',
        active: true,
        bindings: [{ source: 'a/b', target: 'x/a/b' }],
        grants: ['#'],
        seq: 4,
      })
      // Published after commit, exactly once each, with the global position.
      await bus.flush()
      const mine = published.filter((r) => r.machineId === up.id)
      expect(mine.map((r) => r.seq)).toEqual([1, 2, 3, 4])
      expect(mine[3]).toEqual(active)
    })

    it('starts a plain MQTT upstream Approved and replays it', async () => {
      const up = await client.call('upstream.create', {
        kind: 'mqtt',
        host: 'mqtt://plain.example',
        brokerPort: 1883,
        httpPort: 80,
        username: 'u',
        secret: 'p',
        actor: operator,
      })
      expect(up).toMatchObject({ status: 'Approved', grants: ['#'] })
      const replay = await client.call('replay', { machine: 'upstream', id: up.id })
      expect(replay).toMatchObject({ to: 1, matchesStored: true, verify: { ok: true, rows: 1 } })
    })

    it('pages the log and the global log', async () => {
      const up = await activeUpstream()
      const first = await client.call('log', { machine: 'upstream', id: up.id, limit: 3 })
      expect(first.items.map((r) => r.seq)).toEqual([1, 2, 3])
      expect(first.next).toBe(3)
      const second = await client.call('log', {
        machine: 'upstream',
        id: up.id,
        after: first.next!,
        limit: 3,
      })
      expect(second).toMatchObject({ items: [expect.objectContaining({ seq: 4 })], next: null })
      const global = await client.call('log.global', { limit: 1_000 })
      const seqs = global.items.map((r) => r.globalSeq)
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b))
      const last = global.items.at(-1)!
      expect(await client.call('log.global', { after: last.globalSeq })).toEqual({
        items: [],
        next: null,
      })
    })

    it('replays to any seq and reproduces the state recorded at that seq', async () => {
      const up = await activeUpstream()
      await send(up.id, { type: 'upstream.deactivate' })
      await send(up.id, { type: 'upstream.revoke' })
      const { items } = await client.call('log', { machine: 'upstream', id: up.id })
      for (const row of items) {
        const replay = await client.call('replay', { machine: 'upstream', id: up.id, to: row.seq })
        expect(replay).toEqual({
          machine: 'upstream',
          machineId: up.id,
          to: row.seq,
          snapshot: row.snapshot,
          matchesStored: true,
          verify: { ok: true, rows: items.length },
        })
      }
      const stored = await client.call('upstream.get', { id: up.id })
      expect(stored).toMatchObject({ status: 'Revoked', seq: 6 })
    })

    it('verify names a row changed with plain SQL', async () => {
      const up = await activeUpstream()
      await t.db.execute(
        sql`update transitions set event = '{"type":"upstream.approve","grants":["#"]}'::jsonb
            where machine_id = ${up.id} and seq = 2`
      )
      expect(await client.call('verify', { machine: 'upstream', id: up.id })).toMatchObject({
        ok: false,
        firstBadSeq: 2,
        problem: 'changed',
      })
    })

    it('verify names a row deleted', async () => {
      const up = await activeUpstream()
      await t.db.execute(sql`delete from transitions where machine_id = ${up.id} and seq = 3`)
      expect(await client.call('verify', { machine: 'upstream', id: up.id })).toMatchObject({
        ok: false,
        firstBadSeq: 3,
        problem: 'deleted',
      })
      const last = await activeUpstream()
      await t.db.execute(sql`delete from transitions where machine_id = ${last.id} and seq = 4`)
      expect(await client.call('verify', { machine: 'upstream', id: last.id })).toMatchObject({
        ok: false,
        firstBadSeq: 4,
        problem: 'deleted',
      })
    })

    it('verify names a row inserted, even one whose hash chains correctly', async () => {
      const up = await activeUpstream()
      const { items } = await client.call('log', { machine: 'upstream', id: up.id })
      const head = items.at(-1)!
      const forged = {
        ...head,
        seq: 5,
        event: { type: 'upstream.deactivate' },
        from: 'Active',
        to: 'Approved',
      }
      const hash = transitionHash(head.hash, forged)
      await t.db.execute(
        sql`insert into transitions (machine, machine_id, seq, event, actor, from_state, to_state, snapshot,
              machine_version, at, prev_hash, hash)
            values ('upstream', ${up.id}, 5, ${JSON.stringify(forged.event)}::jsonb, '{"kind":"system"}'::jsonb,
              'Active', 'Approved', ${JSON.stringify(head.snapshot)}::jsonb, 1, now(), ${head.hash}, ${hash})`
      )
      expect(await client.call('verify', { machine: 'upstream', id: up.id })).toMatchObject({
        ok: false,
        firstBadSeq: 5,
        problem: 'inserted',
      })
    })

    it('verify names a snapshot changed behind the log', async () => {
      const up = await activeUpstream()
      await t.db
        .execute(sql`update upstreams set snapshot = jsonb_set(snapshot, '{context,grants}', '["#"]')
                             where id = ${up.id}`)
      expect(await client.call('verify', { machine: 'upstream', id: up.id })).toMatchObject({
        ok: false,
        firstBadSeq: 4,
        problem: 'snapshot_mismatch',
      })
    })

    it('answers not_found for an unknown id on every verb that takes one', async () => {
      const id = 'up_doesnotexist'
      const calls = [
        () => client.call('upstream.get', { id }),
        () => client.call('upstream.patch', { id, lastError: 'x' }),
        () => client.call('upstream.credentials', { id }),
        () => client.call('upstream.edit', { id, brokerPort: 1, actor: operator }),
        () => client.call('request.get', { id: 'rq_nope' }),
        () => client.call('request.secretHash', { id: 'rq_nope' }),
        () => send(id, { type: 'upstream.approve' }),
        () => client.call('log', { machine: 'upstream', id }),
        () => client.call('replay', { machine: 'upstream', id }),
        () => client.call('verify', { machine: 'upstream', id }),
      ]
      for (const call of calls) await expect(call()).rejects.toMatchObject({ code: 'not_found' })
    })

    it('upstream.edit: columns and one chained row together; a retry of its key is one row', async () => {
      const up = await newUpstream()
      await send(up.id, { type: 'upstream.approve' })
      await client.call('upstream.patch', { id: up.id, remoteRequestId: 'rq_old' })
      const KEY = '-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----'
      const input = {
        id: up.id,
        requestKey: 'edit-key-0001',
        host: 'mqtts://other.example',
        tls: { key: KEY },
        actor: operator,
      }
      const edited = await client.call('upstream.edit', input)
      expect(edited.upstream).toMatchObject({
        host: 'mqtts://other.example',
        status: 'Pending',
        grants: [],
        remoteRequestId: null,
        tls: { key: KEY },
      })
      expect(edited.record).toMatchObject({
        seq: 3,
        from: 'Approved',
        to: 'Pending',
        event: {
          type: 'upstream.connection.set',
          changes: {
            host: { from: 'mqtts://broker.example', to: 'mqtts://other.example' },
            'tls.key': { from: null, to: `sha256:${sha256(KEY)}` },
          },
        },
      })
      const again = await client.call('upstream.edit', { ...input, retry: true })
      expect(again.record?.hash).toBe(edited.record?.hash)
      const log = await client.call('log', { machine: 'upstream', id: up.id })
      expect(log.items.map((r) => r.event.type)).toEqual([
        'upstream.create',
        'upstream.approve',
        'upstream.connection.set',
      ])
      expect(JSON.stringify(log)).not.toContain('-----BEGIN PRIVATE KEY')
      expect(await client.call('verify', { machine: 'upstream', id: up.id })).toMatchObject({
        ok: true,
      })
      const replay = await client.call('replay', { machine: 'upstream', id: up.id })
      expect(replay.matchesStored).toBe(true)
      // The plain event verb cannot send it: the columns would not follow.
      await expect(
        send(up.id, { type: 'upstream.connection.set', changes: {}, connection: {} })
      ).rejects.toMatchObject({ code: 'invalid_request' })
    })

    it('refuses malformed input with invalid_request', async () => {
      const up = await newUpstream()
      await send(up.id, { type: 'upstream.approve' })
      const bad: unknown[] = [
        { machine: 'upstream', id: up.id, actor: operator },
        { machine: 'upstream', id: up.id, event: { type: 42 }, actor: operator },
        { machine: 'upstream', id: up.id, event: { type: 'upstream.explode' }, actor: operator },
        { machine: 'upstream', id: up.id, event: { type: 'request.accept' }, actor: operator },
        { machine: 'bridge', id: up.id, event: { type: 'upstream.approve' }, actor: operator },
        {
          machine: 'upstream',
          id: up.id,
          event: { type: 'upstream.approve' },
          actor: { kind: 'hacker' },
        },
        {
          machine: 'upstream',
          id: up.id,
          event: { type: 'upstream.bindings.set', bindings: 'a' },
          actor: operator,
        },
        ...[
          [{ source: 'a/#/b', target: 'b' }],
          [{ source: 'a/+', target: 'x/{2}' }],
          [{ source: 'a/+/+', target: 'x/{1}', direction: 'in' }],
          [{ source: 'a', target: 'b', direction: 'sideways' }],
          [
            { source: 'a/+', target: 'x/{1}', direction: 'both' },
            { source: 'a/b', target: 'y' },
          ],
          [{ source: 'a', target: '$SYS/x' }],
          [{ source: '/a', target: 'b' }],
          [{ source: 'a//b', target: 'b' }],
          [{ source: 'a', target: 'b/' }],
          [
            { source: 'a', target: 'b' },
            { source: 'a', target: 'c' },
          ],
          [{ source: 'a\u0000', target: 'b' }],
        ].map((bindings) => ({
          machine: 'upstream',
          id: up.id,
          event: { type: 'upstream.bindings.set', bindings },
          actor: operator,
        })),
      ]
      for (const input of bad) {
        await expect(
          client.call('event', input as SendEventInput),
          JSON.stringify(input)
        ).rejects.toMatchObject({
          code: 'invalid_request',
        })
      }
      for (const input of [
        { host: 'http://x', brokerPort: 1, httpPort: 1, actor: operator },
        { host: 'mqtt://x', brokerPort: 0, httpPort: 1, actor: operator },
        { host: 'mqtt://x', brokerPort: 1, httpPort: 1 },
      ]) {
        await expect(client.call('upstream.create', input as never)).rejects.toMatchObject({
          code: 'invalid_request',
        })
      }
      expect(await client.call('upstream.get', { id: up.id })).toMatchObject({
        status: 'Approved',
        seq: 2,
      })
    })

    it('leaves no half-written transition when the transaction fails between statements, and keeps serving', async () => {
      const up = await newUpstream()
      hooks.afterLogInsert = () => {
        throw new Error('injected failure after the log insert')
      }
      try {
        await expect(send(up.id, { type: 'upstream.approve' })).rejects.toMatchObject({
          code: 'storage_unavailable',
        })
      } finally {
        delete hooks.afterLogInsert
      }
      // The database itself refusing the snapshot update, after the log row went in.
      await t.db.execute(
        sql.raw(`
        create function ub_test_refuse() returns trigger language plpgsql as $$
        begin raise exception 'refused by test trigger'; end $$`)
      )
      await t.db.execute(
        sql.raw(`
        create trigger ub_test_refuse before update on upstreams for each row
          when (new.state = 'Approved') execute function ub_test_refuse()`)
      )
      try {
        await expect(send(up.id, { type: 'upstream.approve' })).rejects.toMatchObject({
          code: 'storage_unavailable',
        })
      } finally {
        await t.db.execute(sql.raw('drop trigger ub_test_refuse on upstreams'))
        await t.db.execute(sql.raw('drop function ub_test_refuse()'))
      }
      const log = await client.call('log', { machine: 'upstream', id: up.id })
      expect(log.items.map((r) => r.seq)).toEqual([1])
      expect(await client.call('upstream.get', { id: up.id })).toMatchObject({
        status: 'Pending',
        seq: 1,
      })
      expect(await send(up.id, { type: 'upstream.approve' })).toMatchObject({
        seq: 2,
        to: 'Approved',
      })
      expect(await client.call('verify', { machine: 'upstream', id: up.id })).toEqual({
        ok: true,
        rows: 2,
      })
    })

    it('answers storage_unavailable, without crashing, when its database is gone', async () => {
      const other = await createTestDb(kind)
      const otherBus = createInProcessBus({ prefix: uniquePrefix('gone') })
      const otherStore = await startStore({ bus: otherBus, db: other.db, log: silentLogger() })
      try {
        await other.db.close()
        const c = createStoreClient({ bus: otherBus })
        await expect(c.call('upstream.list', {})).rejects.toMatchObject({
          code: 'storage_unavailable',
        })
        await expect(
          c.call('upstream.create', {
            host: 'mqtt://x',
            brokerPort: 1,
            httpPort: 1,
            actor: operator,
          })
        ).rejects.toMatchObject({ code: 'storage_unavailable' })
      } finally {
        await otherStore.close()
        await otherBus.close()
        await other.close()
      }
    })

    it('makes request.create idempotent per live instance ID', async () => {
      const input = {
        instanceId: 'UB_idem01',
        secretHash: sha256('downstream secret'),
        sourceIp: '10.0.0.7',
        actor: { kind: 'remote' as const, id: 'UB_idem01' },
      }
      const [a, b] = await Promise.all([
        client.call('request.create', input),
        client.call('request.create', input),
      ])
      expect(a.request.id).toBe(b.request.id)
      expect([a.created, b.created].sort()).toEqual([false, true])
      expect(a.request).toEqual({
        id: expect.stringMatching(/^rq_/),
        instanceId: 'UB_idem01',
        sourceIp: '10.0.0.7',
        status: 'Pending',
        grants: [],
        seq: 1,
        createdAt: expect.stringMatching(ISO),
        updatedAt: expect.stringMatching(ISO),
      })
      expect(await client.call('request.secretHash', { id: a.request.id })).toEqual({
        secretHash: input.secretHash,
      })
      await send(a.request.id, { type: 'request.decline' }, 'request')
      const again = await client.call('request.create', input)
      expect(again.created).toBe(true)
      expect(again.request.id).not.toBe(a.request.id)
      expect((await client.call('request.list', { status: 'Pending' })).map((r) => r.id)).toContain(
        again.request.id
      )
    })

    it('commits a batch of writes together, each version-checked: a stale one writes nothing, and a bad one fails alone', async () => {
      const commit = createGroupCommit({ db: t.db, commitOrderLockKey: COMMIT_ORDER_LOCK_KEY })
      const ups = [
        await newUpstream(),
        await newUpstream(),
        await newUpstream(),
        await newUpstream(),
      ]
      /** The sealed record that approving `id` would write, from the row as stored. */
      async function approval(id: string, note = 'ok') {
        const [row] = await t.db.execute<{ snapshot: any; seq: number; headHash: string }>(
          sql`select snapshot, seq, head_hash as "headHash" from upstreams where id = ${id}`
        )
        const event = { type: 'upstream.approve', note }
        const applied = applyEvent(
          MACHINES.upstream.machine,
          row!.snapshot,
          event,
          MACHINES.upstream.explain
        )
        if (!applied.ok) throw new Error(applied.reason)
        const fields = {
          machine: 'upstream' as const,
          machineId: id,
          seq: row!.seq + 1,
          event,
          actor: operator,
          from: applied.from,
          to: applied.to,
          snapshot: applied.snapshot,
          machineVersion: MACHINES.upstream.version,
          at: new Date().toISOString(),
        }
        const record = {
          ...fields,
          prevHash: row!.headHash,
          hash: transitionHash(row!.headHash, fields),
        }
        return { record, expectedSeq: row!.seq }
      }
      const [a, b, stale, bad] = await Promise.all([
        approval(ups[0]!.id),
        approval(ups[1]!.id),
        approval(ups[2]!.id),
        // A NUL character: jsonb refuses it (22P05), after the batch was built.
        approval(ups[3]!.id, 'nul \u0000 here'),
      ])
      // Submitted in one turn of the event loop: one batch.
      const results = await Promise.allSettled([
        commit.write('upstreams', a!.expectedSeq, a!.record),
        commit.write('upstreams', b!.expectedSeq, b!.record),
        commit.write('upstreams', stale!.expectedSeq - 1, stale!.record),
        commit.write('upstreams', bad!.expectedSeq, bad!.record),
      ])
      expect(results.map((r) => r.status)).toEqual([
        'fulfilled',
        'fulfilled',
        'fulfilled',
        'rejected',
      ])
      const [ga, gb, gs] = results.map((r) => (r.status === 'fulfilled' ? r.value : undefined))
      expect(typeof ga).toBe('number')
      expect(typeof gb).toBe('number')
      expect(gb).not.toBe(ga)
      expect(gs).toBeNull()
      for (const [up, status, rows] of [
        [ups[0]!, 'Approved', 2],
        [ups[1]!, 'Approved', 2],
        [ups[2]!, 'Pending', 1],
        [ups[3]!, 'Pending', 1],
      ] as const) {
        expect(await client.call('upstream.get', { id: up.id })).toMatchObject({
          status,
          seq: rows,
        })
        expect(await client.call('verify', { machine: 'upstream', id: up.id })).toEqual({
          ok: true,
          rows,
        })
      }
    })

    it('authenticates a bridge against the stored hash for Accepted requests only', async () => {
      const secret = 'the downstream secret'
      const { request } = await client.call('request.create', {
        instanceId: 'UB_auth01',
        secretHash: sha256(secret),
        sourceIp: '10.0.0.8',
        actor: { kind: 'remote' },
      })
      const auth = (s: string) =>
        client.call('request.authenticate', { instanceId: 'UB_auth01', secret: s })
      expect(await auth(secret)).toEqual({ ok: false })
      await send(request.id, { type: 'request.accept', grants: ['acme/plant1'] }, 'request')
      expect(await auth(secret)).toEqual({
        ok: true,
        requestId: request.id,
        grants: ['acme/plant1'],
      })
      expect(await auth(secret + '!')).toEqual({ ok: false })
      expect(
        await client.call('request.authenticate', { instanceId: 'UB_other1', secret })
      ).toEqual({ ok: false })
      await send(request.id, { type: 'request.revoke' }, 'request')
      expect(await auth(secret)).toEqual({ ok: false })
      expect(await client.call('replay', { machine: 'request', id: request.id })).toMatchObject({
        to: 3,
        snapshot: { value: 'Revoked', status: 'done' },
        matchesStored: true,
        verify: { ok: true, rows: 3 },
      })
      await expect(send(request.id, { type: 'request.withdraw' }, 'request')).rejects.toMatchObject(
        {
          code: 'invalid_transition',
        }
      )
    })
  })
}
