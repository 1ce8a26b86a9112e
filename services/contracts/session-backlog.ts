import { z } from 'zod'
import { requestJson, serveParsedJson } from '../common/bus/rpc.ts'
import type { Bus, Subscription } from '../common/bus/bus.ts'
import { UbError } from '../common/errors.ts'

/**
 * How much waits in a persistent session's queue, across every gateway: the queue lives in the
 * shared `gw_outgoing` bucket, so any gateway can answer for any session (queue group). A bridge
 * supervisor asks for its links' local sessions, to show the backlog and the age of the oldest
 * unsent message also while a link is down.
 */
export const SESSION_BACKLOG_SUBJECT = 'gateway.session-backlog'
const QUEUE_GROUP = 'gateway'
/** Sessions one request may name: a supervisor batches its links up to this. */
export const MAX_BACKLOG_SESSIONS = 500

export const SessionBacklogSchema = z.object({
  clientId: z.string(),
  queued: z
    .number()
    .int()
    .describe('messages queued for the session, acknowledged ones awaiting erase included'),
  oldestAt: z
    .number()
    .nullable()
    .describe('when the oldest queued message was queued, ms since the epoch'),
})
export type SessionBacklog = z.infer<typeof SessionBacklogSchema>

const RequestSchema = z.object({ clientIds: z.array(z.string()).max(MAX_BACKLOG_SESSIONS) })

/** Answers for one session; a failure for one leaves it out of the reply rather than failing all. */
export type ReadBacklog = (clientId: string) => Promise<SessionBacklog>

export function serveSessionBacklog(
  bus: Bus,
  read: ReadBacklog,
  { maxConcurrent = 2 }: { maxConcurrent?: number } = {}
): Promise<Subscription> {
  let running = 0
  return serveParsedJson(
    bus,
    SESSION_BACKLOG_SUBJECT,
    RequestSchema,
    async ({ clientIds }) => {
      // A bound on requests in flight: each one lists KV; past it the caller retries later.
      if (running >= maxConcurrent)
        throw new UbError('busy', 'backlog requests in flight at the bound')
      running++
      try {
        const items: SessionBacklog[] = []
        for (const id of clientIds) {
          const got = await read(id).catch(() => undefined)
          if (got) items.push(got)
        }
        return { items }
      } finally {
        running--
      }
    },
    { queue: QUEUE_GROUP }
  )
}

/** The backlog of each named session that a gateway could count; none when no gateway answers. */
export async function readSessionBacklog(
  bus: Bus,
  clientIds: string[],
  timeoutMs = 5_000
): Promise<SessionBacklog[]> {
  const out: SessionBacklog[] = []
  for (let i = 0; i < clientIds.length; i += MAX_BACKLOG_SESSIONS) {
    const clientIdsPage = clientIds.slice(i, i + MAX_BACKLOG_SESSIONS)
    const reply = await requestJson<{ items: SessionBacklog[] }>(
      bus,
      SESSION_BACKLOG_SUBJECT,
      { clientIds: clientIdsPage },
      timeoutMs
    )
    out.push(...reply.items)
  }
  return out
}
