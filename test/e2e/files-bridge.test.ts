import { createHash, randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt } from '../helpers/gateway.ts'
import { api, apiRequest, startInstance, type Instance } from '../helpers/instance.ts'
import { bridge, listen, until } from '../helpers/bridging.ts'

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

async function metric(inst: Instance, name: string): Promise<number> {
  const text = await (
    await fetch(`${inst.httpUrl}/metrics`, {
      headers: { authorization: `Bearer ${inst.adminToken}` },
    })
  ).text()
  const m = new RegExp(`^${name} (\\d+)`, 'm').exec(text)
  return m ? Number(m[1]) : 0
}

/**
 * A firmware file put in the cloud reaches the edge's child devices through the edge's own file
 * service: the command coming down names the edge's URL, the first GET fetches the file once over
 * the link's handshake channel, ten devices cost one transfer, and a revoked edge fetches nothing.
 */
describe('files across the bridge (pull-through)', () => {
  let cloud: Instance
  let edge: Instance
  let upstreamId: string
  let requestId: string
  const firmware = randomBytes(1_500_000)

  beforeAll(async () => {
    ;[cloud, edge] = await Promise.all([startInstance(), startInstance()])
    upstreamId = await bridge(
      edge,
      cloud,
      [
        { source: 'site1', target: 'acme/site1/files', direction: 'both' },
        { source: 'te', target: 'acme/site1/te', direction: 'both' },
      ],
      undefined,
      { grants: ['acme/site1'] }
    )
    const accepted = (await api(cloud, 'GET', '/api/v1/requests?status=Accepted')) as Array<{
      id: string
      instanceId: string
    }>
    requestId = accepted.find((r) => r.instanceId === edge.instanceId)!.id
    await until('the link to forward', async () =>
      (await api(edge, 'GET', `/api/v1/upstreams/${upstreamId}`)).link?.state === 'Forwarding'
        ? true
        : undefined
    )
  }, 120_000)
  afterAll(async () => {
    await Promise.all([cloud?.stop(), edge?.stop()])
  })

  it('serves a firmware file put in the cloud to ten child devices on the edge with one WAN transfer', async () => {
    const put = await fetch(`${cloud.httpUrl}/te/v1/files/acme/site1/files/fw/v2.bin`, {
      method: 'PUT',
      body: firmware,
      headers: { authorization: `Bearer ${cloud.adminToken}` },
    })
    expect(put.status).toBe(201)

    // The device on the edge waits for its command, as thin-edge's agent does.
    const device = await listen(edge.mqttUrl!, 'te/device/child01///cmd/firmware_update/+')
    const operator = await connectMqtt(cloud.mqttUrl!)
    const cloudUrl = `${cloud.httpUrl}/te/v1/files/acme/site1/files/fw/v2.bin`
    await operator.publishAsync(
      'acme/site1/te/device/child01///cmd/firmware_update/42',
      JSON.stringify({ status: 'init', tedgeUrl: cloudUrl, name: 'fw', version: '2' }),
      { qos: 1, retain: true }
    )
    const command = await until('the command on the edge', async () => device.got[0])
    const tedgeUrl = JSON.parse(command.payload).tedgeUrl as string
    // Rewritten to the edge's own file service, at the path the binding maps it to.
    expect(tedgeUrl).toBe(`${edge.httpUrl}/te/v1/files/site1/fw/v2.bin`)
    expect(JSON.parse(command.payload)).toMatchObject({ status: 'init', name: 'fw', version: '2' })

    const sentBefore = await metric(cloud, 'ub_files_sent_bytes_total')
    const bodies = await Promise.all(
      Array.from({ length: 10 }, async () => {
        const res = await fetch(tedgeUrl)
        expect(res.status).toBe(200)
        return Buffer.from(await res.arrayBuffer())
      })
    )
    for (const body of bodies) expect(sha(body)).toBe(sha(firmware))
    // One transfer over the WAN for ten devices: the cloud sent the file's bytes once.
    expect((await metric(cloud, 'ub_files_sent_bytes_total')) - sentBefore).toBe(firmware.length)
    expect(await metric(edge, 'ub_files_pulled_bytes_total')).toBe(firmware.length)

    // The device reports back; the status reaches the cloud.
    const status = await listen(
      cloud.mqttUrl!,
      'acme/site1/te/device/child01///cmd/firmware_update/42'
    )
    const agent = await connectMqtt(edge.mqttUrl!)
    await agent.publishAsync(
      'te/device/child01///cmd/firmware_update/42',
      JSON.stringify({ status: 'successful', tedgeUrl, name: 'fw', version: '2' }),
      { qos: 1, retain: true }
    )
    await until('successful in the cloud', async () =>
      status.got.find((a) => a.payload.includes('successful'))
    )
    await Promise.all([
      device.client.endAsync(),
      status.client.endAsync(),
      operator.endAsync(),
      agent.endAsync(),
    ])
  }, 120_000)

  it('carries a configuration snapshot the device uploads on the edge up to the cloud, its tedgeUrl rewritten both ways', async () => {
    const device = await listen(edge.mqttUrl!, 'te/device/child01///cmd/config_snapshot/+')
    const status = await listen(
      cloud.mqttUrl!,
      'acme/site1/te/device/child01///cmd/config_snapshot/7'
    )
    const operator = await connectMqtt(cloud.mqttUrl!)
    const cloudUrl = `${cloud.httpUrl}/te/v1/files/acme/site1/files/child01/config_snapshot/mosquitto-7`
    await operator.publishAsync(
      'acme/site1/te/device/child01///cmd/config_snapshot/7',
      JSON.stringify({ status: 'init', tedgeUrl: cloudUrl, type: 'mosquitto' }),
      { qos: 1, retain: true }
    )
    const command = await until('the command on the edge', async () => device.got[0])
    const edgeUrl = JSON.parse(command.payload).tedgeUrl as string
    expect(edgeUrl).toBe(`${edge.httpUrl}/te/v1/files/site1/child01/config_snapshot/mosquitto-7`)

    // The device uploads to the URL it was given, then says so.
    const snapshot = 'listener 1883\nallow_anonymous true\n'
    expect((await fetch(edgeUrl, { method: 'PUT', body: snapshot })).status).toBe(201)
    const agent = await connectMqtt(edge.mqttUrl!)
    await agent.publishAsync(
      'te/device/child01///cmd/config_snapshot/7',
      JSON.stringify({ status: 'successful', tedgeUrl: edgeUrl, type: 'mosquitto' }),
      { qos: 1, retain: true }
    )
    const done = await until('successful in the cloud', async () =>
      status.got.find((a) => a.payload.includes('successful'))
    )
    // Going up, the URL names the cloud's own file service, where the file was copied.
    expect(JSON.parse(done.payload).tedgeUrl).toBe(cloudUrl)
    const copied = await until('the snapshot in the cloud', async () => {
      const res = await fetch(cloudUrl, {
        headers: { authorization: `Bearer ${cloud.adminToken}` },
      })
      return res.status === 200 ? res.text() : undefined
    })
    expect(copied).toBe(snapshot)
    expect(await metric(edge, 'ub_files_pushed_bytes_total')).toBe(Buffer.byteLength(snapshot))
    await Promise.all([
      device.client.endAsync(),
      status.client.endAsync(),
      operator.endAsync(),
      agent.endAsync(),
    ])
  }, 60_000)

  it('gives nothing outside the bindings, and nothing once the cloud revoked the edge', async () => {
    // Not under a binding coming in: not fetched.
    const unbound = await fetch(`${edge.httpUrl}/te/v1/files/elsewhere/fw.bin`)
    expect(unbound.status).toBe(404)

    const put = await fetch(`${cloud.httpUrl}/te/v1/files/acme/site1/files/fw/v3.bin`, {
      method: 'PUT',
      body: 'version three',
      headers: { authorization: `Bearer ${cloud.adminToken}` },
    })
    expect(put.status).toBe(201)
    expect((await apiRequest(cloud, 'POST', `/api/v1/requests/${requestId}/revoke`)).status).toBe(
      200
    )
    const res = await fetch(`${edge.httpUrl}/te/v1/files/site1/fw/v3.bin`)
    expect([404, 502]).toContain(res.status)
    expect(await res.text()).not.toContain('version three')
  }, 60_000)
})
