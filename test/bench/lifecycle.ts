/**
 * Lifecycle benchmark: transitions persisted per second through the bus (snapshot + hash-chained
 * log row per event, one transaction each), and the time to replay and verify one machine with
 * 100,000 transitions. Postgres runs with the NATS bus (the distributed setup) and again with
 * the in-process bus (to show the bus's share), PGlite with the in-process bus (the embedded
 * default).
 */
import { sql } from 'drizzle-orm'
import type { Db, DbKind } from '../../db/client.ts'
import { applyEvent, initial, MACHINES, type PersistedSnapshot } from '../../machines/index.ts'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { silentLogger } from '../../services/common/log.ts'
import {
  createStoreClient,
  startStore,
  type EventActor,
  type TransitionRecord,
} from '../../services/store/index.ts'
import { GENESIS_HASH, transitionHash } from '../../services/store/hash.ts'
import { createTestDb } from '../helpers/db.ts'
import { createTestNatsBus, uniquePrefix } from '../helpers/nats.ts'

const UPSTREAMS = 50 // machines written concurrently, one event in flight each
const EVENTS: Record<DbKind, number> = { postgres: 10_000, pglite: 4_000 }
const REPLAY_ROWS = 100_000
const INSERT_BATCH_ROWS = 1_000
const actor: EventActor = { kind: 'system', id: 'bench' }

interface Figures {
  transitionsPerSec: number
  replayVerify100kMs: number
  verifyOnly100kMs: number
  bus: Bus['kind']
  /** Anchor: bare one-row transactions on the same database, same concurrency, no bus/chain. */
  anchorTransactionsPerSec: number
  /** Anchor: reading the same 100k log rows with one plain SELECT. */
  anchorRead100kMs: number
}

/** What the database alone does: one INSERT per transaction, UPSTREAMS at a time. */
async function bareTransactions(db: Db, events: number): Promise<number> {
  await db.execute(
    sql`create table bench_anchor (id bigserial primary key, machine_id text, body jsonb)`
  )
  let next = 0
  const started = performance.now()
  await Promise.all(
    Array.from({ length: UPSTREAMS }, async (_, i) => {
      while (next++ < events) {
        await db.orm.transaction(async (tx) => {
          await db.execute(
            sql`insert into bench_anchor (machine_id, body) values (${`m${i}`}, ${'{"type":"x"}'}::jsonb)`,
            tx
          )
        })
      }
    })
  )
  const perSec = events / ((performance.now() - started) / 1_000)
  await db.execute(sql`drop table bench_anchor`)
  return perSec
}

async function throughput(bus: Bus, events: number): Promise<number> {
  const client = createStoreClient({ bus, timeoutMs: 30_000 })
  const ids: string[] = []
  for (let i = 0; i < UPSTREAMS; i++) {
    const up = await client.call('upstream.create', {
      host: 'mqtt://bench',
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
      event: { type: 'upstream.bindings.set', bindings: [{ source: `s/${i}`, target: `t/${i}` }] },
      actor,
    })
    ids.push(up.id)
  }
  let next = 0
  const started = performance.now()
  await Promise.all(
    ids.map(async (id) => {
      for (let on = true; next < events; on = !on) {
        next++
        const type = on ? 'upstream.activate' : 'upstream.deactivate'
        await client.call('event', { machine: 'upstream', id, event: { type }, actor })
      }
    })
  )
  return events / ((performance.now() - started) / 1_000)
}

/**
 * The 100k-row log is written by a bulk path, not event by event: rows are computed with the
 * store's own `applyEvent` and `transitionHash`, so they are exactly what the store would write,
 * then inserted 1,000 per statement. `verify` answering ok proves the chain is the same.
 */
export async function seedLongLog(db: Db, id: string): Promise<void> {
  const entry = MACHINES.upstream
  let snapshot: PersistedSnapshot = initial(entry.machine, { kind: 'uns' })
  let prevHash = GENESIS_HASH
  const at0 = Date.parse('2026-01-01T00:00:00.000Z')
  const events: Array<TransitionRecord['event']> = [
    { type: 'upstream.approve', grants: ['t'] },
    { type: 'upstream.bindings.set', bindings: [{ source: 's', target: 't/s' }] },
  ]
  let batch: TransitionRecord[] = []
  const flush = async () => {
    if (!batch.length) return
    const values = batch.map(
      (r) => sql`(${r.machine}, ${r.machineId}, ${r.seq}, ${JSON.stringify(r.event)}::jsonb,
        ${JSON.stringify(r.actor)}::jsonb, ${r.from}, ${r.to}, ${JSON.stringify(r.snapshot)}::jsonb,
        ${r.machineVersion}, ${r.at}::timestamptz, ${r.prevHash}, ${r.hash})`
    )
    await db.execute(
      sql`insert into transitions (machine, machine_id, seq, event, actor, from_state, to_state, snapshot,
            machine_version, at, prev_hash, hash) values ${sql.join(values, sql`, `)}`
    )
    batch = []
  }
  for (let seq = 1; seq <= REPLAY_ROWS; seq++) {
    let event: TransitionRecord['event']
    let from: string | null = null
    if (seq === 1) {
      event = {
        type: 'upstream.create',
        input: { kind: 'uns' },
        host: 'mqtt://bench',
        brokerPort: 1883,
        httpPort: 80,
      }
    } else {
      event = events[seq - 2] ?? {
        type: seq % 2 === 0 ? 'upstream.activate' : 'upstream.deactivate',
      }
      const applied = applyEvent(entry.machine, snapshot, event, entry.explain)
      if (!applied.ok) throw new Error(`bench log: seq ${seq} refused: ${applied.reason}`)
      from = applied.from
      snapshot = applied.snapshot
    }
    const fields = {
      machine: 'upstream' as const,
      machineId: id,
      seq,
      event,
      actor,
      from,
      to: snapshot.value,
      snapshot,
      machineVersion: entry.version,
      at: new Date(at0 + seq).toISOString(),
    }
    const hash = transitionHash(prevHash, fields)
    batch.push({ ...fields, prevHash, hash })
    prevHash = hash
    if (batch.length === INSERT_BATCH_ROWS) await flush()
  }
  await flush()
  await db.execute(
    sql`update upstreams set snapshot = ${JSON.stringify(snapshot)}::jsonb, state = ${snapshot.value},
          seq = ${REPLAY_ROWS} where id = ${id}`
  )
}

async function benchOne(kind: DbKind, busKind: Bus['kind']): Promise<Figures> {
  const t = await createTestDb(kind)
  const bus =
    busKind === 'nats'
      ? await createTestNatsBus({ prefix: uniquePrefix('bench') })
      : createInProcessBus({ prefix: 'bench' })
  const store = await startStore({ bus, db: t.db, log: silentLogger() })
  try {
    const anchorTransactionsPerSec = await bareTransactions(t.db, EVENTS[kind])
    const transitionsPerSec = await throughput(bus, EVENTS[kind])
    const client = createStoreClient({ bus, timeoutMs: 120_000 })
    const up = await client.call('upstream.create', {
      host: 'mqtt://bench',
      brokerPort: 1883,
      httpPort: 80,
      actor,
    })
    await t.db.execute(sql`delete from transitions where machine_id = ${up.id}`)
    await seedLongLog(t.db, up.id)
    let started = performance.now()
    await t.db.execute(sql`select * from transitions where machine_id = ${up.id} order by seq`)
    const anchorRead100kMs = performance.now() - started
    started = performance.now()
    const replay = await client.call('replay', { machine: 'upstream', id: up.id })
    const replayVerify100kMs = performance.now() - started
    if (!replay.verify.ok || !replay.matchesStored || replay.verify.rows !== REPLAY_ROWS) {
      throw new Error(`bench log did not verify: ${JSON.stringify(replay.verify)}`)
    }
    started = performance.now()
    await client.call('verify', { machine: 'upstream', id: up.id })
    const verifyOnly100kMs = performance.now() - started
    return {
      transitionsPerSec,
      replayVerify100kMs,
      verifyOnly100kMs,
      bus: bus.kind,
      anchorTransactionsPerSec,
      anchorRead100kMs,
    }
  } finally {
    await store.close()
    await bus.close()
    await t.close()
  }
}

export async function runLifecycleBench(): Promise<object> {
  const runs: Array<[DbKind, Figures]> = [
    ['postgres', await benchOne('postgres', 'nats')],
    // The same database behind the in-process bus: what the bus itself costs.
    ['postgres', await benchOne('postgres', 'in-process')],
    ['pglite', await benchOne('pglite', 'in-process')],
  ]
  const round = (n: number) => Math.round(n)
  const cell = (n: number, width: number) => String(round(n)).padStart(width)
  console.log(
    [
      'database   bus      transitions/s   anchor tx/s  ratio   replay+verify 100k (ms)   anchor read 100k (ms)   verify 100k (ms)',
      ...runs.map(
        ([kind, r]) =>
          `${kind.padEnd(10)} ${r.bus.padEnd(8)} ${cell(r.transitionsPerSec, 13)}   ` +
          `${cell(r.anchorTransactionsPerSec, 11)}  ${(r.transitionsPerSec / r.anchorTransactionsPerSec).toFixed(2).padStart(5)}   ` +
          `${cell(r.replayVerify100kMs, 23)}   ${cell(r.anchorRead100kMs, 21)}   ${cell(r.verifyOnly100kMs, 16)}`
      ),
      'anchor tx/s: one bare INSERT per transaction, same database and concurrency, no bus, machine or hash chain;',
      'anchor read: one plain SELECT of the same 100,000 log rows',
      `targets: ≥ 2,000 transitions/s on Postgres; replay+verify of 100,000 rows < 2,000 ms ` +
        `(${UPSTREAMS} upstreams in flight; bus client and store share this process)`,
    ].join('\n')
  )
  const [pgNats, pgMemory, pglite] = runs.map(([, r]) => r) as [Figures, Figures, Figures]
  const summary = {
    bench: 'lifecycle',
    postgres: {
      transitionsPerSec: round(pgNats.transitionsPerSec),
      replayVerify100kMs: round(pgNats.replayVerify100kMs),
      transitionsPerSecMemoryBus: round(pgMemory.transitionsPerSec),
      anchorTransactionsPerSec: round(pgNats.anchorTransactionsPerSec),
      ratioToAnchor: Number(
        (pgNats.transitionsPerSec / pgNats.anchorTransactionsPerSec).toFixed(2)
      ),
      anchorRead100kMs: round(pgNats.anchorRead100kMs),
    },
    pglite: {
      transitionsPerSec: round(pglite.transitionsPerSec),
      replayVerify100kMs: round(pglite.replayVerify100kMs),
      anchorTransactionsPerSec: round(pglite.anchorTransactionsPerSec),
      ratioToAnchor: Number(
        (pglite.transitionsPerSec / pglite.anchorTransactionsPerSec).toFixed(2)
      ),
      anchorRead100kMs: round(pglite.anchorRead100kMs),
    },
  }
  console.log(JSON.stringify(summary))
  return summary
}
