import { createRoute, z } from '@hono/zod-openapi'
import { streamSSE, type SSEStreamingApi } from 'hono/streaming'
import { decodeJson } from '../../../common/bus/bus.ts'
import { ALL_TRANSITIONS, type TransitionRecord } from '../../../contracts/store.ts'
import { BEARER, createRouter, type RouteDeps } from '../deps.ts'
import { errorResponses } from '../schemas.ts'

export const DEFAULT_PING_MS = 9_000 // 9 s: under the common 10 s+ idle timeouts of proxies
const REPLAY_PAGE = 500 // rows per log.global call while catching up

type GlobalRecord = TransitionRecord & { globalSeq?: number }

const route = createRoute({
  method: 'get',
  path: '/api/v1/events',
  tags: ['events'],
  security: BEARER,
  summary:
    'Server-sent events: every transition of every machine, live (event: transition, id: global seq). ' +
    'Resume with Last-Event-ID (or ?after=<global seq>); a ping event every ~9 s.',
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
export function eventRoutes({
  store,
  bus,
  log,
  pingMs = DEFAULT_PING_MS,
  sseClients,
}: Pick<RouteDeps, 'store' | 'bus' | 'log'> & {
  pingMs?: number
  sseClients?: { inc(): void; dec(): void }
}) {
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
      async (stream) => {
        const queue: GlobalRecord[] = []
        let wake: () => void = () => {}
        let aborted = false
        // Wake the loop on disconnect: a loop parked in a sleep leaks until it ends (ARCHITECTURE.md §13).
        stream.onAbort(() => {
          aborted = true
          wake()
        })
        const sub = await bus.subscribe(ALL_TRANSITIONS, (msg) => {
          try {
            queue.push(decodeJson<GlobalRecord>(msg.data))
            wake()
          } catch (err) {
            log.warn({ err, subject: msg.subject }, 'unreadable transition on the bus')
          }
        })
        sseClients?.inc()
        let last: number | null = resumeFrom ?? null
        try {
          if (last !== null) last = await catchUp(stream, last)
          while (!aborted) {
            while (queue.length && !aborted) {
              const rec = queue.shift()!
              const seq = rec.globalSeq
              if (typeof seq !== 'number') {
                // Without a seq we cannot place it: the log has it with one.
                if (last !== null) last = await catchUp(stream, last)
                continue
              }
              if (last !== null && seq <= last) continue // already sent by the replay
              if (last !== null && seq > last + 1) {
                last = await catchUp(stream, last)
                continue
              }
              await send(stream, rec, seq)
              last = seq
            }
            if (aborted) break
            // Park until a transition, a disconnect or the ping is due; the timer is cleared on
            // wake so a busy stream does not pile up pending sleeps.
            const timedOut = await new Promise<boolean>((resolve) => {
              if (queue.length || aborted) return resolve(false)
              const timer = setTimeout(() => resolve(true), pingMs)
              wake = () => {
                clearTimeout(timer)
                resolve(false)
              }
            })
            wake = () => {}
            if (timedOut && !aborted) await stream.writeSSE({ event: 'ping', data: '' })
          }
        } finally {
          sseClients?.dec()
          await sub.unsubscribe()
        }
      },
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

  async function send(stream: SSEStreamingApi, rec: GlobalRecord, seq: number): Promise<void> {
    await stream.writeSSE({ id: String(seq), event: 'transition', data: JSON.stringify(rec) })
  }

  /** Send everything after `after` from the log; returns the last seq sent. */
  async function catchUp(stream: SSEStreamingApi, after: number): Promise<number> {
    let last = after
    for (;;) {
      const page = await store.call('log.global', { after: last, limit: REPLAY_PAGE })
      for (const rec of page.items) {
        if (rec.globalSeq <= last) continue
        await send(stream, rec, rec.globalSeq)
        last = rec.globalSeq
      }
      if (page.next === null || page.items.length === 0) return last
    }
  }

  return app
}
