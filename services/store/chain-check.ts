import { sql } from 'drizzle-orm'
import type { Db } from '../../db/client.ts'
import type { MachineKind } from '../../machines/index.ts'
import type { BrokenRow, Page, StoreInput, StoreApi } from '../contracts/store.ts'
import { canonicalJson, chainedHash, GENESIS_HASH, transitionHash } from './hash.ts'
import type { LogRow } from './reads.ts'
import { COMMIT_ORDER_LOCK_KEY } from './repo.ts'

/**
 * Row-level chain checks: each row against its own hash and against the hash of the row before
 * it. Unlike `audit.ts` (one machine's whole log, replayed), these look at any set of rows by
 * themselves, so the periodic audit can take only new rows and a rotating slice of old ones,
 * and `/transitions` can flag the rows of the page it shows.
 */

interface CheckRow {
  globalSeq: number
  machine: MachineKind
  machineId: string
  seq: number
  event: string
  actor: string
  from: string | null
  to: string
  snapshot: string
  machineVersion: number
  atMs: number
  prevHash: string
  hash: string
  /** The hash of the row at seq - 1 of the same machine; null when there is none. */
  linkHash: string | null
}

const canon = (text: string) => canonicalJson(JSON.parse(text))

/** Why the row fails, or null when its hash and its link both hold. */
function rowProblem(
  r: Pick<CheckRow, 'seq' | 'prevHash' | 'hash' | 'linkHash'>,
  contentHash: string
): Pick<BrokenRow, 'problem' | 'message'> | null {
  if (contentHash !== r.hash)
    return { problem: 'changed', message: `seq ${r.seq} does not match its hash` }
  const expected = r.seq === 1 ? GENESIS_HASH : r.linkHash
  if (r.prevHash !== expected) {
    return {
      problem: 'unlinked',
      message:
        expected === null
          ? `seq ${r.seq - 1}, which seq ${r.seq} chains to, is missing`
          : `seq ${r.seq} does not chain to seq ${r.seq - 1} (one of them was changed, or a row inserted)`,
    }
  }
  return null
}

/** The sequence's committed horizon: writers holding lower numbers are waited out (see `readGlobalLog`). */
async function committedHorizon(db: Db): Promise<number> {
  const [mark] = await db.execute<{ horizon: number }>(
    sql`select (case when is_called then last_value else 0 end)::float8 as horizon
        from transitions_global_seq_seq`
  )
  await db.execute(sql`select pg_advisory_xact_lock(${COMMIT_ORDER_LOCK_KEY}::bigint)`)
  return mark?.horizon ?? 0
}

/** The `audit.check` verb: rows in (after, upTo] by global seq, and optionally every machine's head. */
export async function checkChain(
  db: Db,
  { after, limit, upTo, heads }: StoreInput<'audit.check'>
): Promise<StoreApi['audit.check']['out']> {
  const top = upTo ?? (await committedHorizon(db))
  const rows =
    top <= after
      ? []
      : await db.execute<CheckRow>(
          sql`select t.global_seq::float8 as "globalSeq", t.machine, t.machine_id as "machineId",
                t.seq, t.event::text as event, t.actor::text as actor, t.from_state as "from",
                t.to_state as "to", t.snapshot::text as snapshot,
                t.machine_version as "machineVersion",
                (extract(epoch from t.at) * 1000)::float8 as "atMs",
                t.prev_hash as "prevHash", t.hash, p.hash as "linkHash"
              from transitions t
              left join transitions p
                on p.machine = t.machine and p.machine_id = t.machine_id and p.seq = t.seq - 1
              where t.global_seq > ${after} and t.global_seq <= ${top}
              order by t.global_seq limit ${limit}`
        )
  const broken: BrokenRow[] = []
  for (const r of rows) {
    const hash = chainedHash(r.prevHash, {
      machine: r.machine,
      machineId: r.machineId,
      seq: r.seq,
      event: canon(r.event),
      actor: canon(r.actor),
      from: r.from,
      to: r.to,
      snapshot: canon(r.snapshot),
      machineVersion: r.machineVersion,
      at: new Date(r.atMs).toISOString(),
    })
    const problem = rowProblem(r, hash)
    if (problem) broken.push({ ...pick(r), ...problem })
  }
  if (heads) broken.push(...(await checkHeads(db)))
  return {
    checked: rows.length,
    // A short page means the range is done: resume after its top, not after its last row.
    last: rows.length === limit ? rows[rows.length - 1]!.globalSeq : top > after ? top : null,
    broken,
  }
}

const pick = (r: CheckRow) => ({
  globalSeq: r.globalSeq,
  machine: r.machine,
  machineId: r.machineId,
  seq: r.seq,
})

/**
 * Every machine's head hash (written with its snapshot) against its log: a deleted last row, or
 * rows appended past the machine's seq, break nothing row by row but show here.
 */
async function checkHeads(db: Db): Promise<BrokenRow[]> {
  const broken: BrokenRow[] = []
  for (const [machine, table] of [
    ['upstream', 'upstreams'],
    ['request', 'incoming_requests'],
  ] as const) {
    const rows = await db.execute<{ id: string; seq: number; globalSeq: number | null }>(
      sql`select m.id, m.seq, t.global_seq::float8 as "globalSeq"
          from ${sql.identifier(table)} m
          left join transitions t on t.machine = ${machine} and t.machine_id = m.id and t.seq = m.seq
          where m.head_hash is not null and (t.hash is distinct from m.head_hash
            or exists (select 1 from transitions x
                       where x.machine = ${machine} and x.machine_id = m.id and x.seq > m.seq))
          limit 100`
    )
    for (const r of rows) {
      broken.push({
        globalSeq: r.globalSeq ?? 0,
        machine,
        machineId: r.id,
        seq: r.seq,
        problem: 'head_mismatch',
        message: `the log of ${machine} ${r.id} does not end at its head (seq ${r.seq})`,
      })
    }
  }
  return broken
}

/** A page of one machine's log with each row's own check: `verified`, and `problem` when not. */
export async function flagRows(
  db: Db,
  page: Page<LogRow>
): Promise<Page<LogRow & { verified: boolean; problem?: string }>> {
  const first = page.items[0]
  let link: string | null = null
  if (first && first.seq > 1) {
    const [row] = await db.execute<{ hash: string }>(
      sql`select hash from transitions where machine = ${first.machine}
          and machine_id = ${first.machineId} and seq = ${first.seq - 1}`
    )
    link = row?.hash ?? null
  }
  const items = page.items.map((r) => {
    const { hash, prevHash, globalSeq: _g, ...fields } = r
    const problem = rowProblem(
      { seq: r.seq, prevHash, hash, linkHash: link },
      transitionHash(prevHash, fields)
    )
    link = hash
    return problem ? { ...r, verified: false, problem: problem.message } : { ...r, verified: true }
  })
  return { items, next: page.next }
}
