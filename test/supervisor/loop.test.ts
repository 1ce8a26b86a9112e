import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { connectAsync } from 'mqtt'
import { afterEach, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { serveJson } from '../../services/common/bus/rpc.ts'
import { STORE_QUEUE, storeSubject } from '../../services/contracts/store.ts'
import { watchPeers } from '../../services/gateway/split-horizon.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { startTestGateway } from '../helpers/gateway.ts'
import { collect, startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/**
 * One instance: a bus, a gateway, a store, a handshake stub. The real gateway brings the split
 * horizon rule (services/gateway/split-horizon.ts); without it, a plain aedes has none.
 */
async function instance(instanceId: string, { splitHorizon = true } = {}) {
  const bus = createInProcessBus({ prefix: instanceId })
  const gw = splitHorizon
    ? await startTestGateway({ bus, anonymous: 'always' })
    : await startAedes()
  const store = await startFakeStore(bus)
  // The upstream side's check of a bridge's credential: the fake store hands every link 'secret'.
  const authenticate = await serveJson<
    { instanceId: string; secret: string },
    { ok: boolean; requestId?: string; grants?: string[] }
  >(
    bus,
    storeSubject('request.authenticate'),
    async ({ secret }) =>
      secret === 'secret' ? { ok: true, requestId: 'R', grants: ['plant'] } : { ok: false },
    { queue: STORE_QUEUE }
  )
  // The public handshake status, which names the upstream server's instance.
  const http: Server = createServer((req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(
      JSON.stringify({
        requestId: req.url!.split('/').pop(),
        status: 'Accepted',
        grants: ['#'],
        instanceId,
      })
    )
  })
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()))
  const httpPort = (http.address() as AddressInfo).port
  cleanups.push(
    () => bus.close(),
    () => gw.close(),
    () => store.close(),
    () => authenticate.unsubscribe(),
    () => new Promise((r) => http.close(r))
  )
  return {
    instanceId,
    bus,
    gw: { url: gw.url, port: Number(new URL(gw.url).port) },
    store,
    httpPort,
  }
}

it('two instances bridged both ways on overlapping namespaces: every message arrives once', async () => {
  const a = await instance('UB_A')
  const b = await instance('UB_B')
  const bind = [{ source: 'plant', target: 'plant' }]
  a.store.put({
    id: 'A2B',
    brokerPort: b.gw.port,
    httpPort: b.httpPort,
    remoteRequestId: 'R1',
    bindings: bind,
  })
  b.store.put({
    id: 'B2A',
    brokerPort: a.gw.port,
    httpPort: a.httpPort,
    remoteRequestId: 'R2',
    bindings: bind,
  })
  const supA = await startSupervisor(testContext(a.bus, {}, a.instanceId), {
    localBrokerUrl: a.gw.url,
  })
  const supB = await startSupervisor(testContext(b.bus, {}, b.instanceId), {
    localBrokerUrl: b.gw.url,
  })
  cleanups.push(
    () => supA.close(),
    () => supB.close()
  )
  await waitFor(
    () =>
      supA.links().get('A2B')?.state === 'Forwarding' &&
      supB.links().get('B2A')?.state === 'Forwarding',
    { what: 'both links' }
  )
  // Both gateways know the peer of their bridge session before traffic starts.
  const peersA = await watchPeers(a.bus)
  const peersB = await watchPeers(b.bus)
  cleanups.push(
    () => peersA.close(),
    () => peersB.close()
  )
  await waitFor(() => peersA.peerOf('A2B') === 'UB_B' && peersB.peerOf('B2A') === 'UB_A', {
    what: 'peers in links KV',
  })

  const subA = await collect(a.gw.url, 'plant/#')
  const subB = await collect(b.gw.url, 'plant/#')
  cleanups.push(
    () => subA.close(),
    () => subB.close()
  )
  const pubA = await connectAsync(a.gw.url, { protocolVersion: 4 })
  const pubB = await connectAsync(b.gw.url, { protocolVersion: 4 })
  cleanups.push(
    () => pubA.endAsync(true),
    () => pubB.endAsync(true)
  )
  for (let i = 0; i < 50; i++) {
    await pubA.publishAsync('plant/a/seq', String(i), { qos: 1 })
    await pubB.publishAsync('plant/b/seq', String(i), { qos: (i % 2) as 0 | 1 })
  }
  await waitFor(() => subA.got.length >= 100 && subB.got.length >= 100, { what: '100 each' })
  await new Promise((r) => setTimeout(r, 500)) // a loop would keep them coming
  const count = (got: typeof subA.got) =>
    got.reduce<Record<string, number>>((acc, m) => {
      acc[m.topic] = (acc[m.topic] ?? 0) + 1
      return acc
    }, {})
  expect(count(subA.got)).toEqual({ 'plant/a/seq': 50, 'plant/b/seq': 50 })
  expect(count(subB.got)).toEqual({ 'plant/a/seq': 50, 'plant/b/seq': 50 })
  expect(supA.links().get('A2B')!.forwarded).toBe(50)
  expect(supB.links().get('B2A')!.forwarded).toBe(50)
  // What split horizon refused was also taken off the bridge sessions' queues.
  for (const bus of [a.bus, b.bus]) expect(await (await bus.kv('gw_outgoing')).keys()).toEqual([])
})

it('without split horizon, the duplicate guard (when on) stops the storm and counts what it dropped', async () => {
  const a = await instance('UB_A', { splitHorizon: false })
  const b = await instance('UB_B', { splitHorizon: false })
  const bind = [{ source: 'plant', target: 'plant' }]
  a.store.put({ id: 'A2B', brokerPort: b.gw.port, bindings: bind })
  b.store.put({ id: 'B2A', brokerPort: a.gw.port, bindings: bind })
  // The default guard counts within 200 ms: on a loaded machine a round of the loop can take
  // longer than 10 ms, the window restarts, and how many rounds pass depends on the machine.
  // A 60 s window makes the trip depend only on the threshold.
  const guard = { threshold: 20, windowMs: 60_000 }
  const supA = await startSupervisor(testContext(a.bus, {}, a.instanceId), {
    localBrokerUrl: a.gw.url,
    dupGuard: guard,
  })
  const supB = await startSupervisor(testContext(b.bus, {}, b.instanceId), {
    localBrokerUrl: b.gw.url,
    dupGuard: guard,
  })
  cleanups.push(
    () => supA.close(),
    () => supB.close()
  )
  await waitFor(
    () =>
      supA.links().get('A2B')?.state === 'Forwarding' &&
      supB.links().get('B2A')?.state === 'Forwarding',
    { what: 'both links' }
  )
  const subA = await collect(a.gw.url, 'plant/#')
  cleanups.push(() => subA.close())
  const pubA = await connectAsync(a.gw.url, { protocolVersion: 4 })
  cleanups.push(() => pubA.endAsync(true))
  for (let i = 0; i < 10; i++) await pubA.publishAsync('plant/a/seq', String(i), { qos: 1 })
  await waitFor(
    () =>
      supA.links().get('A2B')!.duplicatesDropped + supB.links().get('B2A')!.duplicatesDropped >= 10,
    {
      what: 'the guard tripping',
    }
  )
  const settled = subA.got.length
  await new Promise((r) => setTimeout(r, 500))
  // The loop is broken: nothing more arrives, and each message went round a bounded number of times.
  expect(subA.got.length).toBe(settled)
  expect(settled).toBeLessThanOrEqual(10 * 25)
})
