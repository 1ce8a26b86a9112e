import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { startInstance, type Instance } from '../helpers/instance.ts'
import { readSse, waitFor, type SseEvent } from '../handshake/fixture.ts'

/**
 * Two real instances, each its own process with its own data folder, on loopback: the handshake
 * as an operator would drive it over HTTP on both sides.
 */
const POLL = ['--handshake-poll-ms', '100', '--handshake-slow-poll-ms', '400']

let a: Instance
let b: Instance

beforeAll(async () => {
  ;[a, b] = await Promise.all([startInstance({ args: POLL }), startInstance({ args: POLL })])
})
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()])
})
// Each test starts with no live upstream on A (one live request per instance on B).
afterEach(async () => {
  if (!a) return
  for (const up of (await call(a, '/api/v1/upstreams')) as any[]) {
    if (up.status !== 'Deleted') await call(a, `/api/v1/upstreams/${up.id}`, { method: 'DELETE' })
  }
})

async function call(
  inst: Instance,
  path: string,
  init: { method?: string; json?: unknown } = {}
): Promise<any> {
  const headers: Record<string, string> = { authorization: `Bearer ${inst.adminToken}` }
  if (init.json !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(inst.httpUrl + path, {
    method: init.method ?? 'GET',
    headers,
    ...(init.json === undefined ? {} : { body: JSON.stringify(init.json) }),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${init.method ?? 'GET'} ${path} → ${res.status} ${text}`)
  return JSON.parse(text)
}

const target = (inst: Instance) => ({
  host: 'mqtt://127.0.0.1',
  brokerPort: Number(new URL(inst.mqttUrl!).port),
  httpPort: Number(new URL(inst.httpUrl).port),
})
const statusOf = async (inst: Instance, id: string) =>
  (await call(inst, `/api/v1/upstreams/${id}`)).status
const transitions = (events: SseEvent[]) =>
  events
    .filter((e) => e.event === 'transition')
    .map((e) => ({ id: Number(e.id), ...JSON.parse(e.data) }))
const machineEvents = (events: SseEvent[], id: string) =>
  transitions(events).filter((t) => t.machineId === id)

describe('handshake between two instance processes', () => {
  it('A requests B; B sees A and its address and accepts; A is Approved by itself, binds and activates', async () => {
    const aStream = readSse(`${a.httpUrl}/api/v1/events`, {
      token: a.adminToken,
      lastEventId: '0',
      until: (e) => transitions(e).some((t) => t.to === 'Active'),
      timeoutMs: 25_000,
    })
    // B's stream is open before anything happens on B: what it carries arrives live.
    const bStream = readSse(`${b.httpUrl}/api/v1/events`, {
      token: b.adminToken,
      lastEventId: '0',
      until: (e) => transitions(e).some((t) => t.machine === 'request' && t.to === 'Accepted'),
      timeoutMs: 25_000,
    })
    const up = await call(a, '/api/v1/upstreams', { method: 'POST', json: target(b) })
    expect(up).toMatchObject({ status: 'Pending', lastError: null, kind: 'uns' })

    const pending = await call(b, '/api/v1/requests?status=Pending')
    expect(pending).toEqual([
      expect.objectContaining({
        id: up.remoteRequestId,
        instanceId: a.instanceId,
        status: 'Pending',
      }),
    ])
    expect(pending[0].sourceIp, 'source IP as B saw it').toBe('127.0.0.1')
    await call(b, `/api/v1/requests/${up.remoteRequestId}/accept`, { method: 'POST' })

    // No refresh: A's own poller sees the acceptance.
    await waitFor(async () => (await statusOf(a, up.id)) === 'Approved', { timeoutMs: 10_000 })
    await call(a, `/api/v1/upstreams/${up.id}/bindings`, {
      method: 'PUT',
      json: [{ source: 'plant1/line3', target: 'acme/plant1/line3' }],
    })
    expect(await call(a, `/api/v1/upstreams/${up.id}/activate`, { method: 'POST' })).toMatchObject({
      status: 'Active',
      active: true,
    })

    // The bridge logs in to B's gateway with A's instance ID and the handshake secret.
    const link = await waitFor(
      async () => {
        const l = (await call(a, `/api/v1/upstreams/${up.id}`)).link
        return l?.state === 'Forwarding' && l
      },
      { timeoutMs: 15_000 }
    )
    expect(link).toMatchObject({ state: 'Forwarding', lastError: null })

    const aLog = (await call(a, `/api/v1/upstreams/${up.id}/transitions`)).items
    expect(aLog.map((t: any) => [t.from, t.to, t.actor.kind, t.actor.id ?? null])).toEqual([
      [null, 'Pending', 'operator', null],
      ['Pending', 'Approved', 'remote', b.instanceId],
      ['Approved', 'Approved', 'operator', null],
      ['Approved', 'Active', 'operator', null],
    ])
    const bLog = (await call(b, `/api/v1/requests/${up.remoteRequestId}/transitions`)).items
    expect(bLog.map((t: any) => [t.from, t.to, t.actor.kind, t.actor.id ?? null])).toEqual([
      [null, 'Pending', 'remote', a.instanceId],
      ['Pending', 'Accepted', 'operator', null],
    ])

    // The SSE streams carry the same rows, in order, with increasing ids.
    const aSeen = machineEvents(await aStream, up.id)
    expect(aSeen.map((t) => [t.seq, t.to, t.hash])).toEqual(
      aLog.map((t: any) => [t.seq, t.to, t.hash])
    )
    expect(aSeen.map((t) => t.id)).toEqual([...aSeen.map((t) => t.id)].sort((x, y) => x - y))
    const bSeen = machineEvents(await bStream, up.remoteRequestId)
    expect(bSeen.map((t) => [t.seq, t.to, t.hash])).toEqual(
      bLog.map((t: any) => [t.seq, t.to, t.hash])
    )
  })

  it('A turns Revoked when B revokes', async () => {
    const up = await call(a, '/api/v1/upstreams', { method: 'POST', json: target(b) })
    await call(b, `/api/v1/requests/${up.remoteRequestId}/accept`, { method: 'POST' })
    await waitFor(async () => (await statusOf(a, up.id)) === 'Approved', { timeoutMs: 10_000 })
    await call(a, `/api/v1/upstreams/${up.id}/bindings`, {
      method: 'PUT',
      json: [{ source: 'a', target: 'b' }],
    })
    await call(a, `/api/v1/upstreams/${up.id}/activate`, { method: 'POST' })
    await waitFor(
      async () => (await call(a, `/api/v1/upstreams/${up.id}`)).link?.state === 'Forwarding',
      { timeoutMs: 15_000 }
    )
    const clientsOnB = async () => (await call(b, '/api/v1/instance')).gateways[0].clients
    expect(await clientsOnB()).toBe(1) // A's bridge
    await call(b, `/api/v1/requests/${up.remoteRequestId}/revoke`, { method: 'POST' })
    // B's gateway drops the bridge at once and refuses it after (CONNACK 5: no retry loop).
    await waitFor(async () => (await clientsOnB()) === 0, { timeoutMs: 2_000 })
    await waitFor(async () => (await statusOf(a, up.id)) === 'Revoked', { timeoutMs: 10_000 })
    expect(await clientsOnB()).toBe(0)
    const last = (await call(a, `/api/v1/upstreams/${up.id}/transitions`)).items.at(-1)
    expect(last).toMatchObject({
      from: 'Active',
      to: 'Revoked',
      actor: { kind: 'remote', id: b.instanceId },
    })
  })

  it('A turns Declined when B declines', async () => {
    const up = await call(a, '/api/v1/upstreams', { method: 'POST', json: target(b) })
    const req = await call(b, `/api/v1/requests/${up.remoteRequestId}`)
    expect(req).toMatchObject({ status: 'Pending', instanceId: a.instanceId })
    await call(b, `/api/v1/requests/${up.remoteRequestId}/decline`, { method: 'POST' })
    await waitFor(async () => (await statusOf(a, up.id)) === 'Declined', { timeoutMs: 10_000 })
  })

  it('B sees Withdrawn when A deletes its upstream', async () => {
    const up = await call(a, '/api/v1/upstreams', { method: 'POST', json: target(b) })
    await call(b, `/api/v1/requests/${up.remoteRequestId}/accept`, {
      method: 'POST',
      json: { grants: ['acme'] },
    })
    await waitFor(async () => (await statusOf(a, up.id)) === 'Approved', { timeoutMs: 10_000 })
    const deleted = await call(a, `/api/v1/upstreams/${up.id}`, { method: 'DELETE' })
    expect(deleted).toMatchObject({ status: 'Deleted', withdrawal: { ok: true, error: null } })
    const req = await call(b, `/api/v1/requests/${up.remoteRequestId}`)
    expect(req).toMatchObject({ status: 'Withdrawn', grants: ['acme'] })
    const last = (await call(b, `/api/v1/requests/${up.remoteRequestId}/transitions`)).items.at(-1)
    expect(last).toMatchObject({
      from: 'Accepted',
      to: 'Withdrawn',
      actor: { kind: 'remote', id: a.instanceId },
    })
    expect(last.actor.ip, 'source IP as B saw it').toBe('127.0.0.1')
  })

  it('withdraws the request once B is back, when A deleted its upstream while B was down', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ub-b-'))
    let server = await startInstance({ dataDir: dir, args: POLL })
    const httpPort = new URL(server.httpUrl).port
    try {
      const up = await call(a, '/api/v1/upstreams', { method: 'POST', json: target(server) })
      expect(up.remoteRequestId).toMatch(/\S/)
      await server.stop()
      const deleted = await call(a, `/api/v1/upstreams/${up.id}`, { method: 'DELETE' })
      expect(deleted).toMatchObject({
        status: 'Deleted',
        withdrawalOwed: true,
        withdrawal: { ok: false },
      })
      server = await startInstance({ dataDir: dir, args: [...POLL, '--http-port', httpPort] })
      await waitFor(
        async () =>
          (await call(server, `/api/v1/requests/${up.remoteRequestId}`)).status === 'Withdrawn',
        { timeoutMs: 15_000 }
      )
      await waitFor(async () => {
        const after = await call(a, `/api/v1/upstreams/${up.id}`)
        return after.withdrawalOwed === false && after.lastError === null
      })
    } finally {
      await server.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
