import { sql } from 'drizzle-orm'
import type { Db, Executor } from '../../db/client.ts'
import { UbError } from '../common/errors.ts'
import type { StoreInput } from '../contracts/store.ts'

/** Serializes request creation, so the Pending caps hold under concurrent requests. */
export const REQUEST_CREATE_LOCK_KEY = 0x75_6e_62_72 // 'unbr'

/** Which Pending bound a new request would pass; the HTTP API shows the first two alike. */
export class PendingLimitError extends UbError {
  constructor(bound: 'instance' | 'network' | 'capacity') {
    super(`pending_${bound}`, `no more pending requests are taken (${bound} bound)`)
  }
}

/** Count live Pending requests under the creation lock; refuse past any bound. */
export async function checkPendingLimits(
  db: Db,
  tx: Executor,
  input: StoreInput<'request.create'>
): Promise<void> {
  const limits = input.limits!
  await db.execute(sql`select pg_advisory_xact_lock(${REQUEST_CREATE_LOCK_KEY}::bigint)`, tx)
  const [counts] = await db.execute<{ total: number; instance: number; network: number }>(
    sql`select count(*)::int as total,
          (count(*) filter (where instance_id = ${input.instanceId}))::int as instance,
          (count(*) filter (where source_network = ${input.sourceNetwork ?? null}))::int as network
        from incoming_requests where state = 'Pending'`,
    tx
  )
  if (!counts) return
  if (counts.total >= limits.total) throw new PendingLimitError('capacity')
  if (counts.instance >= limits.perInstance) throw new PendingLimitError('instance')
  if (counts.network >= limits.perNetwork) throw new PendingLimitError('network')
}
