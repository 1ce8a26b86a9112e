import { afterEach, describe, expect, it } from 'vitest'
import { sha256Hex } from '../../services/handshake/secret.ts'
import { startNode, waitFor, type Node } from './fixture.ts'

/**
 * Handshake squatting and flooding (issue 10): an instance ID is public, so a request under it
 * must hold nothing another secret needs, disclose nothing, and not wait for ever; the lists are
 * paged; the rate limit counts an IPv6 client by its /64.
 */
describe('handshake requests: squatting, bounds, expiry, paging', () => {
  let n: Node | undefined
  afterEach(async () => {
    await n?.close()
    n = undefined
  })

  const submit = (node: Node, instanceId: string, secret: string, ip?: string) =>
    node.api('/api/v1/handshake/requests', {
      method: 'POST',
      json: { instanceId, secretHash: sha256Hex(secret) },
      headers: { authorization: '', ...(ip ? { 'x-forwarded-for': ip } : {}) },
    })
  const body = async (res: Response) => ({ status: res.status, body: (await res.json()) as any })
  const metric = async (node: Node, name: string) => {
    const text = await node.metrics.metrics()
    const lines = text.split('\n').filter((l) => l.startsWith(name))
    return lines.reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
  }

  it('a squatter under the same instance ID learns nothing and blocks nothing: both wait, the operator sees both', async () => {
    n = await startNode({ trustProxy: true })
    const squat = await body(await submit(n, 'UB_victim', 'squatter-secret', '203.0.113.9'))
    expect(squat).toMatchObject({ status: 202, body: { status: 'Pending', created: true } })
    const real = await body(await submit(n, 'UB_victim', 'real-secret', '198.51.100.7'))
    // Before: 409 already_exists naming the squatter's request id.
    expect(real).toMatchObject({ status: 202, body: { status: 'Pending', created: true } })
    expect(JSON.stringify(real.body)).not.toContain(squat.body.requestId)
    expect(JSON.stringify(real.body)).not.toContain('203.0.113.9')
    // The real instance polls its own request with its own secret.
    const status = await n.api(`/api/v1/handshake/requests/${real.body.requestId}`, {
      headers: { authorization: 'Bearer real-secret' },
    })
    expect(status.status).toBe(200)
    // The operator sees both, with their source IPs, and accepts the real one.
    const mine = await n.call('/api/v1/requests?instanceId=UB_victim')
    expect(mine.map((r: any) => [r.id, r.sourceIp])).toEqual([
      [squat.body.requestId, '203.0.113.9'],
      [real.body.requestId, '198.51.100.7'],
    ])
    await n.call(`/api/v1/requests/${real.body.requestId}/accept`, { method: 'POST' })
    // One Accepted per instance: its bridges share one client-id namespace.
    const second = await n.api(`/api/v1/requests/${squat.body.requestId}/accept`, {
      method: 'POST',
    })
    expect(await body(second)).toMatchObject({
      status: 409,
      body: { error: { code: 'already_accepted' } },
    })
    // A repeat with the same secret still finds its own request.
    const again = await body(await submit(n, 'UB_victim', 'real-secret', '198.51.100.7'))
    expect(again.body).toMatchObject({ requestId: real.body.requestId, created: false })
  })

  it('caps Pending per instance ID, per source network and in all, with neutral answers and counters', async () => {
    n = await startNode({
      trustProxy: true,
      pendingLimits: { perInstance: 2, perNetwork: 3, total: 6 },
    })
    expect((await submit(n, 'UB_one', 's1', '192.0.2.1')).status).toBe(202)
    expect((await submit(n, 'UB_one', 's2', '192.0.2.2')).status).toBe(202)
    const third = await body(await submit(n, 'UB_one', 's3', '192.0.2.3'))
    expect(third).toEqual({
      status: 429,
      body: {
        error: { code: 'too_many_pending', message: 'too many pending requests; try again later' },
      },
    })
    // Per network: one IPv6 /64 is one network, whatever the addresses in it.
    for (const host of ['1', '2', '3'])
      expect((await submit(n, `UB_n${host}`, 's', `2001:db8:1:2::${host}`)).status).toBe(202)
    const fourth = await body(await submit(n, 'UB_n4', 's', '2001:db8:1:2:ffff::4'))
    expect(fourth).toEqual(third) // the same answer: nothing says which bound it was
    // In all: 6 Pending with this one.
    expect((await submit(n, 'UB_other', 's', '2001:db8:9::1')).status).toBe(202)
    const full = await body(await submit(n, 'UB_more', 's', '2001:db8:8::1'))
    expect(full).toMatchObject({ status: 503, body: { error: { code: 'pending_capacity' } } })
    expect(await metric(n, 'ub_handshake_pending_refused_total{reason="instance"}')).toBe(1)
    expect(await metric(n, 'ub_handshake_pending_refused_total{reason="network"}')).toBe(1)
    expect(await metric(n, 'ub_handshake_pending_refused_total{reason="capacity"}')).toBe(1)
    // Deciding one frees its slot.
    const [oldest] = await n.call('/api/v1/requests?status=Pending&limit=1')
    await n.call(`/api/v1/requests/${oldest.id}/decline`, { method: 'POST' })
    expect((await submit(n, 'UB_more', 's', '2001:db8:8::1')).status).toBe(202)
  })

  it('rate-limits an IPv6 client by its /64, an IPv4 client by its address, and counts it', async () => {
    n = await startNode({
      trustProxy: true,
      rate: { perMinute: 0.1, burst: 2 },
      pendingLimits: { perInstance: 100, perNetwork: 100, total: 100 },
    })
    expect((await submit(n, 'UB_r1', 'a', '2001:db8:aa:bb::1')).status).toBe(202)
    expect((await submit(n, 'UB_r2', 'a', '2001:db8:aa:bb::2')).status).toBe(202)
    // Another address of the same /64: the same bucket (before: a fresh one per address).
    const third = await body(await submit(n, 'UB_r3', 'a', '2001:db8:aa:bb:1:2:3:4'))
    expect(third).toMatchObject({ status: 429, body: { error: { code: 'rate_limited' } } })
    expect((await submit(n, 'UB_r4', 'a', '2001:db8:aa:bc::1')).status).toBe(202)
    expect((await submit(n, 'UB_r5', 'a', '192.0.2.10')).status).toBe(202)
    expect((await submit(n, 'UB_r6', 'a', '192.0.2.11')).status).toBe(202)
    expect(await metric(n, 'ub_handshake_rate_limited_total')).toBe(1)
    expect(await metric(n, 'ub_handshake_rate_keys')).toBe(4)
  })

  it('pages the request and upstream lists in a stable order with a cursor', async () => {
    n = await startNode({ pendingLimits: { perInstance: 200, perNetwork: 200, total: 200 } })
    const ids: string[] = []
    for (let i = 0; i < 105; i++) {
      const res = await body(await submit(n, `UB_p${String(i).padStart(3, '0')}`, 's'))
      ids.push(res.body.requestId)
    }
    // Unpaged callers get a bounded first page and a cursor.
    const first = await n.api('/api/v1/requests')
    expect(((await first.json()) as unknown[]).length).toBe(100)
    expect(first.headers.get('x-next-cursor')).toBeTruthy()
    const seen: string[] = []
    let path: string | null = '/api/v1/requests?limit=40'
    while (path) {
      const res: Response = await n.api(path)
      seen.push(...((await res.json()) as any[]).map((r) => r.id))
      // New rows sort last: they never shift a page already read.
      if (seen.length === 40) await submit(n, 'UB_late', 's')
      const link = res.headers.get('link')
      path = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1]! : null
    }
    expect(seen.slice(0, 105)).toEqual(ids)
    expect(seen.length).toBe(106)
    const bad = await body(await n.api('/api/v1/requests?cursor=nonsense'))
    expect(bad).toMatchObject({ status: 400, body: { error: { code: 'invalid_request' } } })
    const tooMany = await body(await n.api('/api/v1/requests?limit=5000'))
    expect(tooMany).toMatchObject({ status: 400, body: { error: { code: 'invalid_request' } } })

    for (let i = 0; i < 3; i++)
      await n.call('/api/v1/upstreams', {
        method: 'POST',
        json: { kind: 'mqtt', host: `mqtt://h${i}.example` },
      })
    const page = await n.api('/api/v1/upstreams?limit=2')
    expect(((await page.json()) as unknown[]).length).toBe(2)
    const rest = await n.call(`/api/v1/upstreams?cursor=${page.headers.get('x-next-cursor')}`)
    expect(rest.map((u: any) => u.host)).toEqual(['mqtt://h2.example'])
  })

  it('expires a Pending request through the machine (actor system, audited), freeing its slot', async () => {
    n = await startNode({
      pendingTtlMs: 300,
      pendingLimits: { perInstance: 1, perNetwork: 10, total: 10 },
    })
    const sent = await body(await submit(n, 'UB_late', 'secret'))
    const id = sent.body.requestId
    await waitFor(async () => (await n!.call(`/api/v1/requests/${id}`)).status === 'Expired')
    const log = await n.call(`/api/v1/requests/${id}/transitions`)
    expect(log.items.at(-1)).toMatchObject({
      event: { type: 'request.expire' },
      actor: { kind: 'system' },
      from: 'Pending',
      to: 'Expired',
      verified: true,
    })
    expect((await n.call(`/api/v1/requests/${id}/replay`)).verify.ok).toBe(true)
    // Its holder sees Expired; asking again (the poller does) gets a fresh request.
    const status = await n.call(`/api/v1/handshake/requests/${id}`, {
      headers: { authorization: 'Bearer secret' },
    })
    expect(status.status).toBe('Expired')
    const again = await body(await submit(n, 'UB_late', 'secret'))
    expect(again.body).toMatchObject({ created: true, status: 'Pending' })
    expect(again.body.requestId).not.toBe(id)
  })
})

describe('a downstream whose request expired asks again', () => {
  let a: Node | undefined
  let b: Node | undefined
  afterEach(async () => {
    await Promise.all([a?.close(), b?.close()])
  })

  it('the poller drops the expired request id and sends a new request', async () => {
    ;[a, b] = await Promise.all([startNode(), startNode({ pendingTtlMs: 400 })])
    const up = await a.call('/api/v1/upstreams', {
      method: 'POST',
      json: { host: 'mqtt://127.0.0.1', brokerPort: 1883, httpPort: Number(new URL(b.url).port) },
    })
    const first = up.remoteRequestId
    await waitFor(async () => (await b!.call(`/api/v1/requests/${first}`)).status === 'Expired')
    const again = await waitFor(async () => {
      const now = await a!.call(`/api/v1/upstreams/${up.id}`)
      return now.remoteRequestId && now.remoteRequestId !== first ? now : null
    })
    expect(again.status).toBe('Pending')
    expect(await b.call(`/api/v1/requests/${again.remoteRequestId}`)).toMatchObject({
      status: 'Pending',
      instanceId: a.instanceId,
    })
  })
})
