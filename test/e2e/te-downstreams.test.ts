import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt } from '../helpers/gateway.ts'
import { bridge, until, untilForwarding } from '../helpers/bridging.ts'
import { api, apiRequest, startInstance, type Instance } from '../helpers/instance.ts'

/**
 * Issue 11, "across the bridge": two real instances, the edge binding `te` → `acme/site1/te`
 * both ways. Its supervisor declares the mount in the topology exchange, the cloud keeps it
 * inside the edge's grants, and the cloud's `/te/v1/entities` lists the edge's child as an
 * entity of that downstream, reached at the mounted topic; a deregistration on the edge removes
 * it, a revocation removes them all.
 */
describe("the cloud's twin lists a downstream's thin-edge.io entities", () => {
  let edge: Instance
  let cloud: Instance
  let upstreamId = ''
  const clients: MqttClient[] = []
  const REMOTE = 'acme/site1/te'
  const FAST = ['--topology-interval-ms', '250']

  type Entity = Record<string, any>
  const ofEdge = async (): Promise<Entity[]> =>
    api(cloud, 'GET', `/te/v1/entities?downstream=${edge.instanceId}`)
  const find = async (topicId: string) => (await ofEdge()).find((e) => e['@topic-id'] === topicId)

  beforeAll(async () => {
    ;[edge, cloud] = await Promise.all([
      startInstance({ args: FAST }),
      startInstance({ args: FAST }),
    ])
    upstreamId = await bridge(
      edge,
      cloud,
      [{ source: 'te', target: REMOTE, direction: 'both' }],
      undefined,
      { grants: ['acme/site1'] }
    )
    await untilForwarding(edge, upstreamId)
  }, 120_000)

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)))
    await Promise.all([edge?.stop(), cloud?.stop()])
  })

  it("lists a child registered on the edge as the edge's entity, at the mounted topic", async () => {
    const device = await connectMqtt(edge.mqttUrl!)
    clients.push(device)
    await device.publishAsync(
      'te/device/child01//',
      JSON.stringify({ '@type': 'child-device', name: 'child01' }),
      { qos: 1, retain: true }
    )
    const child = await until('the child in the cloud', () => find('device/child01//'), 20_000)
    expect(child).toMatchObject({
      '@topic-id': 'device/child01//',
      '@type': 'child-device',
      downstream: edge.instanceId,
      topic: `${REMOTE}/device/child01//`,
    })
    const one = await api(
      cloud,
      'GET',
      `/te/v1/entities/device/child01//?downstream=${edge.instanceId}`
    )
    expect(one).toMatchObject({ downstream: edge.instanceId, topic: `${REMOTE}/device/child01//` })
    // The cloud's own entities are apart: the child is not one of them.
    const ours: Entity[] = await api(cloud, 'GET', '/te/v1/entities?downstream=')
    expect(ours.map((e) => e['@topic-id'])).not.toContain('device/child01//')
    expect((await api(cloud, 'GET', '/te/v1/entities')) as Entity[]).toContainEqual(child)
    // The link itself, as the cloud sees the edge's bridge.
    expect(await find('device/main/service/ub-link')).toMatchObject({ health: 'up' })
  }, 60_000)

  it("refuses to write a downstream's entity here", async () => {
    const res = await apiRequest(
      cloud,
      'DELETE',
      `/te/v1/entities/device/child01//?downstream=${edge.instanceId}`
    )
    expect(res.status).toBe(409)
    expect(res.body.error.code).toBe('downstream_entity')
    expect(await find('device/child01//')).toBeDefined()
  })

  it('removes the child deregistered on the edge, then everything once revoked', async () => {
    const device = await connectMqtt(edge.mqttUrl!)
    clients.push(device)
    await device.publishAsync('te/device/child01//', '', { qos: 1, retain: true })
    await until(
      'the child gone from the cloud',
      async () => ((await find('device/child01//')) ? undefined : true),
      20_000
    )
    expect(await find('device/main/service/ub-link')).toBeDefined() // the rest stays
    const requests: Entity[] = await api(cloud, 'GET', '/api/v1/requests?status=Accepted')
    const request = requests.find((r) => r.instanceId === edge.instanceId)!
    await api(cloud, 'POST', `/api/v1/requests/${request.id}/revoke`)
    expect(await ofEdge()).toEqual([])
  }, 60_000)
})
