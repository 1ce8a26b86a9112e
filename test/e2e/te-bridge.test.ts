import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt, sleep } from '../helpers/gateway.ts'
import { bridge, listen, until, untilForwarding } from '../helpers/bridging.ts'
import { startInstance, type Instance } from '../helpers/instance.ts'

/**
 * thin-edge's bus across a bridge (issue 11): the edge binds its `te` root to `acme/site1/te`
 * both ways; the cloud sees the edge's entities, a command issued in the cloud reaches the child
 * and its status comes back, and a deregistration on the edge clears both sides.
 */
describe("thin-edge's device schema across a bridge", () => {
  let edge: Instance
  let cloud: Instance
  let upstreamId = ''
  const clients: MqttClient[] = []
  const CHILD = 'te/device/child01//'
  const REMOTE = 'acme/site1/te'

  beforeAll(async () => {
    ;[edge, cloud] = await Promise.all([startInstance(), startInstance()])
    upstreamId = await bridge(edge, cloud, [{ source: 'te', target: REMOTE, direction: 'both' }])
    await untilForwarding(edge, upstreamId)
  }, 120_000)

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)))
    await Promise.all([edge?.stop(), cloud?.stop()])
  })

  it('shows a child registered on the edge in the cloud within a second', async () => {
    const seen = await listen(cloud.mqttUrl!, `${REMOTE}/device/+//`)
    clients.push(seen.client)
    const device = await connectMqtt(edge.mqttUrl!)
    clients.push(device)
    await device.publishAsync(CHILD, JSON.stringify({ '@type': 'child-device', name: 'child01' }), {
      qos: 1,
      retain: true,
    })
    await until(
      'the registration in the cloud',
      async () =>
        seen.got.some((m) => m.topic === `${REMOTE}/device/child01//`) ? true : undefined,
      // A bound for a hang, not a latency target: the suite runs on loaded machines.
      10_000
    )
    expect(
      JSON.parse(seen.got.find((m) => m.topic === `${REMOTE}/device/child01//`)!.payload)
    ).toMatchObject({
      '@type': 'child-device',
    })
  }, 30_000)

  it('carries a firmware_update command from the cloud to the child and its statuses back', async () => {
    const child = await listen(edge.mqttUrl!, `${CHILD}/cmd/firmware_update/+`)
    const operator = await listen(
      cloud.mqttUrl!,
      `${REMOTE}/device/child01///cmd/firmware_update/+`
    )
    clients.push(child.client, operator.client)
    const command = `${REMOTE}/device/child01///cmd/firmware_update/c8y-2024`
    const request = { status: 'init', name: 'core', version: '1.2.3', url: 'http://files/core.bin' }
    await operator.client.publishAsync(command, JSON.stringify(request), { qos: 1, retain: true })
    await until(
      'the command on the edge',
      async () => (child.got.length > 0 ? true : undefined),
      10_000
    )
    expect(child.got[0]).toMatchObject({ topic: `${CHILD}/cmd/firmware_update/c8y-2024` })
    expect(JSON.parse(child.got[0]!.payload)).toEqual(request)
    for (const status of ['executing', 'successful'])
      await child.client.publishAsync(
        `${CHILD}/cmd/firmware_update/c8y-2024`,
        JSON.stringify({ ...request, status }),
        { qos: 1, retain: true }
      )
    await until(
      'successful in the cloud',
      async () =>
        operator.got.some((m) => JSON.parse(m.payload || '{}').status === 'successful')
          ? true
          : undefined,
      10_000
    )
    const statuses = operator.got.map((m) => JSON.parse(m.payload).status)
    expect(statuses).toEqual(['init', 'executing', 'successful'])
  }, 30_000)

  it('removes a deregistered child and its retained messages on both sides', async () => {
    const device = await connectMqtt(edge.mqttUrl!)
    clients.push(device)
    await device.publishAsync(`${CHILD}/a/temperature_high`, JSON.stringify({ text: 'hot' }), {
      qos: 1,
      retain: true,
    })
    await sleep(500)
    await device.publishAsync(CHILD, '', { qos: 1, retain: true })
    await sleep(1_500)
    // New subscribers get every retained message there is: none of the child's is left.
    const edgeLeft = await listen(edge.mqttUrl!, 'te/device/child01/#')
    const cloudLeft = await listen(cloud.mqttUrl!, `${REMOTE}/device/child01/#`)
    clients.push(edgeLeft.client, cloudLeft.client)
    await sleep(1_000)
    expect(edgeLeft.got).toEqual([])
    expect(cloudLeft.got).toEqual([])
  }, 30_000)
})
