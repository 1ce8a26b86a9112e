import { sql } from 'drizzle-orm'
import type { Db } from '../../db/client.ts'
import { StorageError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'
import { seal, sealedWith, unseal, type Keyring, type SealedField } from './sealed.ts'

interface Row {
  id: string
  secret: string | null
  tls: { key?: string } | null
}

export interface SealReport {
  /** Rows sealed now: written in the clear by an older version, or under a retired key. */
  sealed: number
  /** Rows whose values do not open with any configured key (named in the log). */
  unopenable: string[]
  /** Rows still in the clear because the store runs without a key. */
  clear: number
}

/**
 * At start: seal what an older version left in the clear and reseal what a retired key sealed,
 * so an upgrade and a key rotation need no separate step. Each row is updated only if it is
 * still what was read, so store replicas starting together do no harm. A row that does not open
 * is left alone and logged at error level with the key to check; its reads fail the same way.
 */
export async function sealRows(
  db: Db,
  ring: Keyring | undefined,
  log: Logger
): Promise<SealReport> {
  const rows = await db.execute<Row>(
    sql`select id, secret, tls from upstreams where secret is not null or tls->>'key' is not null`
  )
  const report: SealReport = { sealed: 0, unopenable: [], clear: 0 }
  for (const row of rows) {
    if (!ring) {
      if (sealedWith(row.secret ?? '') === null || sealedWith(row.tls?.key ?? '') === null) {
        report.clear++
      }
      continue
    }
    let secret: string | null
    let key: string | undefined
    try {
      secret = row.secret === null ? null : reseal(ring, 'upstreams.secret', row.id, row.secret)
      key =
        row.tls?.key === undefined
          ? undefined
          : reseal(ring, 'upstreams.tls.key', row.id, row.tls.key)
    } catch (err) {
      if (!(err instanceof StorageError)) throw err
      report.unopenable.push(row.id)
      log.error({ upstream: row.id, reason: err.message }, 'a sealed secret does not open')
      continue
    }
    if (secret === row.secret && key === row.tls?.key) continue
    const tls = row.tls === null ? null : { ...row.tls, ...(key === undefined ? {} : { key }) }
    await db.execute(
      sql`update upstreams set secret = ${secret}, tls = ${tls === null ? null : JSON.stringify(tls)}::jsonb
          where id = ${row.id} and secret is not distinct from ${row.secret}
            and tls is not distinct from ${row.tls === null ? null : JSON.stringify(row.tls)}::jsonb`
    )
    report.sealed++
  }
  if (report.sealed > 0) log.info({ rows: report.sealed }, 'sealed upstream secrets at rest')
  if (report.clear > 0) {
    log.warn(
      { rows: report.clear },
      'upstream secrets are kept in the clear: the store has no secretKey (UB_SECRET_KEY)'
    )
  }
  return report
}

/** The value sealed under the current key: itself if it already is, else opened and sealed. */
function reseal(ring: Keyring, field: SealedField, rowId: string, value: string): string {
  if (sealedWith(value) === ring.current) {
    unseal(ring, field, rowId, value) // it must open: a wrong key is found here, not at first use
    return value
  }
  return seal(ring, field, rowId, unseal(ring, field, rowId, value))
}
