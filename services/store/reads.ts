import { asc, eq, sql } from 'drizzle-orm'
import type { Db } from '../../db/client.ts'
import { incomingRequests, upstreams } from '../../db/schema.ts'
import type { Binding, MachineKind, UpstreamKind } from '../../machines/index.ts'
import { NotFoundError } from '../common/errors.ts'
import type {
  IncomingRequest,
  Page,
  StoreInput,
  TransitionRecord,
  Upstream,
} from '../contracts/store.ts'
import { sameDigest, sha256Hex } from '../common/digest.ts'
import { selectTransitions } from './log-rows.ts'
import { COMMIT_ORDER_LOCK_KEY, MACHINE_TABLES } from './repo.ts'
import { keyringOf, unseal, unsealTls } from './sealed.ts'

export const DEFAULT_PAGE_LIMIT = 100
export const MAX_PAGE_LIMIT = 1_000

type UpstreamRow = typeof upstreams.$inferSelect
type RequestRow = typeof incomingRequests.$inferSelect

/** `db` finds the keyring that opens the TLS private key (sealed.ts). */
export function toUpstream(row: UpstreamRow, db: Db): Upstream {
  const context = row.snapshot.context as { bindings?: Binding[]; grants?: string[] }
  return {
    id: row.id,
    kind: row.kind as UpstreamKind,
    host: row.host,
    brokerPort: row.brokerPort,
    httpPort: row.httpPort,
    status: row.state,
    active: row.state === 'Active',
    bindings: context.bindings ?? [],
    grants: context.grants ?? [],
    remoteRequestId: row.remoteRequestId,
    lastError: row.lastError,
    withdrawalOwed: row.withdrawalOwed,
    username: row.username,
    tls: row.tls ? unsealTls(db, row.id, row.tls) : null,
    seq: row.seq,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  }
}

export function toRequest(row: RequestRow): IncomingRequest {
  const context = row.snapshot.context as { grants?: string[] }
  return {
    id: row.id,
    instanceId: row.instanceId,
    sourceIp: row.sourceIp,
    status: row.state,
    grants: context.grants ?? [],
    seq: row.seq,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  }
}

async function upstreamRow(db: Db, id: string): Promise<UpstreamRow> {
  const [row] = await db.orm.select().from(upstreams).where(eq(upstreams.id, id))
  if (!row) throw new NotFoundError('upstream', id)
  return row
}

async function requestRow(db: Db, id: string): Promise<RequestRow> {
  const [row] = await db.orm.select().from(incomingRequests).where(eq(incomingRequests.id, id))
  if (!row) throw new NotFoundError('request', id)
  return row
}

export const getUpstream = async (db: Db, id: string): Promise<Upstream> =>
  toUpstream(await upstreamRow(db, id), db)

export async function listUpstreams(db: Db, status?: string): Promise<Upstream[]> {
  const rows = await db.orm
    .select()
    .from(upstreams)
    .where(status ? eq(upstreams.state, status) : undefined)
    .orderBy(asc(upstreams.createdAt), asc(upstreams.id))
  return rows.map((row) => toUpstream(row, db))
}

/** Fields outside the lifecycle: not audited, no seq change. */
export async function patchUpstream(
  db: Db,
  id: string,
  patch: Omit<StoreInput<'upstream.patch'>, 'id'>
): Promise<Upstream> {
  const set: Partial<UpstreamRow> = {}
  if (patch.lastError !== undefined) set.lastError = patch.lastError
  if (patch.remoteRequestId !== undefined) set.remoteRequestId = patch.remoteRequestId
  if (patch.withdrawalOwed !== undefined) set.withdrawalOwed = patch.withdrawalOwed
  if (Object.keys(set).length === 0) return getUpstream(db, id)
  const [row] = await db.orm
    .update(upstreams)
    .set({ ...set, updatedAt: new Date() })
    .where(eq(upstreams.id, id))
    .returning()
  if (!row) throw new NotFoundError('upstream', id)
  return toUpstream(row, db)
}

export async function upstreamCredentials(db: Db, id: string) {
  const row = await upstreamRow(db, id)
  const password = row.secret && unseal(keyringOf(db), 'upstreams.secret', row.id, row.secret)
  return { username: row.username, password }
}

export const getRequest = async (db: Db, id: string): Promise<IncomingRequest> =>
  toRequest(await requestRow(db, id))

export async function listRequests(db: Db, status?: string): Promise<IncomingRequest[]> {
  const rows = await db.orm
    .select()
    .from(incomingRequests)
    .where(status ? eq(incomingRequests.state, status) : undefined)
    .orderBy(asc(incomingRequests.createdAt), asc(incomingRequests.id))
  return rows.map(toRequest)
}

export async function requestSecretHash(db: Db, id: string): Promise<{ secretHash: string }> {
  return { secretHash: (await requestRow(db, id)).secretHash }
}

// Compared against when no Accepted request exists, so "no such instance" costs the same time.
const DUMMY_HASH = sha256Hex('uns-bridge: no accepted request')

/** A bridge's MQTT login: username = instance ID, password = secret; Accepted requests only. */
export async function authenticate(
  db: Db,
  instanceId: string,
  secret: string
): Promise<{ ok: boolean; requestId?: string; grants?: string[] }> {
  const rows = await db.orm
    .select()
    .from(incomingRequests)
    .where(
      sql`${incomingRequests.instanceId} = ${instanceId} and ${incomingRequests.state} = 'Accepted'`
    )
  const presented = sha256Hex(secret)
  if (rows.length === 0) {
    sameDigest(presented, DUMMY_HASH)
    return { ok: false }
  }
  for (const row of rows) {
    if (sameDigest(presented, row.secretHash)) {
      return { ok: true, requestId: row.id, grants: toRequest(row).grants }
    }
  }
  return { ok: false }
}

export type LogRow = TransitionRecord & { globalSeq: number }

export const clampLimit = (limit?: number): number =>
  Math.max(
    1,
    Math.min(MAX_PAGE_LIMIT, Math.trunc(limit ?? DEFAULT_PAGE_LIMIT) || DEFAULT_PAGE_LIMIT)
  )

export async function machineExists(db: Db, machine: MachineKind, id: string): Promise<boolean> {
  const rows = await db.execute(
    sql`select 1 from ${sql.identifier(MACHINE_TABLES[machine])} where id = ${id}`
  )
  return rows.length > 0
}

export async function readLog(
  db: Db,
  machine: MachineKind,
  id: string,
  after = 0,
  limit?: number
): Promise<Page<LogRow>> {
  const n = clampLimit(limit)
  const items = await db.execute<LogRow>(
    sql`${selectTransitions} where machine = ${machine} and machine_id = ${id} and seq > ${after}
        order by seq limit ${n}`
  )
  if (items.length === 0 && !(await machineExists(db, machine, id)))
    throw new NotFoundError(machine, id)
  return { items, next: items.length === n ? items[items.length - 1]!.seq : null }
}

/**
 * All machines' rows in `global_seq` order, never skipping a row that commits later: read the
 * sequence's high-water mark, wait out every writer that may still hold a number at or below it
 * (they hold COMMIT_ORDER_LOCK_KEY shared until commit), then read only up to that mark. A
 * client resuming after the last id it saw therefore misses nothing.
 */
export async function readGlobalLog(db: Db, after = 0, limit?: number): Promise<Page<LogRow>> {
  const n = clampLimit(limit)
  const [mark] = await db.execute<{ horizon: number }>(
    sql`select (case when is_called then last_value else 0 end)::float8 as horizon
        from transitions_global_seq_seq`
  )
  const horizon = mark?.horizon ?? 0
  if (horizon <= after) return { items: [], next: null }
  await db.execute(sql`select pg_advisory_xact_lock(${COMMIT_ORDER_LOCK_KEY}::bigint)`)
  const items = await db.execute<LogRow>(
    sql`${selectTransitions} where global_seq > ${after} and global_seq <= ${horizon}
        order by global_seq limit ${n}`
  )
  const last = items[items.length - 1]
  return { items, next: items.length === n && last ? last.globalSeq : null }
}
