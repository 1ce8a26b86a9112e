import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt, eventually } from '../helpers/gateway.ts'
import { api, apiRequest, startInstance, type Instance } from '../helpers/instance.ts'

/**
 * The digital twin's writes over HTTP on one real instance: each write is published into the
 * broker as the retained messages an MQTT client would publish (registration, twin fragment,
 * empty to clear), seen by MQTT subscribers, and the store's twin follows before the answer.
 */
describe('thin-edge.io entity writes over HTTP', () => {
  let inst: Instance
  let device: MqttClient

  beforeAll(async () => {
    inst = await startInstance()
    device = await connectMqtt(inst.mqttUrl!, { clientId: 'child-agent' })
  }, 60_000)
  afterAll(async () => {
    await device?.endAsync(true)
    await inst?.stop()
  })

  const req = (method: string, path: string, body?: unknown) =>
    apiRequest(inst, method, `/te/v1/entities${path}`, body)

  /** The retained messages a client subscribing now receives under `filter`, by topic. */
  async function retainedUnder(filter: string): Promise<Record<string, string>> {
    const seen: Record<string, string> = {}
    const client = await connectMqtt(inst.mqttUrl!, {}, (c) =>
      c.on('message', (topic, payload, packet) => {
        if (packet.retain) seen[topic] = payload.toString()
      })
    )
    try {
      await client.subscribeAsync(filter, { qos: 1 })
      await new Promise((r) => setTimeout(r, 300))
      return seen
    } finally {
      await client.endAsync(true)
    }
  }

  it('registers an entity: 201, the retained registration on the bus, the twin in GET', async () => {
    const res = await inst.fetch(`${inst.httpUrl}/te/v1/entities`, {
      method: 'POST',
      headers: { authorization: `Bearer ${inst.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ '@topic-id': 'device/c1', '@type': 'child-device', name: 'C1' }),
    })
    expect(res.status).toBe(201)
    expect(res.headers.get('location')).toBe('/te/v1/entities/device/c1//')
    expect(await res.json()).toEqual({ '@topic-id': 'device/c1//' })
    // Read-after-write: the answer came once the store had it.
    expect(await api(inst, 'GET', '/te/v1/entities/device/c1//')).toMatchObject({
      '@topic-id': 'device/c1//',
      '@type': 'child-device',
      '@parent': 'device/main//',
    })
    expect(await api(inst, 'GET', '/te/v1/entities/device/c1///twin')).toEqual({ name: 'C1' })
    const retained = await retainedUnder('te/device/c1/#')
    expect(JSON.parse(retained['te/device/c1//']!)).toEqual({ '@type': 'child-device', name: 'C1' })

    const service = await req('POST', '', {
      '@topic-id': 'device/c1/service/app',
      '@type': 'service',
      '@parent': 'device/c1//',
    })
    expect(service).toEqual({ status: 201, body: { '@topic-id': 'device/c1/service/app' } })
    expect(
      (
        await req('POST', '', {
          '@topic-id': 'device/c2//',
          '@type': 'child-device',
          '@parent': 'device/c1//',
        })
      ).status
    ).toBe(201)
  })

  it.each([
    [{ '@topic-id': 'device/c1//', '@type': 'child-device' }, 409, 'already_exists'],
    [{ '@topic-id': 'device/x//', '@type': 'device' }, 400, 'invalid_request'],
    [{ '@topic-id': 'a/b/c/d/e', '@type': 'child-device' }, 400, 'invalid_request'],
    [{ '@topic-id': 'device/x/#/', '@type': 'child-device' }, 400, 'invalid_request'],
    [{ '@topic-id': 'device/x//' }, 400, 'invalid_request'],
    [{ '@topic-id': 'device/x//', '@type': 'child-device', '@id': '' }, 400, 'invalid_request'],
    [
      { '@topic-id': 'device/x//', '@type': 'child-device', '@parent': 'device/nobody//' },
      400,
      'invalid_request',
    ],
    [
      { '@topic-id': 'device/x//', '@type': 'child-device', '@parent': 'device/c1/service/app' },
      400,
      'invalid_request',
    ],
    [[1], 400, 'invalid_request'],
  ])('refuses the registration %j: %i %s', async (body, status, code) => {
    const res = await req('POST', '', body)
    expect(res.status).toBe(status)
    expect(res.body.error).toMatchObject({ code, message: expect.any(String) })
  })

  it('answers 400 for a body that is not JSON and 401 without a token', async () => {
    const url = `${inst.httpUrl}/te/v1/entities/device/c1///twin/k`
    const auth = { authorization: `Bearer ${inst.adminToken}` }
    const notJson = await inst.fetch(url, { method: 'PUT', headers: auth, body: '{nope' })
    expect(notJson.status).toBe(400)
    expect(((await notJson.json()) as any).error.code).toBe('malformed_json')
    for (const [method, path] of [
      ['POST', '/te/v1/entities'],
      ['PATCH', '/te/v1/entities/device/c1//'],
      ['DELETE', '/te/v1/entities/device/c1//'],
      ['PUT', '/te/v1/entities/device/c1///twin'],
      ['PUT', '/te/v1/entities/device/c1///twin/k'],
      ['DELETE', '/te/v1/entities/device/c1///twin/k'],
    ] as const) {
      const res = await inst.fetch(inst.httpUrl + path, { method, body: '{}' })
      expect(res.status, `${method} ${path}`).toBe(401)
    }
  })

  it('writes twin fragments as retained twin messages: PUT a key, DELETE it, PUT the whole twin', async () => {
    const put = await req('PUT', '/device/c1///twin/hardware', { serialNo: '98761234' })
    expect(put).toEqual({ status: 200, body: { serialNo: '98761234' } })
    expect(await api(inst, 'GET', '/te/v1/entities/device/c1///twin/hardware')).toEqual({
      serialNo: '98761234',
    })
    expect((await retainedUnder('te/device/c1///twin/+'))['te/device/c1///twin/hardware']).toBe(
      '{"serialNo":"98761234"}'
    )

    expect((await req('DELETE', '/device/c1///twin/hardware')).status).toBe(204)
    expect((await req('GET', '/device/c1///twin/hardware')).status).toBe(404)
    expect(await retainedUnder('te/device/c1///twin/+')).toEqual({})

    // thin-edge replaces the whole twin: `name` (from the registration) goes, null clears.
    const all = await req('PUT', '/device/c1///twin', { maintenance: true, gone: null })
    expect(all).toEqual({ status: 200, body: { maintenance: true } })
    expect(await api(inst, 'GET', '/te/v1/entities/device/c1///twin')).toEqual({
      maintenance: true,
    })
    expect(await retainedUnder('te/device/c1///twin/+')).toEqual({
      'te/device/c1///twin/maintenance': 'true',
    })

    // The main device always exists, as in thin-edge: registered first should it not be yet.
    expect(await req('PUT', '/device/main///twin/name', 'edge-1')).toEqual({
      status: 200,
      body: 'edge-1',
    })
    expect(await api(inst, 'GET', '/te/v1/entities/device/main///twin/name')).toBe('edge-1')

    expect((await req('PUT', '/device/c1///twin/@x', 1)).status).toBe(400)
    expect((await req('PUT', '/device/c1///twin', [1])).status).toBe(400)
    expect((await req('PUT', '/device/nobody///twin/k', 1)).status).toBe(404)
    expect((await req('DELETE', '/device/nobody///twin/k')).status).toBe(404)
    expect((await req('PUT', '/device/c1//', {})).status).toBe(404)
  })

  it("updates @parent as thin-edge's PATCH does, republishing the registration", async () => {
    const moved = await req('PATCH', '/device/c2', { '@parent': 'device/main//' })
    expect(moved.status).toBe(200)
    expect(moved.body).toMatchObject({ '@topic-id': 'device/c2//', '@parent': 'device/main//' })
    expect(JSON.parse((await retainedUnder('te/device/c2//'))['te/device/c2//']!)).toMatchObject({
      '@type': 'child-device',
      '@parent': 'device/main//',
    })
    expect((await req('PATCH', '/device/c2//', { '@type': 'service' })).status).toBe(400)
    expect((await req('PATCH', '/device/c2//', { '@parent': 'device/nobody//' })).status).toBe(400)
    expect((await req('PATCH', '/device/c1//', { '@parent': 'device/c1//' })).status).toBe(400)
    expect((await req('PATCH', '/device/nobody//', { '@parent': 'device/main//' })).status).toBe(
      404
    )
    expect((await req('PATCH', '/device/%2B//', {})).status).toBe(400)
    expect((await req('DELETE', '/device/%23//')).status).toBe(400)
  })

  it('deregisters an entity and its descendants, clearing every retained message under them', async () => {
    // An MQTT client's retained alarm and health on the service, as a device would leave them.
    await device.publishAsync(
      'te/device/c1/service/app/status/health',
      JSON.stringify({ status: 'up' }),
      { qos: 1, retain: true }
    )
    await device.publishAsync('te/device/c1///a/hot', JSON.stringify({ text: 'hot' }), {
      qos: 1,
      retain: true,
    })
    await eventually(
      async () => Object.keys((await retainedUnder('te/device/c1/#')) ?? {}).length >= 4
    )

    const res = await req('DELETE', '/device/c1//')
    expect(res.status).toBe(200)
    expect(res.body.map((e: any) => e['@topic-id']).sort()).toEqual([
      'device/c1//',
      'device/c1/service/app',
    ])
    expect((await req('GET', '/device/c1//')).status).toBe(404)
    expect((await req('GET', '/device/c1/service/app')).status).toBe(404)
    await eventually(async () => Object.keys(await retainedUnder('te/device/c1/#')).length === 0)
    // The moved child is no descendant any more: it stays.
    expect((await req('GET', '/device/c2//')).status).toBe(200)
    expect((await req('DELETE', '/device/c1//')).status).toBe(204)
  })
})
