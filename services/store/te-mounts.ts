/**
 * Downstreams' thin-edge.io mounts (`te.mount.*`, table `te_mounts`): where each downstream's
 * bridge mirrors its `te/` tree into our namespace, as its supervisor declares it in the topology
 * exchange. A mount is kept only inside the downstream's grants and while its request is
 * Accepted; the entities under a mount that went away, or of a request that left Accepted, leave
 * the twin with it.
 */
import { and, eq, inArray, sql } from 'drizzle-orm'
import type { Db } from '../../db/client.ts'
import { teEntities, teMounts } from '../../db/schema.ts'
import { isWithinAny } from '../../machines/namespace.ts'
import { UbError } from '../common/errors.ts'
import {
  TE_MOUNTS_LIST_MAX,
  type StoreApi,
  type StoreInput,
  type TeMount,
} from '../contracts/store.ts'
import { getRequest } from './reads.ts'

type Out<V extends keyof StoreApi> = Promise<StoreApi[V]['out']>

const sameMounts = (p: readonly TeMount[], q: readonly TeMount[]) =>
  p.length === q.length && p.every((m, i) => m.target === q[i]!.target && m.path === q[i]!.path)

/** Replace a downstream's mounts with those of `mounts` inside its grants. */
export async function setTeMounts(
  db: Db,
  { requestId, mounts }: StoreInput<'te.mount.set'>
): Out<'te.mount.set'> {
  const request = await getRequest(db, requestId)
  if (request.status !== 'Accepted')
    throw new UbError('not_accepted', `the request is ${request.status}, not Accepted`)
  const kept: TeMount[] = []
  const refused: { mount: TeMount; reason: string }[] = []
  for (const mount of mounts) {
    if (!isWithinAny(mount.target, request.grants))
      refused.push({ mount, reason: 'outside the grants' })
    else if (kept.some((k) => k.target === mount.target))
      refused.push({ mount, reason: 'the target is mounted already' })
    else kept.push(mount)
  }
  kept.sort((p, q) => (p.target < q.target ? -1 : p.target > q.target ? 1 : 0))
  const instanceId = request.instanceId
  return db.orm.transaction(async (tx) => {
    const [before] = await tx.select().from(teMounts).where(eq(teMounts.instanceId, instanceId))
    const same = before
      ? before.requestId === requestId && sameMounts(before.mounts, kept)
      : kept.length === 0
    if (same) return { mounts: kept, refused, changed: false, removed: 0 }
    if (kept.length === 0) await tx.delete(teMounts).where(eq(teMounts.instanceId, instanceId))
    else
      await tx
        .insert(teMounts)
        .values({ instanceId, requestId, mounts: kept })
        .onConflictDoUpdate({
          target: teMounts.instanceId,
          set: { requestId, mounts: kept, updatedAt: new Date() },
        })
    // Each entity remembers the topic it came under: those under no kept mount go.
    const under = kept.map((m) => sql`starts_with(${teEntities.topic}, ${m.target + '/'})`)
    const gone = await tx
      .delete(teEntities)
      .where(
        and(
          eq(teEntities.downstream, instanceId),
          under.length === 0 ? undefined : sql`not (${sql.join(under, sql` or `)})`
        )
      )
      .returning({ topicId: teEntities.topicId })
    return { mounts: kept, refused, changed: true, removed: gone.length }
  })
}

export async function listTeMounts(db: Db): Out<'te.mount.list'> {
  const rows = await db.orm.select().from(teMounts).limit(TE_MOUNTS_LIST_MAX)
  return {
    items: rows.map((r) => ({
      instanceId: r.instanceId,
      requestId: r.requestId,
      mounts: r.mounts,
    })),
  }
}

/** A request left Accepted (revoked, withdrawn): its downstream's mounts and entities go. */
export async function forgetTeRequest(db: Db, requestId: string): Promise<number> {
  return db.orm.transaction(async (tx) => {
    const mounts = await tx
      .delete(teMounts)
      .where(eq(teMounts.requestId, requestId))
      .returning({ instanceId: teMounts.instanceId })
    if (mounts.length === 0) return 0
    const gone = await tx
      .delete(teEntities)
      .where(
        inArray(
          teEntities.downstream,
          mounts.map((m) => m.instanceId)
        )
      )
      .returning({ topicId: teEntities.topicId })
    return gone.length
  })
}
