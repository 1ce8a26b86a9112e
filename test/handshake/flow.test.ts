import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { freePort, readSse, startNode, waitFor, type Node } from './fixture.ts'

/** Two instances in this process, each with its own bus, store and socket: the whole handshake over HTTP. */
describe('handshake between two instances (in-process, real sockets)', () => {
  let a: Node
  let b: Node
  beforeEach(async () => {
    ;[a, b] = await Promise.all([startNode(), startNode()])
  })
  afterEach(async () => {
    await Promise.all([a?.close(), b?.close()])
  })

  const hostOf = (n: Node) => ({
    host: 'mqtt://127.0.0.1',
    brokerPort: 1883,
    httpPort: Number(new URL(n.url).port),
  })

  it('requests, is accepted without a refresh, binds, activates; both logs and SSE show it in order', async () => {
    const up = await a.call('/api/v1/upstreams', { method: 'POST', json: hostOf(b) })
    expect(up).toMatchObject({ status: 'Pending', kind: 'uns', active: false, lastError: null })
    expect(up.remoteRequestId).toEqual(expect.any(String))

    const [req] = await b.call('/api/v1/requests?status=Pending')
    expect(req).toMatchObject({
      id: up.remoteRequestId,
      instanceId: a.instanceId,
      sourceIp: '127.0.0.1',
      status: 'Pending',
    })

    const accepted = await b.call(`/api/v1/requests/${req.id}/accept`, {
      method: 'POST',
      json: { grants: ['acme'] },
    })
    expect(accepted).toMatchObject({ status: 'Accepted', grants: ['acme'] })

    const approved = await waitFor(async () => {
      const u = await a.call(`/api/v1/upstreams/${up.id}`)
      return u.status === 'Approved' && u
    })
    expect(approved).toMatchObject({ grants: ['acme'], link: null, lastError: null })

    await a.call(`/api/v1/upstreams/${up.id}/bindings`, {
      method: 'PUT',
      json: [{ source: 'plant1/line3', target: 'acme/plant1/line3' }],
    })
    const active = await a.call(`/api/v1/upstreams/${up.id}/activate`, { method: 'POST' })
    expect(active).toMatchObject({ status: 'Active', active: true })

    const aLog = await a.call(`/api/v1/upstreams/${up.id}/transitions`)
    expect(aLog.items.map((t: any) => [t.event.type, t.from, t.to, t.actor.kind])).toEqual([
      [expect.any(String), null, 'Pending', 'operator'],
      ['upstream.approve', 'Pending', 'Approved', 'remote'],
      ['upstream.bindings.set', 'Approved', 'Approved', 'operator'],
      ['upstream.activate', 'Approved', 'Active', 'operator'],
    ])
    expect(aLog.items[1].actor).toEqual({ kind: 'remote', id: b.instanceId })
    const bLog = await b.call(`/api/v1/requests/${req.id}/transitions`)
    expect(bLog.items.map((t: any) => [t.from, t.to, t.actor.kind])).toEqual([
      [null, 'Pending', 'remote'],
      ['Pending', 'Accepted', 'operator'],
    ])

    const seen = await readSse(a.url + '/api/v1/events', {
      token: a.token,
      lastEventId: '0',
      until: (e) => e.filter((x) => x.event === 'transition').length >= 4,
    })
    const trans = seen.filter((e) => e.event === 'transition').map((e) => JSON.parse(e.data))
    expect(trans.map((t) => t.to)).toEqual(['Pending', 'Approved', 'Approved', 'Active'])
    expect(seen.filter((e) => e.event === 'transition').map((e) => Number(e.id))).toEqual(
      trans.map((t) => t.globalSeq)
    )

    const replay = await a.call(`/api/v1/upstreams/${up.id}/replay`)
    expect(replay).toMatchObject({
      state: 'Active',
      verify: { ok: true, rows: 4 },
      matchesStored: true,
    })
  })

  async function approvedUpstream(): Promise<{ up: any; req: any }> {
    const up = await a.call('/api/v1/upstreams', { method: 'POST', json: hostOf(b) })
    const req = await b.call(`/api/v1/requests/${up.remoteRequestId}/accept`, { method: 'POST' })
    expect(req.grants).toEqual(['#'])
    await waitFor(async () => (await a.call(`/api/v1/upstreams/${up.id}`)).status === 'Approved')
    return { up, req }
  }

  it('turns Declined when the server declines, and asks again with a new request', async () => {
    const up = await a.call('/api/v1/upstreams', { method: 'POST', json: hostOf(b) })
    await b.call(`/api/v1/requests/${up.remoteRequestId}/decline`, { method: 'POST' })
    await waitFor(async () => (await a.call(`/api/v1/upstreams/${up.id}`)).status === 'Declined')
    // Binding or activating a Declined upstream is refused with the machine's reason.
    const res = await a.api(`/api/v1/upstreams/${up.id}/activate`, { method: 'POST' })
    expect(res.status).toBe(409)
    expect(((await res.json()) as any).error.code).toBe('invalid_transition')

    const again = await a.call(`/api/v1/upstreams/${up.id}/request`, { method: 'POST' })
    expect(again).toMatchObject({ status: 'Pending', lastError: null })
    expect(again.remoteRequestId).not.toBe(up.remoteRequestId)
    const pending = await b.call('/api/v1/requests?status=Pending')
    expect(pending.map((r: any) => r.id)).toEqual([again.remoteRequestId])
  })

  it('turns Revoked when the server revokes an Active upstream', async () => {
    const { up, req } = await approvedUpstream()
    await a.call(`/api/v1/upstreams/${up.id}/bindings`, {
      method: 'PUT',
      json: [{ source: 'x', target: 'y/z' }],
    })
    await a.call(`/api/v1/upstreams/${up.id}/activate`, { method: 'POST' })
    await b.call(`/api/v1/requests/${req.id}/revoke`, { method: 'POST' })
    const revoked = await waitFor(async () => {
      const u = await a.call(`/api/v1/upstreams/${up.id}`)
      return u.status === 'Revoked' && u
    })
    expect(revoked.active).toBe(false)
    const log = await a.call(`/api/v1/upstreams/${up.id}/transitions`)
    expect(log.items.at(-1)).toMatchObject({
      event: { type: 'upstream.revoke' },
      from: 'Active',
      to: 'Revoked',
      actor: { kind: 'remote', id: b.instanceId },
    })
  })

  it('withdraws the request on the server when the upstream is deleted', async () => {
    const { up, req } = await approvedUpstream()
    const deleted = await a.call(`/api/v1/upstreams/${up.id}`, { method: 'DELETE' })
    expect(deleted).toMatchObject({ status: 'Deleted', withdrawal: { ok: true, error: null } })
    expect(await b.call(`/api/v1/requests/${req.id}`)).toMatchObject({ status: 'Withdrawn' })
    const log = await b.call(`/api/v1/requests/${req.id}/transitions`)
    expect(log.items.at(-1)).toMatchObject({
      event: { type: 'request.withdraw' },
      from: 'Accepted',
      to: 'Withdrawn',
      actor: { kind: 'remote', id: a.instanceId, ip: '127.0.0.1' },
    })
    // Deleted is final.
    const again = await a.api(`/api/v1/upstreams/${up.id}`, { method: 'DELETE' })
    expect(again.status).toBe(409)
  })

  it('stays Pending with the error shown while the server is down, and retries on its own', async () => {
    const port = await freePort()
    const up = await a.call('/api/v1/upstreams', {
      method: 'POST',
      json: { host: 'mqtt://127.0.0.1', httpPort: port },
    })
    expect(up).toMatchObject({ status: 'Pending', remoteRequestId: null })
    expect(up.lastError).toMatch(/cannot reach http:\/\/127\.0\.0\.1:\d+.*ECONNREFUSED/)
    const late = await startNode({ port })
    try {
      const sent = await waitFor(async () => {
        const u = await a.call(`/api/v1/upstreams/${up.id}`)
        return u.remoteRequestId && u
      })
      expect(sent.lastError).toBeNull()
      await late.call(`/api/v1/requests/${sent.remoteRequestId}/accept`, { method: 'POST' })
      // Refresh asks at once rather than at the next poll.
      const refreshed = await a.call(`/api/v1/upstreams/${up.id}/refresh`, { method: 'POST' })
      expect(refreshed.status).toBe('Approved')
    } finally {
      await late.close()
    }
  })
})
