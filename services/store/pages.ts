import { and, asc, eq, sql, type SQL } from 'drizzle-orm'
import type { Db } from '../../db/client.ts'
import { incomingRequests, upstreams } from '../../db/schema.ts'
import { ValidationError } from '../common/errors.ts'
import type { IncomingRequest, StoreInput, Upstream } from '../contracts/store.ts'
import { toRequest, toUpstream } from './reads.ts'

/** The operator's lists are paged: 100 rows unless asked for more, never more than 1,000. */
export const DEFAULT_LIST_PAGE = 100
export const MAX_LIST_PAGE = 1_000

interface CursorPage<T> {
  items: T[]
  next: string | null
}

/** `(createdAt, id)` of the last row shown, opaque to the client. */
function encodeCursor(createdAt: Date, id: string): string {
  return Buffer.from(JSON.stringify([createdAt.toISOString(), id])).toString('base64url')
}

function decodeCursor(cursor: string): { at: string; id: string } {
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[]
    if (typeof at === 'string' && typeof id === 'string' && !Number.isNaN(Date.parse(at)))
      return { at, id }
  } catch {
    // fall through: a cursor we did not make
  }
  throw new ValidationError("'cursor' is not a cursor this server gave out")
}

/**
 * Keyset paging in (createdAt, id) order: stable while rows are added (new ones sort last) and
 * as cheap on the thousandth page as on the first.
 */
async function page<Row extends { createdAt: Date; id: string }, T>(
  rows: (where: SQL | undefined, limit: number) => Promise<Row[]>,
  table: { createdAt: unknown; id: unknown },
  filters: (SQL | undefined)[],
  input: { limit?: number | undefined; cursor?: string | undefined },
  view: (row: Row) => T
): Promise<CursorPage<T>> {
  const limit = Math.min(MAX_LIST_PAGE, input.limit ?? DEFAULT_LIST_PAGE)
  const where = [...filters]
  if (input.cursor) {
    const { at, id } = decodeCursor(input.cursor)
    where.push(sql`(${table.createdAt}, ${table.id}) > (${at}::timestamptz, ${id})`)
  }
  const got = await rows(and(...where), limit + 1)
  const items = got.slice(0, limit)
  const last = items[items.length - 1]
  return {
    items: items.map(view),
    next: got.length > limit && last ? encodeCursor(last.createdAt, last.id) : null,
  }
}

export function pageRequests(
  db: Db,
  input: StoreInput<'request.page'>
): Promise<CursorPage<IncomingRequest>> {
  const t = incomingRequests
  return page(
    (where, limit) =>
      db.orm.select().from(t).where(where).orderBy(asc(t.createdAt), asc(t.id)).limit(limit),
    t,
    [
      input.status ? eq(t.state, input.status) : undefined,
      input.instanceId ? eq(t.instanceId, input.instanceId) : undefined,
    ],
    input,
    toRequest
  )
}

export function pageUpstreams(
  db: Db,
  input: StoreInput<'upstream.page'>
): Promise<CursorPage<Upstream>> {
  const t = upstreams
  return page(
    (where, limit) =>
      db.orm.select().from(t).where(where).orderBy(asc(t.createdAt), asc(t.id)).limit(limit),
    t,
    [input.status ? eq(t.state, input.status) : undefined],
    input,
    (row) => toUpstream(row, db)
  )
}
