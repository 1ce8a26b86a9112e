import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connectMqtt } from '../helpers/gateway.ts'
import { bridge, until } from '../helpers/bridging.ts'
import { api, startInstance, type Instance } from '../helpers/instance.ts'

/**
 * What deactivation and revocation mean for a bridge's backlog (README, "Deactivate, revoke,
 * delete"), on two real instances: deactivation pauses (the bridge's session on the local gateway
 * keeps queuing, and the queue goes upstream on re-activation); revocation ends the session (the
 * supervisor purges it), so nothing published while revoked arrives after a new approval.
 */
describe("a bridge's backlog across deactivation and revocation", () => {
  let down: Instance
  let up: Instance
  let upstreamId = ''
  let pub: MqttClient
  let sub: MqttClient
  const got: string[] = []

  const upstream = () => api(down, 'GET', `/api/v1/upstreams/${upstreamId}`)
  const forwarding = (what: string) =>
    until(
      what,
      async () => ((await upstream()).link?.state === 'Forwarding' ? true : undefined),
      30_000
    )
  const publish = async (tag: string, n: number) => {
    for (let i = 0; i < n; i++) await pub.publishAsync('plant/x', `${tag}-${i}`, { qos: 1 })
  }
  const arrived = (tag: string) => got.filter((p) => p.startsWith(`${tag}-`)).length

  beforeAll(async () => {
    ;[down, up] = await Promise.all([startInstance(), startInstance()])
    upstreamId = await bridge(down, up, [{ source: 'plant', target: 'plant' }])
    await forwarding('the link forwarding')
    sub = await connectMqtt(up.mqttUrl!)
    sub.on('message', (_topic, payload) => got.push(payload.toString()))
    await sub.subscribeAsync('plant/#', { qos: 1 })
    pub = await connectMqtt(down.mqttUrl!)
  }, 120_000)

  afterAll(async () => {
    await Promise.all([pub?.endAsync(true), sub?.endAsync(true)])
    await Promise.all([down?.stop(), up?.stop()])
  })

  it('deactivation pauses: what was published meanwhile goes upstream on re-activation', async () => {
    await publish('live', 5)
    await until('live messages', async () => (arrived('live') === 5 ? true : undefined), 20_000)
    await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/deactivate`)
    await until(
      'the link stopped',
      async () => {
        const u = await upstream()
        return u.status === 'Approved' && u.link?.state !== 'Forwarding' ? true : undefined
      },
      20_000
    )
    await publish('paused', 20)
    await new Promise((r) => setTimeout(r, 500))
    expect(arrived('paused')).toBe(0)
    await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/activate`)
    await until(
      'the paused backlog',
      async () => (arrived('paused') === 20 ? true : undefined),
      30_000
    )
  }, 90_000)

  it('revocation ends the session: nothing published while revoked arrives after a new approval', async () => {
    const requests = (await api(up, 'GET', '/api/v1/requests?status=Accepted')) as Array<{
      id: string
      instanceId: string
    }>
    const request = requests.find((r) => r.instanceId === down.instanceId)!
    await api(up, 'POST', `/api/v1/requests/${request.id}/revoke`)
    await until(
      'the downstream sees Revoked',
      async () => {
        await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/refresh`)
        return (await upstream()).status === 'Revoked' ? true : undefined
      },
      30_000
    )
    await publish('revoked', 20)
    await new Promise((r) => setTimeout(r, 1_000)) // the supervisor's purge, whenever it lands

    // Ask again, be accepted, activate: the link runs on a fresh session.
    await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/request`)
    const again = await until(
      'the new request',
      async () => {
        const pending = (await api(up, 'GET', '/api/v1/requests?status=Pending')) as Array<{
          id: string
          instanceId: string
        }>
        return pending.find((r) => r.instanceId === down.instanceId)
      },
      30_000
    )
    await api(up, 'POST', `/api/v1/requests/${again.id}/accept`, {})
    await until(
      'Approved again',
      async () => {
        await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/refresh`)
        return (await upstream()).status === 'Approved' ? true : undefined
      },
      30_000
    )
    await api(down, 'POST', `/api/v1/upstreams/${upstreamId}/activate`)
    await forwarding('the link forwarding again')
    await publish('after', 5)
    await until(
      'messages after re-approval',
      async () => (arrived('after') === 5 ? true : undefined),
      30_000
    )
    await new Promise((r) => setTimeout(r, 500))
    expect(arrived('revoked')).toBe(0)
  }, 120_000)
})
