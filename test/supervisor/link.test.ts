import { connectAsync } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { createBridgeLink, type BridgeLink } from '../../services/supervisor/bridge.ts'
import { collect, startAedes, waitFor, type TestBroker } from './aedes.ts'
import { linkOptions } from './link-options.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function setup(
  bindings = [{ source: 'plant1/line3', target: 'acme/plant1/line3' }],
  { sameBroker = false } = {}
) {
  const local = await startAedes()
  const remote = sameBroker ? local : await startAedes()
  cleanups.push(
    () => local.close(),
    () => remote.close()
  )
  const link = createBridgeLink(linkOptions(local, remote, bindings, 64))
  cleanups.push(() => link.stop())
  await waitFor(() => link.status().state === 'Forwarding', { what: 'Forwarding' })
  return { local, remote, link }
}

const pub = async (b: TestBroker) => {
  const c = await connectAsync(b.url, { protocolVersion: 4 })
  cleanups.push(() => c.endAsync(true))
  return c
}

describe('bridge link', () => {
  it('mirrors source/# and source itself to the target, keeping QoS, retain, bytes and order', async () => {
    const { local, remote, link } = await setup()
    const sub = await collect(remote.url, 'acme/#')
    cleanups.push(() => sub.close())
    const p = await pub(local)
    const bytes = Buffer.from([0, 1, 2, 255, 254, 10, 13])
    await p.publishAsync('plant1/line3', 'self', { qos: 1 })
    await p.publishAsync('plant1/line3/press/temp', bytes, { qos: 1, retain: true })
    await p.publishAsync('plant1/line30/x', 'not under the namespace', { qos: 1 })
    await p.publishAsync('other/x', 'unbound', { qos: 1 })
    for (let i = 0; i < 200; i++)
      await p.publishAsync('plant1/line3/seq', String(i), { qos: (i % 2) as 0 | 1 })
    await waitFor(() => sub.got.length >= 202, { what: '202 messages' })
    // Live copies reach plain subscribers with retain=0 [MQTT-3.3.1-9]; the flag shows below.
    expect(sub.got.filter((m) => !m.topic.endsWith('/seq'))).toEqual([
      { topic: 'acme/plant1/line3', payload: Buffer.from('self'), qos: 1, retain: false },
      { topic: 'acme/plant1/line3/press/temp', payload: bytes, qos: 1, retain: false },
    ])
    // Order is kept per topic and QoS: aedes itself lets QoS 0 overtake pipelined QoS 1.
    const seq = (qos: number) =>
      sub.got.filter((m) => m.topic.endsWith('/seq') && m.qos === qos).map((m) => Number(m.payload))
    expect(seq(0)).toEqual(Array.from({ length: 100 }, (_, i) => 2 * i))
    expect(seq(1)).toEqual(Array.from({ length: 100 }, (_, i) => 2 * i + 1))
    // A late subscriber sees the mirrored retained message.
    const late = await collect(remote.url, 'acme/plant1/line3/press/temp')
    cleanups.push(() => late.close())
    await waitFor(() => late.got.length === 1, { what: 'retained copy' })
    expect(late.got[0]!.retain).toBe(true)
    await waitFor(() => link.status().forwarded === 202, { what: 'counters' })
    expect(link.status()).toMatchObject({ state: 'Forwarding', waiting: 0, forwarded: 202 })
  })

  it('applies binding changes live without dropping the link', async () => {
    const { local, remote, link } = await setup()
    const sub = await collect(remote.url, '#')
    cleanups.push(() => sub.close())
    const p = await pub(local)
    const connects: number[] = []
    local.broker.on('client', () => connects.push(Date.now()))
    await link.setBindings([
      { source: 'plant1/line3', target: 'acme/plant1/line3' },
      { source: 'plant2', target: 'acme/plant2' },
    ])
    await p.publishAsync('plant2/a', 'x', { qos: 1 })
    await waitFor(() => sub.got.some((m) => m.topic === 'acme/plant2/a'), { what: 'new binding' })
    await link.setBindings([{ source: 'plant2', target: 'acme/p2' }])
    await p.publishAsync('plant1/line3/a', 'gone', { qos: 1 })
    await p.publishAsync('plant2/b', 'y', { qos: 1 })
    await waitFor(() => sub.got.some((m) => m.topic === 'acme/p2/b'), { what: 'retargeted' })
    expect(sub.got.map((m) => m.topic)).toEqual(['acme/plant2/a', 'acme/p2/b'])
    expect(connects).toEqual([])
  })

  it('drops the filters of bindings removed while the link was down, once it is back', async () => {
    const { local, remote, link } = await setup()
    const port = remote.port
    await remote.close() // the upstream goes away: the link backs off
    await waitFor(() => link.status().state !== 'Forwarding', { what: 'link down' })
    await link.setBindings([{ source: 'plant2', target: 'acme/plant2' }])
    const back = await startAedes({}, port)
    cleanups.push(() => back.close())
    await waitFor(() => link.status().state === 'Forwarding', { timeoutMs: 15_000, what: 'back' })
    const sub = await collect(back.url, '#')
    cleanups.push(() => sub.close())
    const p = await pub(local)
    const unroutedBefore = link.status().unrouted
    for (let i = 0; i < 5; i++) await p.publishAsync('plant1/line3/old', String(i), { qos: 1 })
    await p.publishAsync('plant2/new', 'x', { qos: 1 })
    await waitFor(() => sub.got.length === 1, { what: 'the new binding' })
    expect(sub.got[0]!.topic).toBe('acme/plant2/new')
    // The old filter is gone from the session: the gateway sent nothing under it.
    expect(link.status().unrouted).toBe(unroutedBefore)
  })
})
