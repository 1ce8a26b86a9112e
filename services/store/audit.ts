import { sql } from 'drizzle-orm'
import type { Db } from '../../db/client.ts'
import {
  applyEvent,
  initial,
  MACHINES,
  type MachineEntry,
  type MachineKind,
  type PersistedSnapshot,
} from '../../machines/index.ts'
import { NotFoundError } from '../common/errors.ts'
import type { ReplayResult, VerifyResult } from '../contracts/store.ts'
import { canonicalJson, chainedHash, GENESIS_HASH, type CanonicalParts } from './hash.ts'
import { MACHINE_TABLES } from './repo.ts'

/** Rows per round trip: 100,000 rows are 20 queries, and memory stays flat. */
export const AUDIT_PAGE_ROWS = 5_000

/**
 * A log row as read: the hashed columns, the JSON ones still as jsonb text, which Postgres prints
 * the same way for the same value. A long log repeats a handful of events and snapshots, so each
 * distinct text is parsed and canonicalized once (measured: parsing and re-serializing every row
 * was most of the time).
 */
interface AuditRow extends Omit<CanonicalParts, 'machine' | 'machineId' | 'at'> {
  /** Epoch milliseconds: cheaper for the database than to_char (PGlite spends 15% of a read on it). */
  atMs: number
  prevHash: string
  hash: string
}

const CACHE_LIMIT = 10_000 // distinct JSON texts kept per audit; beyond it the cache is cleared

function canonicalCache() {
  const cache = new Map<string, string>()
  return (text: string): string => {
    let canonical = cache.get(text)
    if (canonical === undefined) {
      if (cache.size >= CACHE_LIMIT) cache.clear()
      canonical = canonicalJson(JSON.parse(text))
      cache.set(text, canonical)
    }
    return canonical
  }
}

const REFUSED = '\u0000refused'

/**
 * Replay as a memoized fold: the machine is pure, so (state, event) → next state is a function
 * and is computed once per distinct pair with the same `applyEvent` the store uses. That
 * replaces 100,000 XState restores with a few dozen for a typical log.
 */
function replayer(entry: MachineEntry) {
  const memo = new Map<string, string>()
  return {
    initial: (event: string): string =>
      canonicalJson(initial(entry.machine, (JSON.parse(event) as { input?: unknown }).input)),
    step(state: string, event: string): string {
      const key = state + '\u0001' + event
      let next = memo.get(key)
      if (next === undefined) {
        if (memo.size >= CACHE_LIMIT) memo.clear()
        const result = applyEvent(
          entry.machine,
          JSON.parse(state) as PersistedSnapshot,
          JSON.parse(event) as { type: string },
          entry.explain
        )
        next = result.ok ? canonicalJson(result.snapshot) : REFUSED
        memo.set(key, next)
      }
      return next
    },
  }
}

function bad(
  rows: number,
  firstBadSeq: number,
  problem: NonNullable<VerifyResult['problem']>,
  message: string
): VerifyResult {
  return { ok: false, rows, firstBadSeq, problem, message }
}

interface Audit {
  verify: VerifyResult
  /** The replayed state after the last row at or before `to` (canonical JSON), and its seq. */
  stateAt: string | null
  seqAt: number
  matchesStored: boolean
}

/** Where one pass over a machine's log has got to. */
interface Walk {
  machine: MachineKind
  id: string
  /** The machine's row: its seq and snapshot are what the log must end at. */
  head: { seq: number; snapshot: string }
  to: number
  canonical: (text: string) => string
  replay: ReturnType<typeof replayer>
  /** The first problem found; the rest of the pass only replays. */
  verify: VerifyResult | null
  rows: number
  expectedSeq: number
  prevHash: string
  prevPrevHash: string | null
  state: string | null
  stateAt: string | null
  seqAt: number
}

const flag = (w: Walk, v: VerifyResult) => (w.verify ??= v)

/** One pass over a machine's log: walk the hash chain (verify) and fold the events (replay). */
async function audit(db: Db, machine: MachineKind, id: string, to: number): Promise<Audit> {
  const [head] = await db.execute<{ seq: number; snapshot: string }>(
    sql`select seq, snapshot::text as snapshot from ${sql.identifier(MACHINE_TABLES[machine])}
        where id = ${id}`
  )
  if (!head) throw new NotFoundError(machine, id)
  const w: Walk = {
    machine,
    id,
    head,
    to,
    canonical: canonicalCache(),
    replay: replayer(MACHINES[machine]),
    verify: null,
    rows: 0,
    expectedSeq: 1,
    prevHash: GENESIS_HASH,
    prevPrevHash: null,
    state: null,
    stateAt: null,
    seqAt: 0,
  }
  const fetchPage = (after: number) =>
    db.execute<AuditRow>(
      sql`select seq, event::text as event, actor::text as actor, from_state as "from",
            to_state as "to", snapshot::text as snapshot, machine_version as "machineVersion",
            (extract(epoch from at) * 1000)::float8 as "atMs",
            prev_hash as "prevHash", hash
          from transitions where machine = ${machine} and machine_id = ${id} and seq > ${after}
          order by seq limit ${AUDIT_PAGE_ROWS}`
    )
  // The next page is requested before this one is checked, so Postgres reads while we hash.
  for (let pending: Promise<AuditRow[]> | null = fetchPage(0); pending;) {
    const page: AuditRow[] = await pending
    pending = page.length === AUDIT_PAGE_ROWS ? fetchPage(page[page.length - 1]!.seq) : null
    for (const row of page) {
      w.rows++
      const event = w.canonical(row.event)
      const snapshot = w.canonical(row.snapshot)
      checkChain(w, row, event, snapshot)
      replayRow(w, row, event, snapshot)
    }
  }
  return finish(w)
}

/** Chain: position, then the link to the previous row, then the row's own content. */
function checkChain(w: Walk, row: AuditRow, event: string, snapshot: string): void {
  const { rows, head } = w
  if (row.seq > head.seq) {
    flag(
      w,
      bad(rows, row.seq, 'inserted', `seq ${row.seq} is past the machine's version ${head.seq}`)
    )
  } else if (row.seq !== w.expectedSeq) {
    flag(
      w,
      bad(rows, w.expectedSeq, 'deleted', `seq ${w.expectedSeq} is missing (next is ${row.seq})`)
    )
  } else if (row.prevHash !== w.prevHash) {
    flag(
      w,
      row.prevHash === w.prevPrevHash
        ? bad(
            rows,
            row.seq - 1,
            'inserted',
            `seq ${row.seq - 1} is not the row seq ${row.seq} chains to`
          )
        : bad(
            rows,
            row.seq - 1,
            'changed',
            `seq ${row.seq} chains to a different seq ${row.seq - 1}`
          )
    )
  } else {
    const hash = chainedHash(row.prevHash, {
      machine: w.machine,
      machineId: w.id,
      seq: row.seq,
      event,
      actor: w.canonical(row.actor),
      from: row.from,
      to: row.to,
      snapshot,
      machineVersion: row.machineVersion,
      at: new Date(row.atMs).toISOString(),
    })
    if (hash !== row.hash) {
      flag(w, bad(rows, row.seq, 'changed', `seq ${row.seq} does not match its hash`))
    }
  }
  w.prevPrevHash = w.prevHash
  w.prevHash = row.hash
  w.expectedSeq = row.seq + 1
}

/** Replay: the first row creates the machine from the input its event recorded. */
function replayRow(w: Walk, row: AuditRow, event: string, snapshot: string): void {
  const { state, rows } = w
  let next: string
  if (state === null) {
    const creates =
      row.from === null && (JSON.parse(event) as { type: string }).type.endsWith('.create')
    next = creates ? w.replay.initial(event) : REFUSED
  } else {
    next = w.replay.step(state, event)
  }
  if (next === REFUSED) {
    flag(
      w,
      bad(
        rows,
        row.seq,
        'snapshot_mismatch',
        `the machine refuses the event logged at seq ${row.seq}`
      )
    )
    next = state ?? snapshot
  } else if (next !== snapshot) {
    flag(
      w,
      bad(
        rows,
        row.seq,
        'snapshot_mismatch',
        `replay differs from the snapshot logged at seq ${row.seq}`
      )
    )
  }
  w.state = next
  if (row.seq <= w.to) {
    w.stateAt = next
    w.seqAt = row.seq
  }
}

/** After the last row: the log must reach the machine's seq and replay to its stored snapshot. */
function finish(w: Walk): Audit {
  const { rows, expectedSeq, head, state } = w
  if (rows === 0 || expectedSeq - 1 < head.seq) {
    flag(
      w,
      bad(
        rows,
        expectedSeq,
        'deleted',
        `the log ends at seq ${expectedSeq - 1}, the machine is at ${head.seq}`
      )
    )
  }
  const matchesStored = state !== null && state === canonicalJson(JSON.parse(head.snapshot))
  if (!matchesStored) {
    flag(
      w,
      bad(
        rows,
        head.seq,
        'snapshot_mismatch',
        'replaying the log does not give the stored snapshot'
      )
    )
  }
  return {
    verify: w.verify ?? { ok: true, rows },
    stateAt: w.stateAt,
    seqAt: w.seqAt,
    matchesStored,
  }
}

/** The machine's state rebuilt from its log up to seq `to` (default: all of it), and the chain's verdict. */
export async function replayMachine(
  db: Db,
  machine: MachineKind,
  id: string,
  to = Number.MAX_SAFE_INTEGER
): Promise<ReplayResult> {
  const result = await audit(db, machine, id, to)
  return {
    machine,
    machineId: id,
    to: result.seqAt,
    snapshot: result.stateAt
      ? (JSON.parse(result.stateAt) as PersistedSnapshot)
      : { value: 'unknown', context: {}, status: 'active' },
    matchesStored: result.matchesStored,
    verify: result.verify,
  }
}

export async function verifyMachine(
  db: Db,
  machine: MachineKind,
  id: string
): Promise<VerifyResult> {
  return (await audit(db, machine, id, 0)).verify
}
