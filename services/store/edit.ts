import { sql } from 'drizzle-orm'
import type { Db, Executor } from '../../db/client.ts'
import {
  applyEvent,
  MACHINES,
  serverChanged,
  type ConnectionChanges,
  type PersistedSnapshot,
  type UpstreamConnection,
} from '../../machines/index.ts'
import { sha256Hex } from '../common/digest.ts'
import { InvalidTransitionError, NotFoundError, VersionConflictError } from '../common/errors.ts'
import { patchTls } from '../contracts/upstream-edit.ts'
import type { StoreApi, StoreInput, TlsOptions, TransitionRecord } from '../contracts/store.ts'
import { withRetry } from './db-errors.ts'
import { versionCheckedWrites } from './group-commit.ts'
import { GENESIS_HASH } from './hash.ts'
import { earlierAttempt } from './log-rows.ts'
import { getUpstream } from './reads.ts'
import { COMMIT_ORDER_LOCK_KEY, enqueue, lastLogHash, seal, type RepoContext } from './repo.ts'
import { sealTls, unsealTls } from './sealed.ts'

const TLS_FIELDS = ['ca', 'cert', 'key', 'servername', 'rejectUnauthorized'] as const
/** Logged by digest: the private key is secret; certificates are long, their digest names them. */
const PEM_FIELDS: ReadonlySet<string> = new Set(['ca', 'cert', 'key'])

interface Connection {
  host: string
  brokerPort: number
  httpPort: number
  tls: TlsOptions | null
}

interface Row extends Connection {
  snapshot: PersistedSnapshot
  seq: number
  headHash: string | null
  kind: string
}

/** A TLS field as the log shows it: PEM text only as `sha256:<hex>`. */
function shown(field: string, value: string | boolean | undefined): string | boolean | null {
  if (value === undefined) return null
  return PEM_FIELDS.has(field) ? `sha256:${sha256Hex(String(value))}` : value
}

function shownConnection(c: Connection): UpstreamConnection {
  const tls = c.tls
    ? Object.fromEntries(
        TLS_FIELDS.filter((f) => c.tls![f] !== undefined).map((f) => [f, shown(f, c.tls![f])!])
      )
    : null
  return { host: c.host, brokerPort: c.brokerPort, httpPort: c.httpPort, tls }
}

/** Each field that differs, old → new (TLS field by field, PEM as digests). */
export function connectionChanges(before: Connection, after: Connection): ConnectionChanges {
  const changes: ConnectionChanges = {}
  for (const f of ['host', 'brokerPort', 'httpPort'] as const)
    if (before[f] !== after[f]) changes[f] = { from: before[f], to: after[f] }
  for (const f of TLS_FIELDS) {
    const [a, b] = [before.tls?.[f], after.tls?.[f]]
    if (a !== b) changes[`tls.${f}`] = { from: shown(f, a), to: shown(f, b) }
  }
  return changes
}

async function lockedRow(db: Db, tx: Executor, id: string): Promise<Row> {
  const [row] = await db.execute<Row>(
    sql`select snapshot, seq, head_hash as "headHash", kind, host, broker_port as "brokerPort",
          http_port as "httpPort", tls from upstreams where id = ${id} for update`,
    tx
  )
  if (!row) throw new NotFoundError('upstream', id)
  return { ...row, tls: row.tls ? unsealTls(db, id, row.tls) : null }
}

/**
 * Edit an upstream's connection: one `upstream.connection.set` transition, logged and chained
 * like any other, and the columns, in one transaction. Another server (machines/upstream.ts,
 * `serverChanged`) also forgets the request id the old server gave, so the poller asks the new
 * one. Nothing changed: no row, the upstream as it is (after the machine said an edit applies).
 */
export async function editUpstream(
  ctx: RepoContext,
  input: StoreInput<'upstream.edit'>
): Promise<StoreApi['upstream.edit']['out']> {
  const { db, now = () => new Date(), queues = new Map(), heads = new Map() } = ctx
  const { id } = input
  const key = `upstream:${id}`
  const record = await enqueue(queues, key, () =>
    withRetry((n) =>
      db.orm.transaction(async (tx): Promise<TransitionRecord | null> => {
        if (input.requestKey && (input.retry || n > 1)) {
          const done = await earlierAttempt(db, tx, input.requestKey, 'upstream', id)
          if (done) return done
        }
        heads.delete(key) // the optimistic path's cache must not outlive this write
        const row = await lockedRow(db, tx, id)
        const after: Connection = {
          host: input.host ?? row.host,
          brokerPort: input.brokerPort ?? row.brokerPort,
          httpPort: input.httpPort ?? row.httpPort,
          tls: patchTls(row.tls, input.tls),
        }
        const changes = connectionChanges(row, after)
        const event = {
          type: 'upstream.connection.set',
          changes,
          connection: shownConnection(after),
        }
        const { machine, explain, version } = MACHINES.upstream
        const result = applyEvent(machine, row.snapshot, event, explain)
        if (!result.ok) {
          throw new InvalidTransitionError(result.reason, {
            machine: 'upstream',
            id,
            state: row.snapshot.value,
            event: event.type,
          })
        }
        if (Object.keys(changes).length === 0) return null
        const prevHash = row.headHash ?? (await lastLogHash(db, tx, 'upstream', id)) ?? GENESIS_HASH
        const fields = {
          machine: 'upstream' as const,
          machineId: id,
          seq: row.seq + 1,
          event,
          actor: input.actor,
          from: result.from,
          to: result.to,
          snapshot: result.snapshot,
          machineVersion: version,
          at: now().toISOString(),
        }
        const sealed = seal(fields, prevHash)
        const write = { expectedSeq: row.seq, record: sealed, requestKey: input.requestKey }
        const [logged] = await db.execute<{ globalSeq: number }>(
          versionCheckedWrites('upstreams', COMMIT_ORDER_LOCK_KEY, [write]),
          tx
        )
        if (!logged) throw new VersionConflictError(`upstream '${id}' moved past seq ${row.seq}`)
        const newServer = row.kind === 'uns' && serverChanged(changes)
        const tls = after.tls ? JSON.stringify(sealTls(db, id, after.tls)) : null
        await db.execute(
          sql`update upstreams set host = ${after.host}, broker_port = ${after.brokerPort},
                http_port = ${after.httpPort}, tls = ${tls}::jsonb
                ${newServer ? sql`, remote_request_id = null, last_error = null` : sql``}
              where id = ${id}`,
          tx
        )
        return { ...sealed, globalSeq: logged.globalSeq }
      })
    )
  )
  return { upstream: await getUpstream(db, id), record }
}
