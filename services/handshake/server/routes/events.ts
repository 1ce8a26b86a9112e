import { createRoute, z } from '@hono/zod-openapi'
import { streamSSE, type SSEStreamingApi } from 'hono/streaming'
import { decodeJson } from '../../../common/bus/bus.ts'
import { ALL_TRANSITIONS, type TransitionRecord } from '../../../contracts/store.ts'
import type { Context } from 'hono'
import type { AuditAlarm, AuditAlarms } from '../audit-watch.ts'
import { BEARER, createRouter, type RouteDeps } from '../deps.ts'
import type { GuardMetrics } from '../metrics.ts'
import { createSseQueue } from '../sse-queue.ts'
import { errorResponses } from '../schemas.ts'

export const DEFAULT_PING_MS = 9_000 // 9 s: under the common 10 s+ idle timeouts of proxies
const REPLAY_PAGE = 500 // rows per log.global call while catching up
export const DEFAULT_SSE_QUEUE_MAX = 1_000
/** How long a dropped client's final event may take to leave before its socket is cut. */
const DROP_GRACE_MS = 2_000

type GlobalRecord = TransitionRecord & { globalSeq?: number }
/** What waits for one client: a transition from the bus, or an audit alarm. */
type Queued = GlobalRecord | { audit: AuditAlarm }

interface StreamDeps extends Pick<RouteDeps, 'store' | 'bus' | 'log'> {
  pingMs: number
  /** Events one client may have waiting; past it the client is dropped (config `sseQueueMax`). */
  queueMax: number
  sseClients?: { inc(): void; dec(): void } | undefined
  guards?: Pick<GuardMetrics, 'sseDropped' | 'sseQueued'> | undefined
  auditAlarms?: AuditAlarms | undefined
}

const route = createRoute({
  method: 'get',
  path: '/api/v1/events',
  tags: ['events'],
  security: BEARER,
  summary:
    'Server-sent events: every transition of every machine, live (event: transition, id: global seq). ' +
    'Resume with Last-Event-ID (or ?after=<global seq>); a ping event every ~9 s; event: audit when the ' +
    'periodic check finds a broken hash chain; a client that lets sseQueueMax events pile up gets ' +
    'event: dropped and is disconnected.',
  request: {
    query: z.object({
      after: z.coerce
        .number()
        .int()
        .min(0)
        .optional()
        .openapi({ param: { name: 'after', in: 'query' } }),
    }),
    headers: z.object({
      'last-event-id': z
        .string()
        .regex(/^\d{1,15}$/, 'must be a global seq')
        .optional(),
    }),
  },
  responses: {
    200: {
      description: 'text/event-stream of transitions',
      content: { 'text/event-stream': { schema: z.string() } },
    },
    ...errorResponses(400, 401),
  },
})

/**
 * Replay from the log (store verb `log.global`) after the client's last id, then live from the
 * bus. The subscription starts first and buffers, so nothing committed during the replay is
 * lost; the global seq dedupes the seam. A gap in the live seqs (a message the bus dropped)
 * is filled from the log.
 */
export function eventRoutes(
  options: Omit<StreamDeps, 'pingMs' | 'queueMax'> & { pingMs?: number; queueMax?: number }
) {
  const deps: StreamDeps = {
    ...options,
    pingMs: options.pingMs ?? DEFAULT_PING_MS,
    queueMax: options.queueMax ?? DEFAULT_SSE_QUEUE_MAX,
  }
  const { log } = deps
  const app = createRouter()

  app.openapi(route, (c) => {
    // hono answers HEAD through the GET handler and drops the body unread: a stream started
    // here would never be cancelled and would hold its subscription forever.
    if (c.req.method === 'HEAD') {
      return c.body(null, 200, { 'content-type': 'text/event-stream' }) as never
    }
    const header = c.req.valid('header')['last-event-id']
    const resumeFrom = header !== undefined ? Number(header) : c.req.valid('query').after
    return streamSSE(
      c,
      (stream) => serveClient(deps, c, stream, resumeFrom ?? null),
      async (err, stream) => {
        log.warn({ err }, 'event stream ended with an error')
        await stream.writeSSE({
          event: 'error',
          data: JSON.stringify({
            code: 'stream_failed',
            message: 'the event stream failed; reconnect with Last-Event-ID',
          }),
        })
      }
    )
  })

  return app
}

/**
 * One client: subscribe first (buffering in a bounded queue), replay from the log, then live.
 * Past `queueMax` waiting events the client is dropped: sent a last `event: dropped` if its
 * socket takes it, and cut off after a grace period if not.
 */
export async function serveClient(
  deps: StreamDeps,
  c: Context,
  stream: SSEStreamingApi,
  resumeFrom: number | null
): Promise<void> {
  const { bus, log, queueMax, guards, auditAlarms, sseClients, pingMs } = deps
  let cut: NodeJS.Timeout | undefined
  const queue = createSseQueue<Queued>({
    max: queueMax,
    ...(guards ? { queued: guards.sseQueued } : {}),
    onDrop: () => {
      guards?.sseDropped.inc()
      log.warn({ queueMax }, 'event stream client dropped: it does not read')
      cut = setTimeout(() => cutOff(c, stream), DROP_GRACE_MS)
    },
  })
  stream.onAbort(() => queue.close())
  const sub = await bus.subscribe(ALL_TRANSITIONS, (msg) => {
    try {
      queue.push(decodeJson<GlobalRecord>(msg.data))
    } catch (err) {
      log.warn({ err, subject: msg.subject }, 'unreadable transition on the bus')
    }
  })
  const unsubscribeAudit = auditAlarms?.subscribe((audit) => queue.push({ audit }))
  sseClients?.inc()
  let last = resumeFrom
  const live = () => !queue.closed && !queue.dropped
  try {
    if (last !== null) last = await catchUp(deps, stream, last, live)
    while (live()) {
      for (let item = queue.shift(); item !== undefined && live(); item = queue.shift()) {
        last = await deliver(deps, stream, item, last, live)
      }
      const timedOut = await queue.park(pingMs)
      if (timedOut && live()) await stream.writeSSE({ event: 'ping', data: '' })
    }
  } finally {
    sseClients?.dec()
    const dropped = queue.dropped && !queue.closed
    queue.close()
    unsubscribeAudit?.()
    await sub.unsubscribe()
    if (dropped) {
      await stream.writeSSE({
        event: 'dropped',
        data: JSON.stringify({
          code: 'slow_consumer',
          message: `more than ${queueMax} events waited for this client; reconnect with Last-Event-ID`,
          lastEventId: last,
        }),
      })
    }
    clearTimeout(cut)
  }
}

/** One queued item to the client, in global order; returns the last seq sent. */
async function deliver(
  deps: StreamDeps,
  stream: SSEStreamingApi,
  item: Queued,
  last: number | null,
  live: () => boolean
): Promise<number | null> {
  if ('audit' in item) {
    await stream.writeSSE({ event: 'audit', data: JSON.stringify(item.audit) })
    return last
  }
  const seq = item.globalSeq
  // Without a seq we cannot place it: the log has it with one.
  if (typeof seq !== 'number') return last === null ? last : catchUp(deps, stream, last, live)
  if (last !== null && seq <= last) return last // already sent by the replay
  if (last !== null && seq > last + 1) return catchUp(deps, stream, last, live)
  await send(stream, item, seq)
  return seq
}

async function send(stream: SSEStreamingApi, rec: GlobalRecord, seq: number): Promise<void> {
  await stream.writeSSE({ id: String(seq), event: 'transition', data: JSON.stringify(rec) })
}

/** Send everything after `after` from the log (while `live`); returns the last seq sent. */
async function catchUp(
  deps: StreamDeps,
  stream: SSEStreamingApi,
  after: number,
  live: () => boolean
): Promise<number> {
  let last = after
  for (;;) {
    if (!live() || stream.aborted) return last
    const page = await deps.store.call('log.global', { after: last, limit: REPLAY_PAGE })
    for (const rec of page.items) {
      if (rec.globalSeq <= last) continue
      await send(stream, rec, rec.globalSeq)
      last = rec.globalSeq
    }
    if (page.next === null || page.items.length === 0) return last
  }
}

/**
 * End a dropped client's stream whatever its socket does: abort the stream (pending writes
 * fail, the loop ends) and destroy the socket, which still holds what it could not send.
 */
function cutOff(c: Context, stream: SSEStreamingApi): void {
  stream.abort()
  const env = c.env as { outgoing?: { destroy?: () => void } } | undefined
  env?.outgoing?.destroy?.()
}
