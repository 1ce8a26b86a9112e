import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sha256Hex } from '../../services/handshake/secret.ts'
import { startNode, waitFor, type Node } from './fixture.ts'

/** Every route's success and error paths against one instance (store on PGlite, in-process bus). */
let n: Node

beforeAll(async () => {
  n = await startNode()
})
afterAll(async () => {
  await n?.close()
})

interface Answer {
  status: number
  body: any
  headers: Headers
}

async function req(
  method: string,
  path: string,
  {
    json,
    raw,
    headers = {},
    token,
  }: { json?: unknown; raw?: string; headers?: Record<string, string>; token?: string | null } = {}
): Promise<Answer> {
  const h: Record<string, string> = { ...headers }
  if (token !== null) h.authorization ??= `Bearer ${token ?? n.token}`
  let body: string | undefined
  if (json !== undefined) {
    h['content-type'] ??= 'application/json'
    body = JSON.stringify(json)
  } else if (raw !== undefined) {
    h['content-type'] ??= 'application/json'
    body = raw
  }
  const res = await n.app.request(path, {
    method,
    headers: h,
    ...(body === undefined ? {} : { body }),
  })
  const text = await res.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {
    // not JSON: keep the text for the assertion message
  }
  return { status: res.status, body: parsed, headers: res.headers }
}

const expectError = (a: Answer, status: number, code: string) => {
  expect({ status: a.status, code: a.body?.error?.code }, JSON.stringify(a.body)).toEqual({
    status,
    code,
  })
  expect(a.body.error.message).toEqual(expect.any(String))
}

async function plainUpstream(): Promise<any> {
  const a = await req('POST', '/api/v1/upstreams', {
    json: { kind: 'mqtt', host: 'mqtt://127.0.0.1', brokerPort: 1 },
  })
  expect(a.status).toBe(201)
  return a.body
}

describe('operator auth', () => {
  it('serves /healthz and /readyz without a token', async () => {
    expect(await req('GET', '/healthz', { token: null })).toMatchObject({
      status: 200,
      body: { status: 'ok' },
    })
    expect(await req('GET', '/readyz', { token: null })).toMatchObject({
      status: 200,
      body: { status: 'ready', checks: { store: true } },
    })
  })

  it.each([
    ['GET', '/api/v1/upstreams'],
    ['POST', '/api/v1/upstreams'],
    ['GET', '/api/v1/requests'],
    ['GET', '/api/v1/events'],
    ['GET', '/api/v1/instance'],
    ['GET', '/api/v1/cluster'],
    ['GET', '/api/v1/route?topic=a/b'],
    ['GET', '/api/v1/mesh'],
    ['GET', '/api/v1/links'],
    ['GET', '/te/v1/entities'],
    ['GET', '/te/v1/entities/device/main//'],
    ['GET', '/te/v1/entities/device/main///twin'],
    ['GET', '/te/v1/entities/device/main///twin/name'],
    ['POST', '/te/v1/entities'],
    ['PATCH', '/te/v1/entities/device/main//'],
    ['DELETE', '/te/v1/entities/device/main//'],
    ['PUT', '/te/v1/entities/device/main///twin'],
    ['DELETE', '/te/v1/entities/device/main///twin'],
    ['PUT', '/te/v1/entities/device/main///twin/name'],
    ['DELETE', '/te/v1/entities/device/main///twin/name'],
    ['GET', '/metrics'],
    ['GET', '/openapi.json'],
    ['GET', '/no/such/route'],
  ])(
    'refuses %s %s without a token, with a wrong one and with a malformed header',
    async (method, path) => {
      expectError(await req(method, path, { token: null }), 401, 'unauthorized')
      expectError(await req(method, path, { token: n.token + 'x' }), 401, 'unauthorized')
      expectError(
        await req(method, path, { headers: { authorization: `Basic ${n.token}` } }),
        401,
        'unauthorized'
      )
      expectError(
        await req(method, path, { headers: { authorization: 'Bearer a b' } }),
        401,
        'unauthorized'
      )
    }
  )

  it('answers a bearer challenge header on 401', async () => {
    const a = await req('GET', '/api/v1/upstreams', { token: null })
    expect(a.headers.get('www-authenticate')).toMatch(/^Bearer/)
  })

  it('serves /metrics, /openapi.json and /api/v1/instance with the token', async () => {
    await req('GET', '/api/v1/upstreams/nope')
    const m = await n.app.request('/metrics', { headers: { authorization: `Bearer ${n.token}` } })
    expect(m.status).toBe(200)
    // Counted by route pattern, not by raw path.
    expect(await m.text()).toMatch(
      /ub_http_requests_total\{method="GET",route="\/api\/v1\/upstreams\/:id",status="404"\} \d+/
    )
    expect(await req('GET', '/api/v1/instance')).toMatchObject({
      status: 200,
      body: {
        instanceId: n.instanceId,
        version: '0.0.0-test',
        services: ['store', 'handshake'],
        gateways: [], // none on this bus: see test/e2e/embedded.test.ts for a gateway's stats
      },
    })
  })
})

describe('errors', () => {
  it('answers an unknown route with 404 not_found', async () => {
    expectError(await req('GET', '/api/v1/nope'), 404, 'not_found')
    expectError(await req('PATCH', '/api/v1/upstreams'), 404, 'not_found')
    expectError(await req('GET', '/api/v1/handshake/nope', { token: null }), 404, 'not_found')
  })

  it('answers malformed JSON with 400 malformed_json', async () => {
    expectError(await req('POST', '/api/v1/upstreams', { raw: '{"host": ' }), 400, 'malformed_json')
    expectError(
      await req('POST', '/api/v1/handshake/requests', { raw: 'nope', token: null }),
      400,
      'malformed_json'
    )
  })

  it('answers a non-JSON content type with 415', async () => {
    const a = await req('POST', '/api/v1/upstreams', {
      raw: 'host=x',
      headers: { 'content-type': 'text/plain' },
    })
    expectError(a, 415, 'unsupported_media_type')
  })

  it.each([
    ['an unknown field', { host: 'mqtt://b.example', colour: 'red' }, /colour/],
    ['no host', {}, /host/],
    ['an http:// host', { host: 'http://b.example' }, /protocol/],
    ['a bare host', { host: 'b.example' }, /URL/],
    ['a host with a port', { host: 'mqtt://b.example:1883' }, /port/],
    ['a host with a path', { host: 'ws://b.example/mqtt' }, /scheme and a host/],
    ['a host with credentials', { host: 'mqtt://u:p@b.example' }, /credentials/],
    ['port 0', { host: 'mqtt://b.example', brokerPort: 0 }, /brokerPort/],
    ['port 65536', { host: 'mqtt://b.example', httpPort: 65_536 }, /httpPort/],
    ['a port as a string', { host: 'mqtt://b.example', brokerPort: '1883' }, /brokerPort/],
    ['a fractional port', { host: 'mqtt://b.example', brokerPort: 1.5 }, /brokerPort/],
    ['an unknown kind', { kind: 'amqp', host: 'mqtt://b.example' }, /kind|host/],
    [
      'httpPort on a plain MQTT upstream',
      { kind: 'mqtt', host: 'mqtt://b.example', httpPort: 80 },
      /httpPort/,
    ],
    ['an array', [], /./],
    ['null', null, /./],
  ])('refuses a new upstream with %s: 400 invalid_request', async (_what, body, mentions) => {
    const a = await req('POST', '/api/v1/upstreams', { json: body })
    expectError(a, 400, 'invalid_request')
    expect(a.body.error.message).toMatch(mentions)
  })

  it('refuses a 1 MB body with 413 payload_too_large, on operator and handshake routes', async () => {
    const big = JSON.stringify({ host: 'mqtt://b.example', pad: 'x'.repeat(1_048_576) })
    expectError(await req('POST', '/api/v1/upstreams', { raw: big }), 413, 'payload_too_large')
    expectError(
      await req('POST', '/api/v1/handshake/requests', { raw: big, token: null }),
      413,
      'payload_too_large'
    )
    // Without Content-Length (chunked), the limit still holds while reading.
    const stream = new Blob([big]).stream()
    const res = await n.app.request('/api/v1/upstreams', {
      method: 'POST',
      headers: { authorization: `Bearer ${n.token}`, 'content-type': 'application/json' },
      body: stream,
      duplex: 'half',
    } as RequestInit)
    expect(res.status).toBe(413)
  })

  it.each([
    ['GET', '/api/v1/upstreams/nope'],
    ['POST', '/api/v1/upstreams/nope/refresh'],
    ['POST', '/api/v1/upstreams/nope/activate'],
    ['POST', '/api/v1/upstreams/nope/deactivate'],
    ['POST', '/api/v1/upstreams/nope/request'],
    ['DELETE', '/api/v1/upstreams/nope'],
    ['GET', '/api/v1/upstreams/nope/transitions'],
    ['GET', '/api/v1/upstreams/nope/replay'],
    ['GET', '/api/v1/requests/nope'],
    ['POST', '/api/v1/requests/nope/accept'],
    ['POST', '/api/v1/requests/nope/decline'],
    ['POST', '/api/v1/requests/nope/revoke'],
    ['GET', '/api/v1/requests/nope/transitions'],
  ])('answers %s %s for an unknown id with 404 not_found', async (method, path) => {
    expectError(await req(method, path), 404, 'not_found')
  })

  it('answers PUT bindings for an unknown id with 404', async () => {
    expectError(
      await req('PUT', '/api/v1/upstreams/nope/bindings', { json: [{ source: 'a', target: 'b' }] }),
      404,
      'not_found'
    )
  })

  it('refuses bad paging parameters with 400', async () => {
    const up = await plainUpstream()
    expectError(
      await req('GET', `/api/v1/upstreams/${up.id}/transitions?limit=0`),
      400,
      'invalid_request'
    )
    expectError(
      await req('GET', `/api/v1/upstreams/${up.id}/transitions?after=-1`),
      400,
      'invalid_request'
    )
    expectError(
      await req('GET', `/api/v1/upstreams/${up.id}/replay?to=abc`),
      400,
      'invalid_request'
    )
  })
})

describe('bindings and activation', () => {
  it.each([
    ['a + inside a level', [{ source: 'a/b+/c', target: 'x' }]],
    ['a + in the target', [{ source: 'a/+/b', target: 'x/+' }]],
    ['a capture the source lacks', [{ source: 'a/+/b', target: 'x/{2}' }]],
    ['a # before the end', [{ source: 'a/#/b', target: 'x' }]],
    ['an unknown direction', [{ source: 'a', target: 'x', direction: 'up' }]],
    [
      'a remap coming in that cannot be inverted',
      [{ source: 'a/+', target: 'x', direction: 'in' }],
    ],
    ['an empty level', [{ source: 'a//b', target: 'x' }]],
    ['a leading $', [{ source: '$SYS/x', target: 'x' }]],
    ['a leading /', [{ source: '/a', target: 'x' }]],
    ['a trailing /', [{ source: 'a', target: 'x/' }]],
    ['an empty namespace', [{ source: '', target: 'x' }]],
    ['an unknown field', [{ source: 'a', target: 'x', qos: 1 }]],
    ['a missing target', [{ source: 'a' }]],
    [
      'the same source twice',
      [
        { source: 'a', target: 'x' },
        { source: 'a', target: 'y' },
      ],
    ],
    ['an object instead of a list', { source: 'a', target: 'x' }],
  ])('refuses bindings with %s: 400 invalid_request', async (_what, body) => {
    const up = await plainUpstream()
    expectError(
      await req('PUT', `/api/v1/upstreams/${up.id}/bindings`, { json: body }),
      400,
      'invalid_request'
    )
  })

  it('activates a plain MQTT upstream (Approved from the start) once it has a binding', async () => {
    const up = await plainUpstream()
    expect(up).toMatchObject({ kind: 'mqtt', status: 'Approved', grants: ['#'] })
    const refused = await req('POST', `/api/v1/upstreams/${up.id}/activate`)
    expectError(refused, 409, 'invalid_transition')
    expect(refused.body.error.message).toMatch(/binding/)
    const bound = await req('PUT', `/api/v1/upstreams/${up.id}/bindings`, {
      json: [{ source: 'plant1/line3', target: 'acme/plant1/line3' }],
    })
    expect(bound).toMatchObject({
      status: 200,
      body: { bindings: [{ source: 'plant1/line3', target: 'acme/plant1/line3' }] },
    })
    expect(await req('POST', `/api/v1/upstreams/${up.id}/activate`)).toMatchObject({
      status: 200,
      body: { status: 'Active', active: true },
    })
    // An Active upstream keeps at least one binding.
    expectError(
      await req('PUT', `/api/v1/upstreams/${up.id}/bindings`, { json: [] }),
      409,
      'invalid_transition'
    )
    expect(await req('POST', `/api/v1/upstreams/${up.id}/deactivate`)).toMatchObject({
      status: 200,
      body: { status: 'Approved' },
    })
    expectError(
      await req('POST', `/api/v1/upstreams/${up.id}/deactivate`),
      409,
      'invalid_transition'
    )
  })

  it('refuses to activate or bind a Pending upstream: 409 invalid_transition', async () => {
    const created = await req('POST', '/api/v1/upstreams', {
      json: { host: 'mqtt://127.0.0.1', httpPort: 1 },
    })
    expect(created).toMatchObject({
      status: 201,
      body: { status: 'Pending', brokerPort: 1883, httpPort: 1 },
    })
    expect(created.body.lastError).toMatch(/cannot reach/)
    const id = created.body.id
    expectError(await req('POST', `/api/v1/upstreams/${id}/activate`), 409, 'invalid_transition')
    expectError(
      await req('PUT', `/api/v1/upstreams/${id}/bindings`, {
        json: [{ source: 'a', target: 'b' }],
      }),
      409,
      'invalid_transition'
    )
    // A second upstream to the same server would get the first one's request back: refused.
    expectError(
      await req('POST', '/api/v1/upstreams', { json: { host: 'mqtt://127.0.0.1', httpPort: 1 } }),
      409,
      'already_exists'
    )
    // Deleting one that never reached its server still works: there was nothing to withdraw.
    const del = await req('DELETE', `/api/v1/upstreams/${id}`)
    expect(del).toMatchObject({
      status: 200,
      body: { status: 'Deleted', withdrawal: { ok: true, error: null } },
    })
  })

  it('never shows a password or a TLS private key', async () => {
    const CA = '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----'
    const a = await req('POST', '/api/v1/upstreams', {
      json: {
        kind: 'mqtt',
        host: 'mqtts://127.0.0.1',
        brokerPort: 8883,
        username: 'u',
        password: 'hunter2',
        // PEM text (a value that is not is read as a file's path: tls-files.ts).
        tls: { key: '-----BEGIN PRIVATE KEY-----\nPRIVATE\n-----END PRIVATE KEY-----', ca: CA },
      },
    })
    expect(a.status).toBe(201)
    expect(a.body).toMatchObject({ username: 'u', tls: { ca: CA } })
    const shown = JSON.stringify([
      a.body,
      (await req('GET', `/api/v1/upstreams/${a.body.id}`)).body,
      (await req('GET', '/api/v1/upstreams')).body,
    ])
    expect(shown).not.toMatch(/hunter2|PRIVATE/)
  })

  it('includes the link state the supervisor wrote, null when absent', async () => {
    const up = await plainUpstream()
    expect((await req('GET', `/api/v1/upstreams/${up.id}`)).body.link).toBeNull()
    const kv = await n.bus.kv('links')
    const link = { state: 'Forwarding', lastError: null, forwarded: 3, waiting: 0, lagMs: 12 }
    await kv.put(up.id, new TextEncoder().encode(JSON.stringify(link)))
    expect((await req('GET', `/api/v1/upstreams/${up.id}`)).body.link).toEqual(link)
    // ... and every link in one answer, by upstream id (the console's table).
    const all = await req('GET', '/api/v1/links')
    expect(all.status).toBe(200)
    expect(all.body.items[up.id]).toEqual(link)
    expect(all.body.omitted).toBe(0)
  })

  it('lists upstreams, filtered by status', async () => {
    const up = await plainUpstream()
    const all = await req('GET', '/api/v1/upstreams')
    expect(all.body.map((u: any) => u.id)).toContain(up.id)
    const unreachable = await req('POST', '/api/v1/upstreams', {
      json: { host: 'mqtt://127.0.0.2', httpPort: 1 },
    })
    const pending = await req('GET', '/api/v1/upstreams?status=Pending')
    const ids = pending.body.map((u: any) => u.id)
    expect(ids).toContain(unreachable.body.id)
    expect(ids).not.toContain(up.id) // Approved
    expect(pending.body.every((u: any) => u.status === 'Pending')).toBe(true)
    await req('DELETE', `/api/v1/upstreams/${unreachable.body.id}`)
  })

  it('replays an upstream to a given seq, with the chain verified', async () => {
    const up = await plainUpstream()
    await req('PUT', `/api/v1/upstreams/${up.id}/bindings`, {
      json: [{ source: 'a', target: 'b' }],
    })
    await req('POST', `/api/v1/upstreams/${up.id}/activate`)
    const log = await req('GET', `/api/v1/upstreams/${up.id}/transitions?limit=1`)
    expect(log.body.items).toHaveLength(1)
    const rest = await req('GET', `/api/v1/upstreams/${up.id}/transitions?after=${log.body.next}`)
    expect(rest.body.items.map((t: any) => t.to).at(-1)).toBe('Active')
    const at = log.body.items[0].seq
    const r = await req('GET', `/api/v1/upstreams/${up.id}/replay?to=${at}`)
    expect(r).toMatchObject({
      status: 200,
      body: { to: at, state: 'Approved', verify: { ok: true } },
    })
  })
})

describe('handshake endpoints (server side)', () => {
  const secret = 'the-downstream-secret'
  const body = (instanceId: string) => ({ instanceId, secretHash: sha256Hex(secret) })

  it('records a request, answers status and grants to the secret holder only, and lets it withdraw', async () => {
    const sent = await req('POST', '/api/v1/handshake/requests', {
      json: body('UB_test1'),
      token: null,
    })
    expect(sent).toMatchObject({
      status: 202,
      body: { status: 'Pending', created: true, instanceId: n.instanceId },
    })
    const id = sent.body.requestId
    // The same instance again: the live request, not a second one.
    const again = await req('POST', '/api/v1/handshake/requests', {
      json: body('UB_test1'),
      token: null,
    })
    expect(again).toMatchObject({ status: 202, body: { requestId: id, created: false } })
    // The same instance with another secret: a request of its own (the instance ID is public,
    // so it holds nothing), and nothing about the first one in the answer.
    const other = await req('POST', '/api/v1/handshake/requests', {
      json: { instanceId: 'UB_test1', secretHash: sha256Hex('another-secret') },
      token: null,
    })
    expect(other).toMatchObject({ status: 202, body: { status: 'Pending', created: true } })
    expect(other.body.requestId).not.toBe(id)
    expect(JSON.stringify(other.body)).not.toContain(id)
    await req('POST', `/api/v1/requests/${other.body.requestId}/decline`)

    expect(
      (await req('GET', '/api/v1/requests?status=Pending')).body.filter(
        (r: any) => r.instanceId === 'UB_test1'
      )
    ).toEqual([expect.objectContaining({ id, sourceIp: 'unknown', status: 'Pending', grants: [] })])

    expectError(
      await req('GET', `/api/v1/handshake/requests/${id}`, { token: null }),
      401,
      'unauthorized'
    )
    expectError(
      await req('GET', `/api/v1/handshake/requests/${id}`, { token: 'wrong' }),
      401,
      'unauthorized'
    )
    // The admin token is not the request's secret.
    expectError(await req('GET', `/api/v1/handshake/requests/${id}`), 401, 'unauthorized')
    expectError(
      await req('GET', '/api/v1/handshake/requests/nope', { token: secret }),
      404,
      'not_found'
    )
    expect(await req('GET', `/api/v1/handshake/requests/${id}`, { token: secret })).toMatchObject({
      status: 200,
      body: { requestId: id, status: 'Pending', grants: [], instanceId: n.instanceId },
    })

    expectError(
      await req('POST', `/api/v1/requests/${id}/accept`, { json: { grants: ['a/+'] } }),
      400,
      'invalid_request'
    )
    expectError(
      await req('POST', `/api/v1/requests/${id}/accept`, { json: { grants: [] } }),
      400,
      'invalid_request'
    )
    expectError(
      await req('POST', `/api/v1/requests/${id}/accept`, { json: { grant: ['a'] } }),
      400,
      'invalid_request'
    )
    expect(
      await req('POST', `/api/v1/requests/${id}/accept`, {
        json: { grants: ['acme/plant1', 'acme/plant2'] },
      })
    ).toMatchObject({
      status: 200,
      body: { status: 'Accepted', grants: ['acme/plant1', 'acme/plant2'] },
    })
    expectError(await req('POST', `/api/v1/requests/${id}/decline`), 409, 'invalid_transition')
    expect(
      (await req('GET', `/api/v1/handshake/requests/${id}`, { token: secret })).body
    ).toMatchObject({ status: 'Accepted', grants: ['acme/plant1', 'acme/plant2'] })

    expectError(
      await req('DELETE', `/api/v1/handshake/requests/${id}`, { token: 'wrong' }),
      401,
      'unauthorized'
    )
    expect(
      await req('DELETE', `/api/v1/handshake/requests/${id}`, { token: secret })
    ).toMatchObject({ status: 200, body: { status: 'Withdrawn' } })
    expectError(
      await req('DELETE', `/api/v1/handshake/requests/${id}`, { token: secret }),
      409,
      'invalid_transition'
    )
    expectError(await req('POST', `/api/v1/requests/${id}/revoke`), 409, 'invalid_transition')
  })

  it.each([
    ['an unknown field', { ...body('UB_x'), extra: 1 }],
    ['a short secretHash', { instanceId: 'UB_x', secretHash: 'abc' }],
    [
      'an uppercase secretHash',
      { instanceId: 'UB_x', secretHash: sha256Hex(secret).toUpperCase() },
    ],
    ['an instance ID with a space', { instanceId: 'UB x', secretHash: sha256Hex(secret) }],
    ['no instance ID', { secretHash: sha256Hex(secret) }],
  ])('refuses a handshake request with %s: 400 invalid_request', async (_what, b) => {
    expectError(
      await req('POST', '/api/v1/handshake/requests', { json: b, token: null }),
      400,
      'invalid_request'
    )
  })
})

describe('rate limit and source address', () => {
  it('answers 429 rate_limited past the burst, per source IP, with Retry-After', async () => {
    const m = await startNode({ rate: { perMinute: 1, burst: 2 }, trustProxy: true })
    try {
      const send = (ip: string, i: number) =>
        m.api('/api/v1/handshake/requests', {
          method: 'POST',
          // The client's own claim comes first; our proxy appends the address it saw.
          headers: { authorization: '', 'x-forwarded-for': `203.0.113.66, ${ip}` },
          json: { instanceId: `UB_rl${ip.replace(/\./g, '')}${i}`, secretHash: sha256Hex('s') },
        })
      expect((await send('192.0.2.1', 1)).status).toBe(202)
      expect((await send('192.0.2.1', 2)).status).toBe(202)
      const third = await send('192.0.2.1', 3)
      expect(third.status).toBe(429)
      expect(third.headers.get('retry-after')).toMatch(/^\d+$/)
      expect(((await third.json()) as any).error.code).toBe('rate_limited')
      // Another address has its own bucket; the recorded source IP is the one our proxy saw,
      // never the client's claim (which would let it pick its own rate-limit bucket).
      expect((await send('192.0.2.2', 1)).status).toBe(202)
      const reqs = await m.call('/api/v1/requests')
      expect(reqs.map((r: any) => r.sourceIp).sort()).toEqual([
        '192.0.2.1',
        '192.0.2.1',
        '192.0.2.2',
      ])
    } finally {
      await m.close()
    }
  })

  it('ignores X-Forwarded-For unless trustProxy is set', async () => {
    const res = await n.api('/api/v1/handshake/requests', {
      method: 'POST',
      headers: { authorization: '', 'x-forwarded-for': '203.0.113.9' },
      json: { instanceId: 'UB_xff', secretHash: sha256Hex('s') },
    })
    expect(res.status).toBe(202)
    const { requestId } = (await res.json()) as any
    expect(await n.call(`/api/v1/requests/${requestId}`)).toMatchObject({
      instanceId: 'UB_xff',
      sourceIp: '127.0.0.1',
    })
  })
})

describe('openapi', () => {
  it('describes every route, generated from the validating schemas', async () => {
    const doc = await req('GET', '/openapi.json')
    expect(doc.status).toBe(200)
    expect(doc.body.openapi).toBe('3.1.0')
    const paths = Object.entries(doc.body.paths as Record<string, Record<string, unknown>>).flatMap(
      ([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`)
    )
    expect(paths.sort()).toEqual(
      [
        'POST /api/v1/upstreams',
        'GET /api/v1/upstreams',
        'GET /api/v1/upstreams/{id}',
        'DELETE /api/v1/upstreams/{id}',
        'PATCH /api/v1/upstreams/{id}',
        'POST /api/v1/upstreams/{id}/refresh',
        'PUT /api/v1/upstreams/{id}/bindings',
        'POST /api/v1/upstreams/{id}/activate',
        'POST /api/v1/upstreams/{id}/deactivate',
        'POST /api/v1/upstreams/{id}/request',
        'GET /api/v1/upstreams/{id}/transitions',
        'GET /api/v1/upstreams/{id}/replay',
        'POST /api/v1/handshake/requests',
        'GET /api/v1/handshake/requests/{requestId}',
        'DELETE /api/v1/handshake/requests/{requestId}',
        'POST /api/v1/handshake/requests/{requestId}/topology',
        'GET /api/v1/requests',
        'GET /api/v1/requests/{id}',
        'POST /api/v1/requests/{id}/accept',
        'POST /api/v1/requests/{id}/decline',
        'POST /api/v1/requests/{id}/revoke',
        'GET /api/v1/requests/{id}/transitions',
        'GET /api/v1/requests/{id}/replay',
        'GET /api/v1/events',
        'GET /api/v1/instance',
        'GET /api/v1/cluster',
        'GET /api/v1/route',
        'GET /api/v1/mesh',
        'GET /api/v1/links',
        'GET /te/v1/entities',
        'GET /te/v1/entities/{topic-id}',
        'GET /te/v1/entities/{topic-id}/twin',
        'GET /te/v1/entities/{topic-id}/twin/{key}',
        'POST /te/v1/entities',
        'PATCH /te/v1/entities/{topic-id}',
        'DELETE /te/v1/entities/{topic-id}',
        'PUT /te/v1/entities/{topic-id}/twin',
        'DELETE /te/v1/entities/{topic-id}/twin',
        'PUT /te/v1/entities/{topic-id}/twin/{key}',
        'DELETE /te/v1/entities/{topic-id}/twin/{key}',
        'GET /healthz',
        'GET /readyz',
        'GET /metrics',
        'GET /openapi.json',
      ].sort()
    )
    expect(doc.body.components.schemas.CreateUnsUpstream.properties).toHaveProperty('brokerPort')
    expect(doc.body.components.schemas.Binding.additionalProperties).toBe(false)
  })
})

describe('when the store is gone', () => {
  it('answers 503 with the bus code, not 500', async () => {
    const m = await startNode()
    try {
      await m.stopStore()
      const res = await m.api('/api/v1/upstreams')
      expect(res.status).toBe(503)
      expect(((await res.json()) as any).error.code).toBe('no_responders')
    } finally {
      await m.close()
    }
  })
})

describe('refresh', () => {
  it('refreshes a plain MQTT upstream without calling anyone', async () => {
    const up = await plainUpstream()
    expect(await req('POST', `/api/v1/upstreams/${up.id}/refresh`)).toMatchObject({
      status: 200,
      body: { id: up.id, status: 'Approved' },
    })
  })

  it('says the withdrawal failed when the upstream server is gone at delete', async () => {
    const b = await startNode()
    let bClosed = false
    try {
      const created = await req('POST', '/api/v1/upstreams', {
        json: { host: 'mqtt://127.0.0.1', httpPort: Number(new URL(b.url).port) },
      })
      expect(created.status).toBe(201)
      const id = created.body.id
      await waitFor(async () => (await req('GET', `/api/v1/upstreams/${id}`)).body.remoteRequestId)
      await b.close()
      bClosed = true
      const del = await req('DELETE', `/api/v1/upstreams/${id}`)
      expect(del).toMatchObject({
        status: 200,
        body: {
          status: 'Deleted',
          withdrawal: { ok: false, error: expect.stringMatching(/cannot reach/) },
        },
      })
    } finally {
      if (!bClosed) await b.close()
    }
  })
})
