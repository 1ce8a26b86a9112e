import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt, eventually } from '../helpers/gateway.ts'
import { api, apiRequest, startInstance, type Instance } from '../helpers/instance.ts'

/**
 * The digital twin end to end on one real instance: a device publishes thin-edge.io's documented
 * messages over MQTT, the gateway feeds the store, and `/te/v1/entities` shows them in thin-edge's
 * entity-API shape, with health, last measurement time and open alarms.
 */
describe('the thin-edge.io digital twin over HTTP', () => {
  let inst: Instance
  let device: MqttClient

  beforeAll(async () => {
    inst = await startInstance()
    device = await connectMqtt(inst.mqttUrl!, { clientId: 'child01-agent' })
  }, 60_000)
  afterAll(async () => {
    await device?.endAsync(true)
    await inst?.stop()
  })

  const pub = (topic: string, payload: string, retain = false) =>
    device.publishAsync(topic, payload, { qos: 1, retain })
  const entities = async (query = ''): Promise<Array<Record<string, any>>> =>
    api(inst, 'GET', `/te/v1/entities${query}`)
  const byId = async (query = '') =>
    Object.fromEntries((await entities(query)).map((e) => [e['@topic-id'], e]))

  it('shows registered entities with parent, type, health, measurement time and alarms', async () => {
    // thin-edge's docs: register a child device and a service on it, retained.
    await pub(
      'te/device/child01//',
      JSON.stringify({ '@type': 'child-device', name: 'child01' }),
      true
    )
    await pub(
      'te/device/child01/service/nodered',
      JSON.stringify({
        '@type': 'service',
        '@parent': 'device/child01//',
        name: 'nodered',
        type: 'systemd',
      }),
      true
    )
    await pub(
      'te/device/child01/service/nodered/status/health',
      JSON.stringify({ status: 'up' }),
      true
    )
    await pub('te/device/child01///m/environment', JSON.stringify({ temperature: 23 }))
    await pub(
      'te/device/child01///a/temperature_high',
      JSON.stringify({
        text: 'Temperature is high',
        severity: 'major',
        time: '2026-01-01T00:00:00Z',
      }),
      true
    )
    let seen: Record<string, Record<string, any>> = {}
    await eventually(async () => {
      seen = await byId()
      return (
        seen['device/child01/service/nodered']?.health === 'up' &&
        seen['device/child01//']?.lastMeasurementAt !== null &&
        Object.keys(seen['device/child01//']?.alarms ?? {}).length === 1
      )
    }, 10_000)
    expect(seen['device/child01//']).toMatchObject({
      '@topic-id': 'device/child01//',
      '@type': 'child-device',
      '@parent': 'device/main//',
      alarms: {
        temperature_high: {
          severity: 'major',
          text: 'Temperature is high',
          time: '2026-01-01T00:00:00Z',
        },
      },
    })
    expect(Date.parse(seen['device/child01//']!.lastMeasurementAt)).toBeGreaterThan(
      Date.now() - 60_000
    )
    expect(seen['device/child01/service/nodered']).toMatchObject({
      '@type': 'service',
      '@parent': 'device/child01//',
      health: 'up',
    })
    // thin-edge's filters and the single-entity and twin reads.
    expect((await entities('?root=device/child01//')).map((e) => e['@topic-id'])).toEqual([
      'device/child01//',
      'device/child01/service/nodered',
    ])
    // The main device is known as a parent before anyone registers it.
    expect((await entities('?parent=device/main//')).map((e) => e['@topic-id'])).toEqual([
      'device/child01//',
    ])
    expect((await entities('?type=service')).map((e) => e['@topic-id'])).toEqual([
      'device/child01/service/nodered',
    ])
    expect(await api(inst, 'GET', '/te/v1/entities/device/child01')).toMatchObject({
      '@topic-id': 'device/child01//',
      '@type': 'child-device',
    })
    expect(await api(inst, 'GET', '/te/v1/entities/device/child01/service/nodered/twin')).toEqual({
      name: 'nodered',
      type: 'systemd',
    })
    expect(await api(inst, 'GET', '/te/v1/entities/device/child01///twin/name')).toBe('child01')
  })

  it('answers 404 with a code for an unknown entity, 400 for a malformed id', async () => {
    const missing = await apiRequest(inst, 'GET', '/te/v1/entities/device/nobody//')
    expect(missing.status).toBe(404)
    expect(missing.body.error.code).toBe('not_found')
    const fragment = await apiRequest(inst, 'GET', '/te/v1/entities/device/child01///twin/nope')
    expect(fragment.status).toBe(404)
    expect(fragment.body.error.code).toBe('not_found')
    const root = await apiRequest(inst, 'GET', '/te/v1/entities?root=device/nobody//')
    expect(root.status).toBe(404)
    const both = await apiRequest(
      inst,
      'GET',
      '/te/v1/entities?root=device/main//&parent=device/main//'
    )
    expect(both.status).toBe(400)
  })

  it('removes a deregistered child device and its service', async () => {
    expect(Object.keys(await byId())).toEqual(
      expect.arrayContaining(['device/child01//', 'device/child01/service/nodered'])
    )
    await pub('te/device/child01//', '', true)
    await eventually(async () => {
      const ids = Object.keys(await byId())
      return !ids.includes('device/child01//') && !ids.includes('device/child01/service/nodered')
    }, 10_000)
    const gone = await apiRequest(inst, 'GET', '/te/v1/entities/device/child01/service/nodered')
    expect(gone.status).toBe(404)
  })
})
