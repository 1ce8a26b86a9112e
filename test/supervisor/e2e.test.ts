import { afterEach, expect, it } from 'vitest'
import { connectMqtt } from '../helpers/gateway.ts'
import { api, startInstance, type Instance } from '../helpers/instance.ts'
import { waitFor } from './aedes.ts'

/**
 * Two real uns-bridge processes (all four services each): the downstream asks, the upstream's
 * operator accepts, the downstream binds and activates, and messages flow through the real
 * gateways, stores and supervisors.
 */
const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

it('mirrors a namespace from a downstream instance to an upstream instance after the handshake', async () => {
  const up = await startInstance()
  cleanups.push(() => up.stop())
  const down = await startInstance()
  cleanups.push(() => down.stop())
  const upMqtt = new URL(up.mqttUrl!)
  const upHttp = new URL(up.httpUrl)

  const created = await api(down, 'POST', '/api/v1/upstreams', {
    host: 'mqtt://127.0.0.1',
    brokerPort: Number(upMqtt.port),
    httpPort: Number(upHttp.port),
  })
  let pending: Array<{ id: string; instanceId: string }> = []
  const t0 = Date.now()
  while (pending.length === 0 && Date.now() - t0 < 10_000) {
    pending = await api(up, 'GET', '/api/v1/requests?status=Pending')
    if (!pending.length) await new Promise((r) => setTimeout(r, 100))
  }
  expect(pending[0]!.instanceId).toBe(down.instanceId)
  await api(up, 'POST', `/api/v1/requests/${pending[0]!.id}/accept`, {})
  const id = created.id as string
  let status = ''
  const t1 = Date.now()
  while (status !== 'Approved' && Date.now() - t1 < 10_000) {
    await api(down, 'POST', `/api/v1/upstreams/${id}/refresh`)
    status = (await api(down, 'GET', `/api/v1/upstreams/${id}`)).status
  }
  expect(status).toBe('Approved')
  await api(down, 'PUT', `/api/v1/upstreams/${id}/bindings`, [
    { source: 'plant1/line3', target: 'acme/plant1/line3' },
  ])
  await api(down, 'POST', `/api/v1/upstreams/${id}/activate`)

  const sub = await connectMqtt(up.mqttUrl!)
  cleanups.push(() => sub.endAsync(true))
  const got: Array<{ topic: string; payload: string; qos: number }> = []
  sub.on('message', (topic, payload, p) =>
    got.push({ topic, payload: payload.toString(), qos: p.qos })
  )
  await sub.subscribeAsync('acme/#', { qos: 1 })
  const pub = await connectMqtt(down.mqttUrl!)
  cleanups.push(() => pub.endAsync(true))

  let detail: { link?: { state?: string; forwarded?: number } } = {}
  const t2 = Date.now()
  while (detail.link?.state !== 'Forwarding' && Date.now() - t2 < 15_000) {
    await new Promise((r) => setTimeout(r, 200))
    detail = await api(down, 'GET', `/api/v1/upstreams/${id}`)
  }
  expect(detail.link?.state).toBe('Forwarding')
  for (let i = 0; i < 100; i++) await pub.publishAsync('plant1/line3/seq', String(i), { qos: 1 })
  await waitFor(() => got.length >= 100, { what: '100 messages upstream' })
  expect(got.map((m) => Number(m.payload))).toEqual(Array.from({ length: 100 }, (_, i) => i))
  expect(new Set(got.map((m) => m.topic))).toEqual(new Set(['acme/plant1/line3/seq']))
  // The API shows the link's counters from the supervisor's status in KV.
  const t3 = Date.now()
  while (detail.link?.forwarded !== 100 && Date.now() - t3 < 5_000) {
    await new Promise((r) => setTimeout(r, 200))
    detail = await api(down, 'GET', `/api/v1/upstreams/${id}`)
  }
  expect(detail.link).toMatchObject({
    state: 'Forwarding',
    forwarded: 100,
    waiting: 0,
    lastError: null,
  })
}, 90_000)
