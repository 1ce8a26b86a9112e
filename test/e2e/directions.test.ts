import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt, sleep } from '../helpers/gateway.ts'
import { bridge, listen, until } from '../helpers/bridging.ts'
import { api, apiRequest, startInstance, type Instance } from '../helpers/instance.ts'

/**
 * Bindings that bring messages down (`in`) and both ways (`both`), with a remap that captures
 * and reorders levels, between two real instances (issue 11, part 1).
 */
describe('bindings in and both directions', () => {
  let down: Instance
  let up: Instance
  let upstreamId = ''
  const clients: MqttClient[] = []
  const upstream = () => api(down, 'GET', `/api/v1/upstreams/${upstreamId}`)
  const forwarding = () =>
    until(
      'the link forwarding',
      async () => ((await upstream()).link?.state === 'Forwarding' ? true : undefined),
      30_000
    )

  beforeAll(async () => {
    ;[down, up] = await Promise.all([startInstance(), startInstance()])
    // Retained upstream before the link exists: it comes down when the bridge subscribes.
    const early = await connectMqtt(up.mqttUrl!)
    await early.publishAsync('acme/sites/s1/l2/setpoint', '21.5', { qos: 1, retain: true })
    await early.endAsync()
    upstreamId = await bridge(down, up, [
      { source: 'site/+/line/+', target: 'acme/sites/{1}/{2}', direction: 'in' },
      { source: 'plant', target: 'acme/plant', direction: 'both' },
      { source: 'metrics', target: 'acme/metrics' },
    ])
    await forwarding()
  }, 120_000)

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)))
    await Promise.all([down?.stop(), up?.stop()])
  })

  it('brings a remapped subtree down, in order, retain flag kept', async () => {
    const local = await listen(down.mqttUrl!, 'site/#')
    clients.push(local.client)
    await until(
      'the retained setpoint',
      async () => (local.got.some((m) => m.payload === '21.5') ? true : undefined),
      10_000
    )
    expect(local.got.find((m) => m.payload === '21.5')).toEqual({
      topic: 'site/s1/line/l2/setpoint',
      payload: '21.5',
      retain: true,
    })
    const cloud = await connectMqtt(up.mqttUrl!)
    clients.push(cloud)
    for (let i = 0; i < 300; i++)
      await cloud.publishAsync('acme/sites/s1/l2/cmd', String(i), { qos: 1 })
    await until(
      'every command',
      async () =>
        local.got.filter((m) => m.topic === 'site/s1/line/l2/cmd').length >= 300 ? true : undefined,
      20_000
    )
    const commands = local.got
      .filter((m) => m.topic === 'site/s1/line/l2/cmd')
      .map((m) => Number(m.payload))
    expect(commands).toEqual([...Array(300).keys()])
    // Not bound in: the local side never sees it.
    await cloud.publishAsync('acme/metrics/x', 'down?', { qos: 1 })
    await sleep(300)
    expect(local.got.some((m) => m.payload === 'down?')).toBe(false)
  }, 60_000)

  it('mirrors both ways, each message once, none echoed back', async () => {
    const local = await listen(down.mqttUrl!, 'plant/#')
    const cloud = await listen(up.mqttUrl!, 'acme/plant/#')
    clients.push(local.client, cloud.client)
    await local.client.publishAsync('plant/up', 'from-edge', { qos: 1 })
    await cloud.client.publishAsync('acme/plant/down', 'from-cloud', { qos: 1 })
    await until(
      'both messages on both sides',
      async () => (local.got.length >= 2 && cloud.got.length >= 2 ? true : undefined),
      10_000
    )
    await sleep(500) // an echo would come now
    expect(local.got.map((m) => `${m.topic} ${m.payload}`).sort()).toEqual([
      'plant/down from-cloud',
      'plant/up from-edge',
    ])
    expect(cloud.got.map((m) => `${m.topic} ${m.payload}`).sort()).toEqual([
      'acme/plant/down from-cloud',
      'acme/plant/up from-edge',
    ])
  }, 30_000)

  it('keeps what came upstream while the link was down, and delivers it when it is back', async () => {
    const local = await listen(down.mqttUrl!, 'site/+/line/+/queued')
    clients.push(local.client)
    await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/deactivate`)
    await until(
      'the link stopped',
      async () => ((await upstream()).link?.state !== 'Forwarding' ? true : undefined),
      20_000
    )
    const cloud = await connectMqtt(up.mqttUrl!)
    clients.push(cloud)
    for (let i = 0; i < 50; i++)
      await cloud.publishAsync('acme/sites/s2/l9/queued', String(i), { qos: 1 })
    await sleep(300)
    expect(local.got).toEqual([])
    await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/activate`)
    await forwarding()
    await until(
      'the queued messages',
      async () => (local.got.length >= 50 ? true : undefined),
      20_000
    )
    expect(local.got.map((m) => Number(m.payload))).toEqual([...Array(50).keys()])
    expect(new Set(local.got.map((m) => m.topic))).toEqual(new Set(['site/s2/line/l9/queued']))
  }, 60_000)

  it('answers a dry run for one topic: bindings, resulting topics, link health, tree path', async () => {
    const route = (topic: string) =>
      api(down, 'GET', `/api/v1/route?topic=${encodeURIComponent(topic)}`)
    const hop = { upstreamId, peerInstanceId: up.instanceId, link: 'Active', closesCycle: false }
    const coming = await route('site/s1/line/l2/cmd')
    expect(coming.out).toEqual([])
    expect(coming.in).toEqual([
      expect.objectContaining({ ...hop, direction: 'in', topic: 'acme/sites/s1/l2/cmd' }),
    ])
    const both = await route('plant/a/b')
    expect(both.out).toEqual([
      expect.objectContaining({ ...hop, direction: 'both', topic: 'acme/plant/a/b' }),
    ])
    expect(both.in).toEqual([
      expect.objectContaining({ direction: 'both', topic: 'acme/plant/a/b' }),
    ])
    expect(both.reaches).toEqual([up.instanceId])
    // The tree comes from the mesh's adverts, which flood a round after the link is up.
    const path = await until(
      'the link on the spanning tree',
      async () => (await route('plant/a/b')).out[0].treePath ?? undefined,
      30_000
    )
    expect(path).toEqual([down.instanceId, up.instanceId])
    const unbound = await route('elsewhere/x')
    expect(unbound).toMatchObject({ out: [], in: [], reaches: [] })
    const wildcard = await apiRequest(down, 'GET', '/api/v1/route?topic=plant/%23')
    expect(wildcard.status).toBe(400)
    expect(wildcard.body.error.code).toBe('invalid_request')
  }, 60_000)

  it('draws the link in the mesh view: one edge, Active, on the spanning tree', async () => {
    const edge = {
      from: down.instanceId,
      to: up.instanceId,
      upstreamId,
      state: 'Active',
      onTree: true,
    }
    const mesh = await until(
      'the edge on the tree',
      async () => {
        const m = await api(down, 'GET', '/api/v1/mesh')
        return m.edges.some((e: { onTree: boolean }) => e.onTree) ? m : undefined
      },
      30_000
    )
    expect(mesh.instanceId).toBe(down.instanceId)
    expect(mesh.nodes).toEqual(
      expect.arrayContaining([
        { id: down.instanceId, self: true },
        { id: up.instanceId, self: false },
      ])
    )
    expect(mesh.edges).toEqual([expect.objectContaining(edge)])
    // The upstream's view of the same link: it is the far end, and has no upstream of its own.
    const far = await api(up, 'GET', '/api/v1/mesh')
    expect(far.edges).toEqual([
      expect.objectContaining({ from: down.instanceId, to: up.instanceId, state: 'Active' }),
    ])
    expect(far.edges[0].upstreamId).toBeUndefined()
  }, 40_000)

  it('answers the same dry run from the CLI', async () => {
    const cli = (...args: string[]) =>
      promisify(execFile)(
        process.execPath,
        ['--import', 'tsx', 'services/launch/cli.ts', 'route', ...args, '--url', down.httpUrl],
        {
          cwd: new URL('../..', import.meta.url).pathname,
          env: { ...process.env, UB_ADMIN_TOKEN: down.adminToken },
        }
      ).then(
        (r) => ({ code: 0, out: r.stdout, err: r.stderr }),
        (e: { code: number; stdout: string; stderr: string }) => ({
          code: e.code,
          out: e.stdout,
          err: e.stderr,
        })
      )
    const ok = await cli('plant/a/b')
    expect(ok.code).toBe(0)
    expect(ok.out).toMatch(/goes to +acme\/plant\/a\/b +on .* both, link Active/)
    expect(ok.out).toMatch(/comes from acme\/plant\/a\/b/)
    const bad = await cli('plant/#')
    expect(bad.code).toBe(1)
    expect(bad.err).toMatch(/invalid_request: .*concrete topic.*\(HTTP 400 /)
  }, 30_000)

  it("reports the link's health on thin-edge's schema, answers a health check, and says down when stopped", async () => {
    const service = `te/device/main/service/ub-bridge-${upstreamId}`
    const health = await listen(down.mqttUrl!, `${service}/status/health`)
    clients.push(health.client)
    const statuses = () => health.got.map((m) => JSON.parse(m.payload).status as string)
    await until(
      'the retained health',
      async () => (health.got.length > 0 ? true : undefined),
      10_000
    )
    expect(health.got[0]).toMatchObject({ retain: true })
    expect(statuses()).toEqual(['up'])
    await health.client.publishAsync(`${service}/cmd/health/check`, '{}', { qos: 1 })
    await until('the answer', async () => (health.got.length > 1 ? true : undefined), 10_000)
    expect(statuses()).toEqual(['up', 'up'])
    await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/deactivate`)
    await until('down', async () => (statuses().at(-1) === 'down' ? true : undefined), 20_000)
    await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/activate`)
    await until('up again', async () => (statuses().at(-1) === 'up' ? true : undefined), 30_000)
  }, 60_000)
})
