import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sha256Hex } from '../../services/handshake/secret.ts'
import { startNode, type Node } from './fixture.ts'

/**
 * Random methods, paths, headers and bodies at every route: the answer is a success or a 4xx
 * (or 503) JSON error with a code, never a 500 or a stack trace.
 */
let n: Node
let ids: { upstream: string; request: string }
const SECRET = 'fuzz-secret'

beforeAll(async () => {
  n = await startNode()
  const up = await n.call('/api/v1/upstreams', {
    method: 'POST',
    json: { kind: 'mqtt', host: 'mqtt://127.0.0.1' },
  })
  const res = await n.api('/api/v1/handshake/requests', {
    method: 'POST',
    json: { instanceId: 'UB_fuzz', secretHash: sha256Hex(SECRET) },
  })
  ids = { upstream: up.id, request: ((await res.json()) as any).requestId }
})
afterAll(async () => {
  await n?.close()
})

/** Every route with its method; the property mostly keeps the pair and sometimes mixes them. */
const ROUTES: [string, string][] = [
  ['GET', '/healthz'],
  ['GET', '/readyz'],
  ['GET', '/metrics'],
  ['GET', '/openapi.json'],
  ['GET', '/api/v1/instance'],
  ['GET', '/api/v1/cluster'],
  ['GET', '/api/v1/route'],
  ['GET', '/api/v1/mesh'],
  ['GET', '/api/v1/links'],
  ['GET', '/api/v1/events'],
  ['POST', '/api/v1/upstreams'],
  ['GET', '/api/v1/upstreams'],
  ['GET', '/api/v1/upstreams/:u'],
  ['DELETE', '/api/v1/upstreams/:u'],
  ['POST', '/api/v1/upstreams/:u/refresh'],
  ['PATCH', '/api/v1/upstreams/:u'],
  ['PUT', '/api/v1/upstreams/:u/bindings'],
  ['POST', '/api/v1/upstreams/:u/activate'],
  ['POST', '/api/v1/upstreams/:u/deactivate'],
  ['POST', '/api/v1/upstreams/:u/request'],
  ['GET', '/api/v1/upstreams/:u/transitions'],
  ['GET', '/api/v1/upstreams/:u/replay'],
  ['POST', '/api/v1/handshake/requests'],
  ['GET', '/api/v1/handshake/requests/:r'],
  ['DELETE', '/api/v1/handshake/requests/:r'],
  ['POST', '/api/v1/handshake/requests/:r/topology'],
  ['GET', '/api/v1/requests'],
  ['GET', '/api/v1/requests/:r'],
  ['POST', '/api/v1/requests/:r/accept'],
  ['POST', '/api/v1/requests/:r/decline'],
  ['POST', '/api/v1/requests/:r/revoke'],
  ['GET', '/api/v1/requests/:r/transitions'],
  ['GET', '/api/v1/requests/:r/replay'],
  ['GET', '/te/v1/entities'],
  ['GET', '/te/v1/entities/:u'],
  ['GET', '/te/v1/entities/:u/twin'],
  ['GET', '/te/v1/entities/:u/twin/:r'],
  ['POST', '/te/v1/entities'],
  ['PATCH', '/te/v1/entities/:u'],
  ['DELETE', '/te/v1/entities/:u'],
  ['PUT', '/te/v1/entities/:u/twin'],
  ['DELETE', '/te/v1/entities/:u/twin'],
  ['PUT', '/te/v1/entities/:u/twin/:r'],
  ['DELETE', '/te/v1/entities/:u/twin/:r'],
]

const segment = fc.oneof(
  { weight: 5, arbitrary: fc.constant(':real') },
  { weight: 1, arbitrary: fc.string({ minLength: 1, maxLength: 12 }).map(encodeURIComponent) },
  {
    weight: 1,
    arbitrary: fc.constantFrom('..', '%', '%zz', '%00', '0', '-1', 'UB_x', 'a'.repeat(300)),
  }
)
const route = fc
  .tuple(
    fc.constantFrom(...ROUTES),
    fc.oneof(
      { weight: 4, arbitrary: fc.constant(null) },
      {
        weight: 1,
        arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'),
      }
    )
  )
  .map(([[m, t], other]) => [other ?? m, t] as const)
const request = fc
  .tuple(
    route,
    segment,
    segment,
    fc.oneof(
      fc.constant(''),
      fc.constantFrom(
        '?status=Pending',
        '?after=1&limit=2',
        '?limit=0',
        '?to=x',
        '?after=-5',
        '?a=%zz',
        '?status=' + 'x'.repeat(40),
        '?root=device/main//',
        '?parent=device/main&type=service',
        '?root=a&parent=b',
        '?type=x'
      )
    )
  )
  .map(
    ([[m, t], u, r, q]) =>
      [
        m,
        t
          .replace(':u', u === ':real' ? ids.upstream : u)
          .replace(':r', r === ':real' ? ids.request : r) + q,
      ] as const
  )

const namespaceish = fc.oneof(
  fc.constantFrom('a', 'a/b', '+', '#', 'a//b', '$SYS', '/a', 'a/', ''),
  fc.string({ maxLength: 10 })
)
const nearValid = fc.oneof(
  fc.record(
    {
      kind: fc.constantFrom('uns', 'mqtt', 'x'),
      host: fc.oneof(
        fc.constantFrom(
          'mqtt://127.0.0.1',
          'ws://127.0.0.1',
          'http://127.0.0.1',
          'mqtt://',
          'mqtt://127.0.0.1:1'
        ),
        fc.string()
      ),
      brokerPort: fc.oneof(fc.integer({ min: -1, max: 70_000 }), fc.string(), fc.double()),
      httpPort: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: -1, max: 70_000 })),
      username: fc.string(),
      tls: fc.oneof(fc.record({ ca: fc.string() }), fc.jsonValue()),
    },
    { requiredKeys: [] }
  ),
  fc.array(fc.record({ source: namespaceish, target: namespaceish }, { requiredKeys: [] }), {
    maxLength: 4,
  }),
  fc.record({ grants: fc.array(namespaceish, { maxLength: 3 }) }, { requiredKeys: [] }),
  fc.record(
    {
      instanceId: fc.oneof(fc.constant('UB_fz'), fc.string()),
      secretHash: fc.oneof(fc.constant(sha256Hex('x')), fc.string()),
    },
    { requiredKeys: [] }
  )
)
const body = fc.oneof(
  fc.constant(undefined),
  fc.constantFrom(
    JSON.stringify({ host: 'mqtt://127.0.0.1', httpPort: 1 }),
    JSON.stringify({ kind: 'mqtt', host: 'mqtt://127.0.0.1' }),
    JSON.stringify([{ source: 'a', target: 'b' }]),
    JSON.stringify({ instanceId: 'UB_fz', secretHash: sha256Hex('x') }),
    JSON.stringify({ grants: ['a'] }),
    '{}'
  ),
  nearValid.map((v) => JSON.stringify(v)),
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 50 }),
  fc.constantFrom('{', '[', 'null', '"', '{"a":1}}', '\u0000', '{"__proto__":{"x":1}}')
)
const headers = fc.record(
  {
    authorization: fc.oneof(
      { weight: 6, arbitrary: fc.constant('valid') },
      { weight: 1, arbitrary: fc.constantFrom('secret', 'Bearer nope', 'Basic abc', '', 'Bearer') }
    ),
    'content-type': fc.constantFrom(
      'application/json',
      'text/plain',
      'application/json; charset=utf-8',
      'multipart/form-data',
      'application/x-www-form-urlencoded'
    ),
    'last-event-id': fc.constantFrom('1', 'x', '99999999999999999999'),
    'x-forwarded-for': fc.constantFrom('1.2.3.4', 'garbage'),
  },
  { requiredKeys: [] }
)

describe('random requests at every route', () => {
  it('covers every route the OpenAPI document describes', async () => {
    const doc = (await n.call('/openapi.json')) as {
      paths: Record<string, Record<string, unknown>>
    }
    const described = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map(
        (m) => `${m.toUpperCase()} ${p.replace(/\{(id|requestId|topic-id|key)\}/g, ':x')}`
      )
    )
    const fuzzed = ROUTES.map(([m, t]) => `${m} ${t.replace(/:[ur]\b/g, ':x')}`)
    expect(fuzzed.sort()).toEqual(described.sort())
  })

  it('never answer 500; every error is JSON with a code', async () => {
    await fc.assert(
      fc.asyncProperty(request, headers, body, async ([m, p], h, b) => {
        const hs: Record<string, string> = { ...h }
        if (h.authorization === 'valid') hs.authorization = `Bearer ${n.token}`
        if (h.authorization === 'secret') hs.authorization = `Bearer ${SECRET}`
        const init: RequestInit = { method: m, headers: hs }
        if (b !== undefined && m !== 'GET' && m !== 'HEAD') init.body = b
        const res = await n.app.request(p, init)
        if (res.headers.get('content-type')?.startsWith('text/event-stream')) {
          await res.body?.cancel()
          expect(res.status).toBe(200)
          return
        }
        const text = await res.text()
        expect(res.status, `${m} ${p} ${JSON.stringify(hs)} ${b} → ${text}`).not.toBe(500)
        expect(res.status).toBeLessThan(500)
        if (res.status >= 400 && m !== 'HEAD') {
          const parsed = JSON.parse(text)
          expect(parsed.error.code).toMatch(/^[a-z_]+$/)
          expect(typeof parsed.error.message).toBe('string')
          expect(text).not.toMatch(/\bat .+\.ts:\d+/) // no stack trace
        }
      }),
      { numRuns: 600 }
    )
    // Cancelled streams let go of their subscriptions (the poller keeps its one).
    await new Promise((r) => setTimeout(r, 50))
    expect(n.liveSubscriptions()).toBe(1)
  })
})
