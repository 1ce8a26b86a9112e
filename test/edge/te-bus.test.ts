import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import type { GatewayOptions } from '../../services/gateway/index.ts'
import {
  collect,
  connectMqtt,
  eventually,
  sleep,
  startTestGateway,
  type TestGateway,
} from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { startGatewayPair } from '../gateway/fixture.ts'

const run = promisify(execFile)

/**
 * The gateway as thin-edge.io's MQTT bus: devices publish as thin-edge's docs show with
 * `tedge mqtt pub` (here the real mosquitto_pub), and the gateway answers on `te/errors`,
 * cascades deregistrations and auto-registers, as thin-edge does.
 */
describe('the te/ bus', () => {
  const closers: Array<() => Promise<unknown> | unknown> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close()
  })

  async function start(options: Partial<GatewayOptions> = {}): Promise<TestGateway> {
    const bus = createInProcessBus({ prefix: uniquePrefix('te') })
    const gw = await startTestGateway({ bus, ...options })
    closers.push(
      () => bus.close(),
      () => gw.close()
    )
    return gw
  }

  /** `mosquitto_pub -t topic -m payload [-r]`; an empty payload is sent with `-n`. */
  async function pub(gw: TestGateway, topic: string, payload: string, retain = false) {
    const args = ['-h', '127.0.0.1', '-p', String(gw.ports.mqtt), '-t', topic, '-q', '1']
    args.push(...(payload === '' ? ['-n'] : ['-m', payload]), ...(retain ? ['-r'] : []))
    await run('mosquitto_pub', args)
  }

  async function subscriber(gw: TestGateway, filter: string) {
    const client = await connectMqtt(gw.url)
    closers.push(() => client.end(true))
    const got = collect(client)
    await client.subscribeAsync(filter, { qos: 1 })
    return got
  }

  /** What a new subscriber to `te/#` gets retained, by topic. */
  async function retainedUnderTe(gw: TestGateway): Promise<Record<string, string>> {
    const client = await connectMqtt(gw.url)
    const got = collect(client)
    await client.subscribeAsync('te/#', { qos: 1 })
    await sleep(150)
    await client.endAsync()
    return Object.fromEntries(got.messages.filter((m) => m.retain).map((m) => [m.topic, m.payload]))
  }

  it('says nothing about a valid measurement and names the topic of a non-numeric one', async () => {
    const gw = await start()
    const errors = await subscriber(gw, 'te/errors')
    const data = await subscriber(gw, 'te/device/main///m/+')
    // thin-edge's docs: tedge mqtt pub te/device/main///m/environment '{"temperature": 23}'
    await pub(gw, 'te/device/main///m/environment', '{"temperature": 23, "temp-1": 1}')
    await pub(gw, 'te/device/main///m/bad', '{"temperature": "hot"}')

    const [line] = await errors.waitFor(1)
    expect(line!.payload).toMatch(/^Invalid message on te\/device\/main\/\/\/m\/bad: .*number/)
    expect(line).toMatchObject({ retain: false, qos: 0 })
    await sleep(100)
    expect(errors.messages).toHaveLength(1)
    // Both delivered as published: thin-edge's broker does not drop malformed messages either.
    expect((await data.waitFor(2)).map((m) => m.payload)).toEqual([
      '{"temperature": 23, "temp-1": 1}',
      '{"temperature": "hot"}',
    ])
    expect(gw.stats().teErrors).toBe(1)
    expect(await gw.metrics.getSingleMetricAsString('ub_gateway_te_errors_total')).toMatch(/ 1$/m)
  })

  it('reports a malformed registration and a topic outside the schema', async () => {
    const gw = await start()
    const errors = await subscriber(gw, 'te/errors')
    await pub(gw, 'te/device/child01//', '{"@type": "device", "name": "child01"}', true)
    await pub(gw, 'te/device/child01', '{"@type": "child-device"}', true)
    await pub(gw, 'te/device/child01///x/y', '{}')
    const lines = (await errors.waitFor(3)).map((m) => m.payload)
    expect(lines).toEqual([
      expect.stringMatching(/^Invalid message on te\/device\/child01\/\/: .*reserved/),
      expect.stringMatching(/^Invalid message on te\/device\/child01: .*identifier segment/),
      expect.stringMatching(/^Invalid message on te\/device\/child01\/\/\/x\/y: .*unknown channel/),
    ])
    // Kept as published, too.
    expect(await retainedUnderTe(gw)).toMatchObject({
      'te/device/child01//': '{"@type": "device", "name": "child01"}',
    })
  })

  it('clears the retained messages of a deregistered child and of its service', async () => {
    const gw = await start()
    // thin-edge's docs (entity management): a child device, a service of it, alarms on both.
    await pub(gw, 'te/device/child01//', '{"@type":"child-device","name":"child01"}', true)
    await pub(gw, 'te/device/child01/service/nodered', '{"@type":"service","name":"nodered"}', true)
    await pub(gw, 'te/device/child01///a/temp_high', '{"text":"too hot","severity":"major"}', true)
    await pub(gw, 'te/device/child01/service/nodered/a/down', '{"text":"down"}', true)
    await pub(gw, 'te/device/child01///twin/location', '{"lat":1}', true)
    await pub(gw, 'te/device/child02//', '{"@type":"child-device"}', true)
    await pub(gw, 'te/device/child02///a/temp_high', '{"text":"too hot"}', true)
    expect(Object.keys(await retainedUnderTe(gw))).toHaveLength(7)

    await pub(gw, 'te/device/child01//', '', true)
    await eventually(async () => Object.keys(await retainedUnderTe(gw)).length === 2)
    expect(await retainedUnderTe(gw)).toEqual({
      'te/device/child02//': '{"@type":"child-device"}',
      'te/device/child02///a/temp_high': '{"text":"too hot"}',
    })
  })

  it('publishes the registration of an unknown child when it first publishes, once', async () => {
    const gw = await start()
    const all = await subscriber(gw, 'te/#')
    await pub(gw, 'te/device/child1///m/temp', '{"temperature": 25}')
    await pub(gw, 'te/device/child1/service/app/m/temp', '{"temperature": 26}')
    await pub(gw, 'te/device/child1///m/temp', '{"temperature": 27}')
    await all.waitFor(5)
    await sleep(100)
    const registrations = all.messages.filter((m) => !m.topic.includes('/m/'))
    expect(registrations).toEqual([
      expect.objectContaining({
        topic: 'te/device/child1//',
        payload: '{"@type":"child-device","@parent":"device/main//","name":"child1"}',
      }),
      expect.objectContaining({
        topic: 'te/device/child1/service/app',
        payload: '{"@type":"service","@parent":"device/child1//","name":"app"}',
      }),
    ])
    expect(Object.keys(await retainedUnderTe(gw)).sort()).toEqual([
      'te/device/child1//',
      'te/device/child1/service/app',
    ])
  })

  it('does not auto-register with teAutoRegister off, and checks nothing with teRoot empty', async () => {
    const quiet = await start({ te: { root: 'te', autoRegister: false } })
    await pub(quiet, 'te/device/child1///m/temp', '{"temperature": 25}')
    await sleep(100)
    expect(await retainedUnderTe(quiet)).toEqual({})

    const off = await start({ te: { root: '', autoRegister: true } })
    const errors = await subscriber(off, 'te/errors')
    await pub(off, 'te/device/child1///m/temp', '{"temperature": "x"}')
    await sleep(100)
    expect(errors.messages).toEqual([])
    expect(await retainedUnderTe(off)).toEqual({})
  })

  it('on two gateways: one error line per message, and a deregistration clears both', async () => {
    const pair = await startGatewayPair('te-pair')
    closers.push(() => pair.close())
    const { a, b } = pair
    const [errorsA, errorsB] = await Promise.all([
      subscriber(a, 'te/errors'),
      subscriber(b, 'te/errors'),
    ])
    await pub(a, 'te/device/child01//', '{"@type":"child-device"}', true)
    await pub(b, 'te/device/child01/service/app', '{"@type":"service"}', true)
    await pub(b, 'te/device/child01/service/app/a/down', '{"text":"down"}', true)
    await pub(b, 'te/device/child01///m/bad', '{"t": [1]}')
    await Promise.all([errorsA.waitFor(1), errorsB.waitFor(1)])
    await eventually(async () => Object.keys(await retainedUnderTe(a)).length === 3)

    await pub(a, 'te/device/child01//', '', true)
    await eventually(async () => Object.keys(await retainedUnderTe(b)).length === 0)
    expect(await retainedUnderTe(a)).toEqual({})
    expect([errorsA.messages.length, errorsB.messages.length]).toEqual([1, 1])
  })

  it('survives any input and never answers its own errors', async () => {
    const gw = await start()
    const errors = await subscriber(gw, 'te/errors')
    const client = await connectMqtt(gw.url)
    closers.push(() => client.end(true))
    const junk = Buffer.from([0xff, 0xfe, 0x00, 0x7b])
    for (const topic of ['te/', 'te//', 'te/a/b/c/d/e/f/g', 'te/device/x///cmd/op/', 'te/errors'])
      await client.publishAsync(topic, junk, { qos: 1 })
    await client.publishAsync('te/device/x//', junk, { qos: 1, retain: true })
    await errors.waitFor(6)
    await sleep(100)
    // Five junk messages plus 'te/errors' itself delivered once: nothing answered it.
    expect(errors.messages.filter((m) => m.payload.startsWith('Invalid'))).toHaveLength(5)
    expect(gw.stats().teErrors).toBe(5)
  })
})
