import { createRoute } from '@hono/zod-openapi'
import type { MachineKind } from '../../../../machines/index.ts'
import { BEARER, createRouter, type RouteDeps } from '../deps.ts'
import { ApiError } from '../errors.ts'
import {
  IdParam,
  PageQuery,
  ReplayQuery,
  ReplaySchema,
  TransitionPage,
  errorResponses,
  json,
} from '../schemas.ts'

/** The audit trail of each machine: its log, paged, and its state rebuilt from the log. */
const RESOURCES: { machine: MachineKind; base: string; tag: string }[] = [
  { machine: 'upstream', base: '/api/v1/upstreams', tag: 'upstreams' },
  { machine: 'request', base: '/api/v1/requests', tag: 'requests' },
]

export function observeRoutes({ store }: Pick<RouteDeps, 'store'>) {
  const app = createRouter()
  for (const { machine, base, tag } of RESOURCES) {
    const transitions = createRoute({
      method: 'get',
      path: `${base}/{id}/transitions`,
      tags: [tag],
      security: BEARER,
      summary: `The ${machine}'s transition log, oldest first (page with ?after=<seq>&limit=)`,
      request: { params: IdParam, query: PageQuery },
      responses: {
        200: json(TransitionPage, 'one page; next is the after of the next page'),
        ...errorResponses(400, 401, 404, 503),
      },
    })
    const replay = createRoute({
      method: 'get',
      path: `${base}/{id}/replay`,
      tags: [tag],
      security: BEARER,
      summary: `The ${machine}'s state rebuilt from its log (up to ?to=<seq>), and whether the hash chain verifies`,
      request: { params: IdParam, query: ReplayQuery },
      responses: { 200: json(ReplaySchema, 'the replay'), ...errorResponses(400, 401, 404, 503) },
    })

    app.openapi(transitions, async (c) => {
      const { id } = c.req.valid('param')
      const { after, limit } = c.req.valid('query')
      // An id with no log at all is most likely a typo: say so rather than answer an empty page.
      if (after === undefined || after === 0) await exists(machine, id)
      const page = await store.call('log', {
        machine,
        id,
        ...(after === undefined ? {} : { after }),
        ...(limit === undefined ? {} : { limit }),
      })
      return c.json(page, 200)
    })

    app.openapi(replay, async (c) => {
      const { id } = c.req.valid('param')
      const { to } = c.req.valid('query')
      const result = await store.call('replay', {
        machine,
        id,
        ...(to === undefined ? {} : { to }),
      })
      if (to !== undefined && result.to < to) await refusePastTheEnd(machine, id, to)
      return c.json({ ...result, state: result.snapshot.value }, 200)
    })
  }

  /** A `to` past the log's last row is a mistake, not a request for the latest state: say so. */
  async function refusePastTheEnd(machine: MachineKind, id: string, to: number): Promise<void> {
    const last = (await store.call('replay', { machine, id })).to
    if (to <= last) return // a seq between two rows: the state at the earlier one
    throw new ApiError(
      400,
      'invalid_request',
      `to=${to} is past the end of ${machine} ${id}'s log: its last seq is ${last}`,
      { details: { lastSeq: last } }
    )
  }

  async function exists(machine: MachineKind, id: string): Promise<void> {
    await store.call(machine === 'upstream' ? 'upstream.get' : 'request.get', { id })
  }

  return app
}
