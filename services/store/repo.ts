import { sql } from 'drizzle-orm'
import type { Db, Executor } from '../../db/client.ts'
import {
  applyEvent,
  initial,
  MACHINES,
  type MachineKind,
  type PersistedSnapshot,
} from '../../machines/index.ts'
import { InvalidTransitionError, NotFoundError, VersionConflictError } from '../common/errors.ts'
import type { EventActor, StoreInput, TransitionRecord } from '../contracts/store.ts'
import { withRetry } from './db-errors.ts'
import { earlierAttempt } from './log-rows.ts'
import { versionCheckedWrites, type GroupCommit } from './group-commit.ts'
import { GENESIS_HASH, transitionHash } from './hash.ts'
import { newRequestId, newUpstreamId } from './ids.ts'
import { sealIfKeyed, sealTls } from './sealed.ts'
import { checkPendingLimits } from './pending.ts'

/** Machine kind → the table holding its rows and snapshots. */
export const MACHINE_TABLES: Record<MachineKind, string> = {
  upstream: 'upstreams',
  request: 'incoming_requests',
}

/**
 * `global_seq` comes from a sequence at insert time, so rows can commit out of number order.
 * Every writer holds this advisory lock *shared* from before it takes a number until it
 * commits; a reader of the global log takes it exclusively for an instant, which waits out
 * every writer that might still hold a lower number (see `readGlobalLog`). Writers never wait
 * for each other: an exclusive lock held through commit halved throughput (measured).
 */
export const COMMIT_ORDER_LOCK_KEY = 0x75_6e_62_63 // 'unbc'

export interface StoreHooks {
  /** Test seam: runs inside the event's transaction after the log row and snapshot are written, before commit. */
  afterLogInsert?: (record: TransitionRecord) => void | Promise<void>
}

export interface RepoContext {
  db: Db
  hooks?: StoreHooks
  now?: () => Date
  /** One per store process; see `enqueue`. */
  queues?: MachineQueues
  /** One per store process; see `MachineHeads`. */
  heads?: MachineHeads
  /** Batches the optimistic writes of concurrent events into one statement; see `GroupCommit`. */
  groupCommit?: GroupCommit
}

const json = (value: unknown) => JSON.stringify(value)

export function seal(
  fields: Omit<TransitionRecord, 'hash' | 'prevHash'>,
  prevHash: string
): TransitionRecord {
  return { ...fields, prevHash, hash: transitionHash(prevHash, fields) }
}

const insertColumns = sql.raw(`insert into transitions (machine, machine_id, seq, event, actor,
  from_state, to_state, snapshot, machine_version, at, prev_hash, hash, request_key)`)

/** The log row as a SELECT list; INSERT … SELECT leaves parameter types unresolved, hence the casts. */
function rowValues(r: TransitionRecord, requestKey?: string) {
  return sql`select ${r.machine}::text, ${r.machineId}::text, ${r.seq}::int, ${json(r.event)}::jsonb,
    ${json(r.actor)}::jsonb, ${r.from}::text, ${r.to}::text, ${json(r.snapshot)}::jsonb,
    ${r.machineVersion}::int, ${r.at}::timestamptz, ${r.prevHash}::text, ${r.hash}::text,
    ${requestKey ?? null}::text`
}

const commitOrder = sql`(select pg_advisory_xact_lock_shared(${COMMIT_ORDER_LOCK_KEY}::bigint)) as commit_order`

/** Append the first log row of a new machine; returns it with its global position. */
async function appendTransition(
  db: Db,
  tx: Executor,
  r: TransitionRecord,
  requestKey?: string
): Promise<TransitionRecord> {
  const [row] = await db.execute<{ globalSeq: number }>(
    sql`${insertColumns} ${rowValues(r, requestKey)} from ${commitOrder} returning global_seq::float8 as "globalSeq"`,
    tx
  )
  return { ...r, globalSeq: row!.globalSeq }
}

export async function lastLogHash(
  db: Db,
  tx: Executor,
  machine: MachineKind,
  id: string
): Promise<string | null> {
  const [row] = await db.execute<{ hash: string }>(
    sql`select hash from transitions where machine = ${machine} and machine_id = ${id}
        order by seq desc limit 1`,
    tx
  )
  return row?.hash ?? null
}

interface Current {
  snapshot: PersistedSnapshot
  seq: number
  headHash: string | null
}

/**
 * Per-machine FIFO inside one store process: events for one machine queue here instead of
 * racing each other to the database, so only another replica can make the optimistic write lose.
 */
export type MachineQueues = Map<string, Promise<unknown>>

/**
 * What this process last wrote for each machine (snapshot, seq, chain head), so the next event
 * skips the read: the write's `WHERE seq = $expected` still catches a row another replica moved,
 * and that retry reads afresh. Sound because the store is the only writer of these rows.
 */
export type MachineHeads = Map<string, Current>
const MAX_CACHED_HEADS = 10_000 // machines; the least recently written are forgotten first

function remember(heads: MachineHeads, key: string, head: Current): void {
  heads.delete(key)
  heads.set(key, head)
  if (heads.size > MAX_CACHED_HEADS) heads.delete(heads.keys().next().value!)
}

export function enqueue<T>(queues: MachineQueues, key: string, run: () => Promise<T>): Promise<T> {
  const previous = queues.get(key) ?? Promise.resolve()
  const result = previous.then(run, run)
  const tail = result.then(
    () => undefined,
    () => undefined
  )
  queues.set(key, tail)
  void tail.then(() => {
    if (queues.get(key) === tail) queues.delete(key)
  })
  return result
}

/**
 * Apply one event: the snapshot and the log row are written together or not at all.
 *
 * First attempt, optimistic: read the row (or take what this process last wrote), apply the
 * event, then one statement updates the snapshot `WHERE seq = $expected` and appends the log
 * row only if that update matched (an implicit transaction: 1–2 round trips). A lost race
 * (another replica) retries pessimistically: BEGIN, `SELECT … FOR UPDATE`, the same statement,
 * COMMIT, which cannot lose. Measured: the optimistic path about doubles throughput.
 */
export function applyMachineEvent(
  ctx: RepoContext,
  input: StoreInput<'event'>
): Promise<TransitionRecord> {
  const {
    db,
    hooks = {},
    now = () => new Date(),
    queues = new Map(),
    heads = new Map(),
    groupCommit,
  } = ctx
  const entry = MACHINES[input.machine]
  const tableName = MACHINE_TABLES[input.machine]
  const table = sql.identifier(tableName)

  const key = `${input.machine}:${input.id}`

  /** The version-checked update and the log row in one statement; null when the race was lost. */
  async function writeOne(
    tx: Executor,
    expectedSeq: number,
    record: TransitionRecord
  ): Promise<number | null> {
    const write = { expectedSeq, record, requestKey: input.requestKey }
    const [logged] = await db.execute<{ globalSeq: number }>(
      versionCheckedWrites(tableName, COMMIT_ORDER_LOCK_KEY, [write]),
      tx
    )
    return logged?.globalSeq ?? null
  }

  async function attempt(tx: Executor, lock: boolean, n: number): Promise<TransitionRecord> {
    // A retry of the caller's, or ours after a race (a racing retry of the same key is one):
    // what an earlier attempt wrote is the answer.
    if (input.requestKey && (input.retry || n > 1)) {
      const done = await earlierAttempt(db, tx, input.requestKey, input.machine, input.id)
      if (done) return done
    }
    let current = lock ? undefined : heads.get(key)
    const cached = current !== undefined
    heads.delete(key) // whatever happens next, only a successful write puts it back
    if (!current) {
      ;[current] = await db.execute<Current>(
        lock
          ? sql`select snapshot, seq, head_hash as "headHash" from ${table} where id = ${input.id} for update`
          : sql`select snapshot, seq, head_hash as "headHash" from ${table} where id = ${input.id}`,
        tx
      )
      if (!current) throw new NotFoundError(input.machine, input.id)
      // Rows from before migration 0001 have no head; a new statement reads the log's last hash.
      current.headHash ??= await lastLogHash(db, tx, input.machine, input.id)
    }
    const result = applyEvent(entry.machine, current.snapshot, input.event, entry.explain)
    // Another replica may have moved the machine since we cached it: refuse only on fresh data.
    if (!result.ok && cached) return attempt(tx, lock, n)
    if (!result.ok) {
      throw new InvalidTransitionError(result.reason, {
        machine: input.machine,
        id: input.id,
        state: current.snapshot.value,
        event: input.event.type,
      })
    }
    const at = now().toISOString()
    const sealed = seal(
      {
        machine: input.machine,
        machineId: input.id,
        seq: current.seq + 1,
        event: input.event,
        actor: input.actor,
        from: result.from,
        to: result.to,
        snapshot: result.snapshot,
        machineVersion: entry.version,
        at,
      },
      current.headHash ?? GENESIS_HASH
    )
    const globalSeq =
      !lock && groupCommit
        ? await groupCommit.write(tableName, current.seq, sealed, input.requestKey)
        : await writeOne(tx, current.seq, sealed)
    if (globalSeq === null) {
      throw new VersionConflictError(`${input.machine} '${input.id}' moved past seq ${current.seq}`)
    }
    const record = { ...sealed, globalSeq }
    await hooks.afterLogInsert?.(record)
    remember(heads, key, { snapshot: result.snapshot, seq: sealed.seq, headHash: sealed.hash })
    return record
  }

  // The test hook needs a transaction around the write to fail inside of, so it forces the locked path.
  const optimistic = !hooks.afterLogInsert
  return enqueue(queues, key, () =>
    withRetry((n) =>
      n === 1 && optimistic
        ? attempt(db.orm, false, n)
        : db.orm.transaction((tx) => attempt(tx, true, n))
    )
  )
}

function firstRecord(
  machine: MachineKind,
  machineId: string,
  event: TransitionRecord['event'],
  actor: EventActor,
  snapshot: PersistedSnapshot,
  at: string
): TransitionRecord {
  return seal(
    {
      machine,
      machineId,
      seq: 1,
      event,
      actor,
      from: null,
      to: snapshot.value,
      snapshot,
      machineVersion: MACHINES[machine].version,
      at,
    },
    GENESIS_HASH
  )
}

/** A new upstream; its creation is the first row of its log (null → initial state). */
export function createUpstream(
  ctx: RepoContext,
  input: StoreInput<'upstream.create'>
): Promise<TransitionRecord> {
  const { db, now = () => new Date() } = ctx
  const kind = input.kind ?? 'uns'
  return withRetry((n) =>
    db.orm.transaction(async (tx) => {
      if (input.requestKey && (input.retry || n > 1)) {
        const done = await earlierAttempt(db, tx, input.requestKey, 'upstream')
        if (done) return done
      }
      const id = newUpstreamId()
      const at = now().toISOString()
      const snapshot = initial(MACHINES.upstream.machine, { kind })
      // The event carries what replay needs (the machine input) and what an auditor wants to
      // see; never the secret.
      const event = {
        type: 'upstream.create',
        input: { kind },
        host: input.host,
        brokerPort: input.brokerPort,
        httpPort: input.httpPort,
      }
      const record = firstRecord('upstream', id, event, input.actor, snapshot, at)
      await db.execute(
        sql`insert into upstreams (id, kind, host, broker_port, http_port, secret, username, tls,
              snapshot, state, seq, head_hash, created_at, updated_at)
            values (${id}, ${kind}, ${input.host}, ${input.brokerPort}, ${input.httpPort},
              ${sealIfKeyed(db, 'upstreams.secret', id, input.secret)}, ${input.username ?? null},
              ${input.tls ? json(sealTls(db, id, input.tls)) : null}::jsonb, ${json(snapshot)}::jsonb,
              ${snapshot.value}, 1, ${record.hash}, ${at}::timestamptz, ${at}::timestamptz)`,
        tx
      )
      return appendTransition(db, tx, record, input.requestKey)
    })
  )
}

/**
 * A new incoming request, or the live one this instance already has under the same secret
 * (idempotent per instanceId and secretHash: the partial unique index turns a racing second
 * insert into a retry that finds it). Another secret gets a request of its own, within
 * `limits` (README.md, Limits); over one, a `PendingLimitError` says which, and nothing else.
 */
export function createRequest(
  ctx: RepoContext,
  input: StoreInput<'request.create'>
): Promise<{ id: string; record: TransitionRecord | null }> {
  const { db, now = () => new Date() } = ctx
  return withRetry(() =>
    db.orm.transaction(async (tx) => {
      const [live] = await db.execute<{ id: string }>(
        sql`select id from incoming_requests
            where instance_id = ${input.instanceId} and secret_hash = ${input.secretHash}
              and state in ('Pending', 'Accepted')`,
        tx
      )
      if (live) return { id: live.id, record: null }
      if (input.limits) await checkPendingLimits(db, tx, input)
      const id = newRequestId()
      const at = now().toISOString()
      const snapshot = initial(MACHINES.request.machine, { instanceId: input.instanceId })
      const event = {
        type: 'request.create',
        input: { instanceId: input.instanceId },
        sourceIp: input.sourceIp,
      }
      const first = firstRecord('request', id, event, input.actor, snapshot, at)
      await db.execute(
        sql`insert into incoming_requests (id, instance_id, source_ip, source_network, secret_hash,
              snapshot, state, seq, head_hash, created_at, updated_at)
            values (${id}, ${input.instanceId}, ${input.sourceIp}, ${input.sourceNetwork ?? null},
              ${input.secretHash}, ${json(snapshot)}::jsonb, ${snapshot.value}, 1, ${first.hash},
              ${at}::timestamptz, ${at}::timestamptz)`,
        tx
      )
      const record = await appendTransition(db, tx, first)
      return { id, record }
    })
  )
}
