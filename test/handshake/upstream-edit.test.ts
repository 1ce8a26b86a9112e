import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sha256Hex } from '../../services/common/digest.ts'
import { startNode, waitFor, type Node } from './fixture.ts'

/** `PATCH /api/v1/upstreams/{id}`: edit the connection in place, audited (README, Edit an upstream). */
let a: Node
let b: Node
let c: Node

beforeAll(async () => {
  ;[a, b, c] = await Promise.all([startNode(), startNode(), startNode()])
})
afterAll(async () => {
  await Promise.all([a?.close(), b?.close(), c?.close()])
})

const KEY = '-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----'
const KEY2 = '-----BEGIN PRIVATE KEY-----\nOTHER-KEY-MATERIAL\n-----END PRIVATE KEY-----'
const CA = '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----'

async function patch(n: Node, id: string, json: unknown) {
  const res = await n.api(`/api/v1/upstreams/${id}`, { method: 'PATCH', json })
  return { status: res.status, body: (await res.json()) as any }
}

const plain = (json: Record<string, unknown> = {}) =>
  a.call('/api/v1/upstreams', {
    method: 'POST',
    json: { kind: 'mqtt', host: 'mqtt://127.0.0.1', brokerPort: 1, ...json },
  })

const httpPortOf = (n: Node) => Number(new URL(n.url).port)

async function lastRow(id: string) {
  const log = await a.call(`/api/v1/upstreams/${id}/transitions`)
  return log.items[log.items.length - 1]
}

describe('PATCH /api/v1/upstreams/{id}: refusals', () => {
  it('400 for an empty body, an unknown key, a bad value; 404 for an unknown id', async () => {
    const up = await plain()
    for (const body of [{}, { colour: 'red' }, { brokerPort: 0 }, { host: 'http://x' }]) {
      const res = await patch(a, up.id, body)
      expect(res.status, JSON.stringify(body)).toBe(400)
      expect(res.body.error.code).toBe('invalid_request')
    }
    const badJson = await a.api(`/api/v1/upstreams/${up.id}`, {
      method: 'PATCH',
      headers: { 'content-type': 'application/json' },
      body: '{',
    })
    expect(badJson.status).toBe(400)
    // A plain broker has no handshake API to move.
    expect((await patch(a, up.id, { httpPort: 9 })).body.error.code).toBe('invalid_request')
    const missing = await patch(a, 'up_nope', { brokerPort: 2 })
    expect([missing.status, missing.body.error.code]).toEqual([404, 'not_found'])
    // Nothing was logged by any of them.
    expect((await lastRow(up.id)).event.type).toBe('upstream.create')
  })

  it('409 invalid_transition for a Deleted upstream, and no row', async () => {
    const up = await plain()
    await a.call(`/api/v1/upstreams/${up.id}`, { method: 'DELETE' })
    const res = await patch(a, up.id, { brokerPort: 2 })
    expect([res.status, res.body.error.code]).toEqual([409, 'invalid_transition'])
    expect((await lastRow(up.id)).event.type).toBe('upstream.delete')
  })

  it('is described in /openapi.json with its body schema', async () => {
    const doc = await a.call('/openapi.json')
    expect(doc.paths['/api/v1/upstreams/{id}'].patch.responses).toHaveProperty('409')
    expect(Object.keys(doc.components.schemas.EditUpstream.properties).sort()).toEqual([
      'brokerPort',
      'host',
      'httpPort',
      'tls',
    ])
  })

  it('the store refuses the edit event sent as a plain event', async () => {
    const up = await plain()
    await expect(
      a.store.call('event', {
        machine: 'upstream',
        id: up.id,
        event: { type: 'upstream.connection.set', changes: {}, connection: {} },
        actor: { kind: 'operator' },
      })
    ).rejects.toMatchObject({ code: 'invalid_request' })
  })
})

describe('PATCH /api/v1/upstreams/{id}: audited', () => {
  it('logs the fields with old → new values, keeps the state, and the replay verifies', async () => {
    const up = await plain({ tls: { ca: CA, key: KEY } })
    expect(up.status).toBe('Approved')
    const res = await patch(a, up.id, {
      host: 'mqtts://127.0.0.1',
      brokerPort: 8883,
      tls: { key: KEY2, servername: 'broker.example' },
    })
    expect(res.status).toBe(200)
    expect(res.body).toMatchObject({
      status: 'Approved',
      host: 'mqtts://127.0.0.1',
      brokerPort: 8883,
      tls: { ca: CA, servername: 'broker.example' },
    })
    expect(res.body.tls.key).toBeUndefined()
    expect(await a.call(`/api/v1/upstreams/${up.id}`)).toMatchObject({ brokerPort: 8883 })

    const row = await lastRow(up.id)
    expect(row).toMatchObject({
      from: 'Approved',
      to: 'Approved',
      actor: { kind: 'operator' },
      verified: true,
      event: {
        type: 'upstream.connection.set',
        changes: {
          host: { from: 'mqtt://127.0.0.1', to: 'mqtts://127.0.0.1' },
          brokerPort: { from: 1, to: 8883 },
          'tls.key': { from: `sha256:${sha256Hex(KEY)}`, to: `sha256:${sha256Hex(KEY2)}` },
          'tls.servername': { from: null, to: 'broker.example' },
        },
      },
    })
    expect(Object.keys(row.event.changes).sort()).toEqual([
      'brokerPort',
      'host',
      'tls.key',
      'tls.servername',
    ])
    // The private key never in clear: not in any row, nor in the snapshot.
    const log = JSON.stringify(await a.call(`/api/v1/upstreams/${up.id}/transitions`))
    expect(log).not.toContain('KEY-MATERIAL')
    expect(row.snapshot.context.connection).toMatchObject({ brokerPort: 8883 })

    const replay = await a.call(`/api/v1/upstreams/${up.id}/replay`)
    expect(replay).toMatchObject({ matchesStored: true, verify: { ok: true } })
    expect(replay.snapshot).toEqual(row.snapshot)

    // The same values again change nothing and log nothing.
    const again = await patch(a, up.id, { brokerPort: 8883 })
    expect(again.status).toBe(200)
    expect((await lastRow(up.id)).seq).toBe(row.seq)
    // tls null removes the options, and says so.
    await patch(a, up.id, { tls: null })
    expect((await a.call(`/api/v1/upstreams/${up.id}`)).tls).toBeNull()
    expect((await lastRow(up.id)).event.changes['tls.ca']).toEqual({
      from: `sha256:${sha256Hex(CA)}`,
      to: null,
    })
  })
})

describe('PATCH /api/v1/upstreams/{id}: another server', () => {
  it('Approved → Pending with no grants, withdrawn from the old server, asked of the new one', async () => {
    const up = await a.call('/api/v1/upstreams', {
      method: 'POST',
      json: { host: 'mqtt://127.0.0.1', httpPort: httpPortOf(b) },
    })
    const [req] = await b.call('/api/v1/requests?status=Pending')
    await b.call(`/api/v1/requests/${req.id}/accept`, { method: 'POST', json: { grants: ['x'] } })
    await waitFor(
      async () =>
        (await a.call(`/api/v1/upstreams/${up.id}/refresh`, { method: 'POST' })).status ===
        'Approved'
    )
    const res = await patch(a, up.id, { httpPort: httpPortOf(c) })
    expect(res.body).toMatchObject({ status: 'Pending', grants: [], httpPort: httpPortOf(c) })
    expect(await b.call(`/api/v1/requests/${req.id}`)).toMatchObject({ status: 'Withdrawn' })
    const [onC] = await c.call('/api/v1/requests?status=Pending')
    expect(onC).toMatchObject({ instanceId: a.instanceId, id: res.body.remoteRequestId })
    expect(await lastRow(up.id)).toMatchObject({
      from: 'Approved',
      to: 'Pending',
      event: { changes: { httpPort: { from: httpPortOf(b), to: httpPortOf(c) } } },
    })
    // The new server accepts: the machine goes on as after any request.
    await c.call(`/api/v1/requests/${onC.id}/accept`, { method: 'POST' })
    await waitFor(
      async () =>
        (await a.call(`/api/v1/upstreams/${up.id}/refresh`, { method: 'POST' })).status ===
        'Approved'
    )
    expect((await a.call(`/api/v1/upstreams/${up.id}/replay`)).verify.ok).toBe(true)
    await a.call(`/api/v1/upstreams/${up.id}`, { method: 'DELETE' })
  })

  it('Declined stays Declined; Ask Again then reaches the new server', async () => {
    const up = await b.call('/api/v1/upstreams', {
      method: 'POST',
      json: { host: 'mqtt://127.0.0.1', httpPort: httpPortOf(a) },
    })
    const [req] = (await a.call('/api/v1/requests?status=Pending')).filter(
      (r: any) => r.instanceId === b.instanceId
    )
    await a.call(`/api/v1/requests/${req.id}/decline`, { method: 'POST' })
    await waitFor(
      async () =>
        (await b.call(`/api/v1/upstreams/${up.id}/refresh`, { method: 'POST' })).status ===
        'Declined'
    )
    const res = await patch(b, up.id, { httpPort: httpPortOf(c) })
    expect(res.body).toMatchObject({ status: 'Declined', remoteRequestId: null })
    const again = await b.call(`/api/v1/upstreams/${up.id}/request`, { method: 'POST' })
    expect(again.status).toBe('Pending')
    const onC = (await c.call('/api/v1/requests?status=Pending')).find(
      (r: any) => r.instanceId === b.instanceId
    )
    expect(onC).toMatchObject({ id: again.remoteRequestId })
  })

  it('409 already_exists when the new server already has a live upstream of ours', async () => {
    const one = await c.call('/api/v1/upstreams', {
      method: 'POST',
      json: { host: 'mqtt://127.0.0.1', httpPort: httpPortOf(a) },
    })
    const two = await c.call('/api/v1/upstreams', {
      method: 'POST',
      json: { host: 'mqtt://127.0.0.1', httpPort: httpPortOf(b) },
    })
    const res = await patch(c, two.id, { host: 'mqtts://127.0.0.1', httpPort: httpPortOf(a) })
    expect([res.status, res.body.error.code, res.body.error.details]).toEqual([
      409,
      'already_exists',
      { id: one.id },
    ])
  })
})
