import { tmpdir } from 'node:os'
import { sql } from 'drizzle-orm'
import { afterEach, describe, expect, it } from 'vitest'
import { createDb } from '../../db/client.ts'
import type { Bus } from '../../services/common/bus/bus.ts'
import { silentLogger } from '../../services/common/log.ts'
import {
  createStoreClient,
  startStore,
  type EventActor,
  type TransitionRecord,
} from '../../services/store/index.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { createTestNatsBus, uniquePrefix } from '../helpers/nats.ts'

const actor: EventActor = { kind: 'operator', id: 'retry-test' }
const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/**
 * A store replica that dies with a write in hand: the client tries the other replica, with the
 * same request key. If the first one had committed, the second answers with that log row rather
 * than applying the event again (which made a second row, or a 409 for an event that succeeded);
 * if it had not, the second applies it. Real Postgres, real NATS, two replicas.
 */
describe('a store write whose replica dies before it answers', () => {
  async function twoReplicas(onLogged: (record: TransitionRecord, busA: Bus) => Promise<void>) {
    const t: TestDb = await createTestDb('postgres')
    cleanups.push(() => t.close())
    const db2 = createDb({ databaseUrl: t.databaseUrl!, dataDir: tmpdir() })
    cleanups.push(() => db2.close())
    const prefix = uniquePrefix('retry')
    const [busA, busB, busC] = await Promise.all([1, 2, 3].map(() => createTestNatsBus({ prefix })))
    cleanups.push(
      () => busA!.close(),
      () => busB!.close(),
      () => busC!.close()
    )
    const client = createStoreClient({ bus: busC!, timeoutMs: 1_500 })
    // Set up on B alone, then A joins: A's hook fires only for the write under test.
    const storeB = await startStore({ bus: busB!, db: db2, log: silentLogger() })
    cleanups.push(() => storeB.close())
    const up = await client.call('upstream.create', {
      host: 'mqtt://r',
      brokerPort: 1883,
      httpPort: 80,
      actor,
    })
    await client.call('event', {
      machine: 'upstream',
      id: up.id,
      event: { type: 'upstream.approve' },
      actor,
    })
    await client.call('event', {
      machine: 'upstream',
      id: up.id,
      event: { type: 'upstream.bindings.set', bindings: [{ source: 'a', target: 'b' }] },
      actor,
    })
    let armed = true
    // B comes back while A holds the write: A is the only replica the first attempt can reach.
    const restartB = async () => {
      const storeB2 = await startStore({ bus: busB!, db: db2, log: silentLogger() })
      cleanups.push(() => storeB2.close())
    }
    const storeA = await startStore({
      bus: busA!,
      db: t.db,
      log: silentLogger(),
      hooks: {
        afterLogInsert: async (record) => {
          if (!armed || record.event.type !== 'upstream.activate') return
          armed = false
          await restartB()
          await onLogged(record, busA!)
        },
      },
    })
    cleanups.push(() => storeA.close().catch(() => {}))
    await storeB.close() // the write goes to A
    const rows = async () =>
      (
        await t.db.execute<{ event: string }>(
          sql`select event->>'type' as event from transitions where machine_id = ${up.id} order by seq`
        )
      ).map((r) => r.event)
    return { client, up, rows, aFired: () => !armed }
  }

  const activate = (client: ReturnType<typeof createStoreClient>, id: string) =>
    client.call('event', { machine: 'upstream', id, event: { type: 'upstream.activate' }, actor })

  it('gets the row the dead replica committed, once, from the other replica', async () => {
    // A commits, then its bus is gone before it can answer (a SIGKILL after COMMIT).
    const { client, up, rows, aFired } = await twoReplicas(async (_record, busA) => {
      await busA.close()
    })
    const result = await activate(client, up.id)
    expect(aFired(), 'the write reached replica A').toBe(true)
    expect(result.to).toBe('Active')
    expect(await rows()).toEqual([
      'upstream.create',
      'upstream.approve',
      'upstream.bindings.set',
      'upstream.activate',
    ])
  }, 30_000)

  it('applies the write on the other replica when the dead one had not committed', async () => {
    // A's bus is gone and its transaction fails: nothing committed (a SIGKILL before COMMIT).
    const { client, up, rows, aFired } = await twoReplicas(async (_record, busA) => {
      await busA.close()
      throw new Error('replica A dies before COMMIT')
    })
    const result = await activate(client, up.id)
    expect(aFired()).toBe(true)
    expect(result.to).toBe('Active')
    expect(await rows()).toEqual([
      'upstream.create',
      'upstream.approve',
      'upstream.bindings.set',
      'upstream.activate',
    ])
  }, 30_000)

  it('refuses a request key reused for another machine, and answers a retry of upstream.create with the same upstream', async () => {
    const { client, up } = await twoReplicas(async () => {})
    await activate(client, up.id) // A answers this one itself
    const requestKey = 'key-' + 'x'.repeat(20)
    const input = { host: 'mqtt://k', brokerPort: 1883, httpPort: 80, actor, requestKey }
    const first = await client.call('upstream.create', input)
    const again = await client.call('upstream.create', { ...input, retry: true })
    expect(again.id).toBe(first.id)
    const reused = await client
      .call('event', {
        machine: 'upstream',
        id: up.id,
        event: { type: 'upstream.deactivate' },
        actor,
        requestKey,
        retry: true,
      })
      .catch((e: unknown) => e)
    expect(reused).toMatchObject({ code: 'invalid_request' })
  }, 30_000)
})
