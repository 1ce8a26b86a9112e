/**
 * The thin-edge.io digital twin (`te.entity.*`): one row per registered entity in `te_entities`,
 * written from what the gateways observe on `te/`, read by the HTTP entity API. Not audited: it
 * mirrors device state, it is no lifecycle of ours. Bounded by TE_MAX_ENTITIES.
 */
import { and, asc, eq, gt, or, sql, type SQL } from 'drizzle-orm'
import type { Db } from '../../db/client.ts'
import { teEntities, teMounts } from '../../db/schema.ts'
import { NotFoundError, UbError } from '../common/errors.ts'
import {
  TE_CURSOR_SEPARATOR,
  TE_ENTITIES_FULL,
  TE_LIST_MAX_BYTES,
  TE_MAX_ALARMS,
  TE_MAX_COMMANDS,
  TE_MAX_ENTITIES,
  TE_MAX_TWIN_FRAGMENTS,
  type StoreApi,
  type StoreInput,
  type TeEntity,
  type TeEntityWithTwin,
} from '../contracts/store.ts'

type Row = typeof teEntities.$inferSelect
type Out<V extends keyof StoreApi> = Promise<StoreApi[V]['out']>

/** Serializes the insert of new entities, so the bound holds across store replicas. */
const TE_INSERT_LOCK_KEY = 0x75_6e_74_65 // 'unte'
const DEFAULT_LIST_LIMIT = 100

export function toTeEntity(row: Row): TeEntity {
  const entity: TeEntity = {
    '@topic-id': row.topicId,
    '@type': row.type as TeEntity['@type'],
    health: row.health,
    lastMeasurementAt: row.lastMeasurementAt?.toISOString() ?? null,
    alarms: row.alarms,
    commands: row.commands,
    registeredAt: row.registeredAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  }
  if (row.parent !== null) entity['@parent'] = row.parent
  if (row.externalId !== null) entity['@id'] = row.externalId
  if (row.healthEndpoint !== null) entity['@health'] = row.healthEndpoint
  if (row.downstream !== '') entity.downstream = row.downstream
  if (row.topic !== null) entity.topic = row.topic
  return entity
}

/** One entity by its key: whose ('' ours) and its topic id. */
const entityIs = (downstream: string, topicId: string) =>
  and(eq(teEntities.downstream, downstream), eq(teEntities.topicId, topicId))

export async function getTeEntity(
  db: Db,
  { topicId, downstream = '' }: StoreInput<'te.entity.get'>
): Promise<TeEntityWithTwin> {
  const [row] = await db.orm.select().from(teEntities).where(entityIs(downstream, topicId))
  if (!row) throw new NotFoundError('thin-edge.io entity', topicId)
  return { ...toTeEntity(row), twin: row.twin }
}

/** A registration: replaces the metadata, merges the twin keys; a new entity only under the bound. */
export async function upsertTeEntity(
  db: Db,
  input: StoreInput<'te.entity.upsert'>
): Out<'te.entity.upsert'> {
  const meta = {
    type: input.type,
    parent: input.parent,
    externalId: input.externalId ?? null,
    healthEndpoint: input.healthEndpoint ?? null,
    topic: input.topic ?? null,
  }
  const downstream = input.downstream ?? ''
  const key = entityIs(downstream, input.topicId)
  const twin = JSON.stringify(input.twin)
  const merged = () => ({ twin: sql`${teEntities.twin} || ${twin}::jsonb`, updatedAt: new Date() })
  if (downstream !== '') await requireMount(db, downstream)
  const updated = await db.orm
    .update(teEntities)
    .set({ ...meta, ...merged() })
    .where(key)
    .returning({ topicId: teEntities.topicId })
  if (updated.length > 0) return { created: false }
  return db.orm.transaction(async (tx) => {
    await db.execute(sql`select pg_advisory_xact_lock(${TE_INSERT_LOCK_KEY}::bigint)`, tx)
    const [count] = await db.execute<{ n: number }>(
      sql`select count(*)::int as n from te_entities`,
      tx
    )
    if ((count?.n ?? 0) >= TE_MAX_ENTITIES) {
      // Full: only an entity that raced in ahead of us is still updated.
      const again = await tx
        .update(teEntities)
        .set({ ...meta, ...merged() })
        .where(key)
        .returning({ topicId: teEntities.topicId })
      if (again.length > 0) return { created: false }
      throw new UbError(
        TE_ENTITIES_FULL,
        `the digital twin keeps at most ${TE_MAX_ENTITIES} thin-edge.io entities; '${input.topicId}' was not registered`,
        { details: { limit: TE_MAX_ENTITIES } }
      )
    }
    const inserted = await tx
      .insert(teEntities)
      .values({ downstream, topicId: input.topicId, ...meta, twin: input.twin })
      .onConflictDoUpdate({
        target: [teEntities.downstream, teEntities.topicId],
        set: { ...meta, ...merged() },
      })
      .returning({ created: sql<boolean>`(xmax = 0)` })
    return { created: inserted[0]?.created ?? false }
  })
}

/** A downstream's entity comes only while that downstream has a mount (not once revoked). */
async function requireMount(db: Db, downstream: string): Promise<void> {
  const [mount] = await db.orm
    .select({ id: teMounts.instanceId })
    .from(teMounts)
    .where(eq(teMounts.instanceId, downstream))
  if (!mount) throw new NotFoundError('thin-edge.io mount of downstream', downstream)
}

/** The entities of `downstream` under `topicId` (it included), cycle-safe (`union` drops repeats). */
const subtree = (downstream: string, topicId: string) => sql`with recursive tree(topic_id) as (
    select topic_id from te_entities where downstream = ${downstream} and topic_id = ${topicId}
    union select e.topic_id from te_entities e join tree t
      on e.downstream = ${downstream} and e.parent = t.topic_id)`

export async function deleteTeEntity(
  db: Db,
  { topicId, downstream = '' }: StoreInput<'te.entity.delete'>
): Out<'te.entity.delete'> {
  const rows = await db.execute<{ topic_id: string }>(
    sql`${subtree(downstream, topicId)} delete from te_entities
        where downstream = ${downstream} and topic_id in (select topic_id from tree)
        returning topic_id`
  )
  return { deleted: rows.map((r) => r.topic_id).sort() }
}

/** `key` added to a jsonb object column unless it already holds `max` other keys. */
const putKey = (column: SQL | typeof teEntities.alarms, key: string, value: unknown, max: number) =>
  sql`case when ${column} ? ${key} or (select count(*) from jsonb_object_keys(${column})) < ${max}
      then ${column} || jsonb_build_object(${key}::text, ${JSON.stringify(value)}::jsonb)
      else ${column} end`

function observedSet(input: StoreInput<'te.entity.observe'>): Partial<Record<keyof Row, unknown>> {
  switch (input.kind) {
    case 'health':
      return { health: input.status }
    case 'measurement':
      return {
        lastMeasurementAt: sql`greatest(${teEntities.lastMeasurementAt}, ${input.at}::timestamptz)`,
      }
    case 'alarm':
      return {
        alarms: input.alarm
          ? putKey(teEntities.alarms, input.alarmType, input.alarm, TE_MAX_ALARMS)
          : sql`${teEntities.alarms} - ${input.alarmType}::text`,
      }
    case 'command':
      return {
        commands:
          input.status !== null
            ? putKey(sql`${teEntities.commands}`, input.command, input.status, TE_MAX_COMMANDS)
            : sql`${teEntities.commands} - ${input.command}::text`,
      }
    case 'twin':
      return {
        twin:
          input.value !== null && input.value !== undefined
            ? putKey(sql`${teEntities.twin}`, input.fragment, input.value, TE_MAX_TWIN_FRAGMENTS)
            : sql`${teEntities.twin} - ${input.fragment}::text`,
      }
  }
}

/** Health, last measurement, an alarm, a command status or a twin fragment of a known entity. */
export async function observeTeEntity(
  db: Db,
  input: StoreInput<'te.entity.observe'>
): Out<'te.entity.observe'> {
  const rows = await db.orm
    .update(teEntities)
    .set({ ...observedSet(input), updatedAt: new Date() } as Partial<Row>)
    .where(entityIs(input.downstream ?? '', input.topicId))
    .returning({ topicId: teEntities.topicId })
  return { found: rows.length > 0 }
}

/** thin-edge's query: `root` (it and its descendants), `parent` (its children), `type`; by topic id. */
export async function listTeEntities(
  db: Db,
  {
    root,
    parent,
    type,
    downstream,
    limit = DEFAULT_LIST_LIMIT,
    cursor,
  }: StoreInput<'te.entity.list'>
): Out<'te.entity.list'> {
  const anchor = root ?? parent
  // An anchored query is within one tree: ours unless a downstream is named.
  const whose = downstream ?? (anchor === undefined ? undefined : '')
  const filters: SQL[] = []
  if (whose !== undefined) filters.push(eq(teEntities.downstream, whose))
  if (anchor !== undefined) {
    // Known, or named as a parent (the main device is there before anyone registers it).
    const [found] = await db.orm
      .select({ topicId: teEntities.topicId })
      .from(teEntities)
      .where(and(...filters, or(eq(teEntities.topicId, anchor), eq(teEntities.parent, anchor))))
      .limit(1)
    if (!found) throw new NotFoundError('thin-edge.io entity', anchor)
  }
  if (root !== undefined)
    filters.push(
      sql`${teEntities.topicId} in (${subtree(whose ?? '', root)} select topic_id from tree)`
    )
  if (parent !== undefined) filters.push(eq(teEntities.parent, parent))
  if (type !== undefined) filters.push(eq(teEntities.type, type))
  if (cursor !== undefined) filters.push(after(cursor))
  const rows = await db.orm
    .select()
    .from(teEntities)
    .where(and(...filters))
    .orderBy(asc(teEntities.downstream), asc(teEntities.topicId))
    .limit(limit + 1)
  const items: TeEntity[] = []
  let bytes = 0
  for (const row of rows.slice(0, limit)) {
    const item = toTeEntity(row)
    bytes += JSON.stringify(item).length
    if (bytes > TE_LIST_MAX_BYTES && items.length > 0) break
    items.push(item)
  }
  const last = items[items.length - 1]
  const more = items.length < rows.length && last !== undefined
  return { items, next: more ? cursorOf(last.downstream ?? '', last['@topic-id']) : null }
}

/** Our entities' cursor is the topic id, as before; a downstream's is `<instance id>#<topic id>`. */
const cursorOf = (downstream: string, topicId: string) =>
  downstream === '' ? topicId : `${downstream}${TE_CURSOR_SEPARATOR}${topicId}`

function after(cursor: string): SQL {
  const at = cursor.indexOf(TE_CURSOR_SEPARATOR)
  const downstream = at < 0 ? '' : cursor.slice(0, at)
  const topicId = at < 0 ? cursor : cursor.slice(at + 1)
  return or(
    gt(teEntities.downstream, downstream),
    and(eq(teEntities.downstream, downstream), gt(teEntities.topicId, topicId))
  )!
}
