import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '../helpers/mosquitto.ts'
import { connectMqtt } from '../helpers/gateway.ts'
import { bridge, listen, until, type BridgeTransport } from '../helpers/bridging.ts'
import { api, startInstance, type Instance } from '../helpers/instance.ts'

/**
 * An Active link made with a wrong broker port, corrected in place with PATCH: the supervisor
 * reconnects with the new port, the state stays Active, and messages flow (README, Edit an upstream).
 */
describe('PATCH /api/v1/upstreams/{id} on an Active link', () => {
  let down: Instance
  let up: Instance
  let wrongPort = 0

  beforeAll(async () => {
    ;[down, up, wrongPort] = await Promise.all([startInstance(), startInstance(), freePort()])
  }, 60_000)
  afterAll(async () => {
    await Promise.all([down?.stop(), up?.stop()])
  })

  it('reconnects with a corrected broker port and forwards', async () => {
    const wrong: BridgeTransport = {
      host: 'mqtt://127.0.0.1',
      brokerPort: () => wrongPort, // nothing listens there
      httpPort: (to) => Number(new URL(to.httpUrl).port),
    }
    const id = await bridge(down, up, [{ source: 'plant', target: 'acme/plant' }], wrong)
    const link = async () => (await api(down, 'GET', `/api/v1/upstreams/${id}`)).link
    await until(
      'the link to fail',
      async () => ((await link())?.lastError ? true : undefined),
      20_000
    )
    expect((await link()).state).not.toBe('Forwarding')

    const rightPort = Number(new URL(up.mqttUrl!).port)
    const edited = await api(down, 'PATCH', `/api/v1/upstreams/${id}`, { brokerPort: rightPort })
    expect(edited).toMatchObject({ status: 'Active', brokerPort: rightPort })
    await until(
      'Forwarding',
      async () => ((await link())?.state === 'Forwarding' ? true : undefined),
      20_000
    )

    const cloud = await listen(up.mqttUrl!, 'acme/#')
    const local = await connectMqtt(down.mqttUrl!)
    try {
      await local.publishAsync('plant/temp', '21', { qos: 1 })
      await until('the message upstream', async () => (cloud.got.length ? true : undefined), 10_000)
      expect(cloud.got[0]).toMatchObject({ topic: 'acme/plant/temp', payload: '21' })
    } finally {
      await Promise.all([local.endAsync(true), cloud.client.endAsync(true)])
    }

    const log = await api(down, 'GET', `/api/v1/upstreams/${id}/transitions`)
    expect(log.items.at(-1)).toMatchObject({
      from: 'Active',
      to: 'Active',
      event: {
        type: 'upstream.connection.set',
        changes: { brokerPort: { from: wrongPort, to: rightPort } },
      },
    })
    expect((await api(down, 'GET', `/api/v1/upstreams/${id}/replay`)).verify.ok).toBe(true)
  }, 90_000)
})
