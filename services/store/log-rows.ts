import { sql } from 'drizzle-orm'
import type { Db, Executor } from '../../db/client.ts'
import type { MachineKind } from '../../machines/index.ts'
import { ValidationError } from '../common/errors.ts'
import type { TransitionRecord } from '../contracts/store.ts'

/** Log rows as API records; `at` is formatted in SQL so both drivers give the same string. */
export const selectTransitions = sql.raw(`
  select global_seq::float8 as "globalSeq", machine, machine_id as "machineId", seq, event, actor,
         from_state as "from", to_state as "to", snapshot, machine_version as "machineVersion",
         to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as at,
         prev_hash as "prevHash", hash
  from transitions`)

/**
 * The log row an earlier attempt of this write made (store-client.ts retries with the same
 * `requestKey`, on this replica or another), or undefined. A key a different machine's write
 * used is refused: it cannot be the same write.
 */
export async function earlierAttempt(
  db: Db,
  tx: Executor,
  requestKey: string,
  machine: MachineKind,
  id?: string
): Promise<TransitionRecord | undefined> {
  const [row] = await db.execute<TransitionRecord>(
    sql`${selectTransitions} where request_key = ${requestKey}`,
    tx
  )
  if (!row) return undefined
  if (row.machine !== machine || (id !== undefined && row.machineId !== id))
    throw new ValidationError(`requestKey '${requestKey}' was used for another write`)
  return row
}
