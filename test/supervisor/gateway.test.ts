import { connectAsync } from 'mqtt'
import { afterEach, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { startTestGateway } from '../helpers/gateway.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'
import { startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/**
 * The real gateway as the local side: the supervisor logs in with the internal credential, and
 * the gateway keeps the bridge's persistent session while the upstream is unreachable.
 */
it('through the real gateway: the internal credential, queued QoS 1 kept, QoS 0 dropped, retain kept', async () => {
  const bus = createInProcessBus({ prefix: 't' })
  const gw = await startTestGateway({ bus, anonymous: 'always' })
  const remote = await startAedes()
  const proxy = await startTcpProxy({ targetPort: remote.port })
  const store = await startFakeStore(bus)
  cleanups.push(
    () => bus.close(),
    () => gw.close(),
    () => remote.close(),
    () => proxy.close(),
    () => store.close()
  )
  store.put({ id: 'G1', brokerPort: proxy.port, bindings: [{ source: 'x', target: 'up/x' }] })
  const sup = await startSupervisor(testContext(bus), {
    localBrokerUrl: gw.url,
    backoffBaseMs: 50,
    backoffMaxMs: 500,
  })
  cleanups.push(() => sup.close())
  await waitFor(() => sup.links().get('G1')?.state === 'Forwarding', { what: 'Forwarding' })

  const p = await connectAsync(gw.url, { protocolVersion: 4 })
  cleanups.push(() => p.endAsync(true))
  await p.publishAsync('x/retained', 'r', { qos: 1, retain: true })
  await waitFor(() => remote.published.length === 1, { what: 'retained message' })
  expect(remote.published[0]).toMatchObject({ topic: 'up/x/retained', retain: true })

  proxy.cut()
  await waitFor(() => sup.links().get('G1')?.state !== 'Forwarding', { what: 'link down' })
  for (let i = 0; i < 20; i++) await p.publishAsync('x/q1', String(i), { qos: 1 })
  await p.publishAsync('x/q0', 'lost', { qos: 0 })
  proxy.restore()
  await waitFor(() => remote.published.filter((m) => m.topic === 'up/x/q1').length >= 20, {
    what: '20 queued QoS 1 messages',
  })
  const q1 = remote.published.filter((m) => m.topic === 'up/x/q1').map((m) => Number(m.payload))
  expect(q1).toEqual(Array.from({ length: 20 }, (_, i) => i))
  expect(remote.published.filter((m) => m.topic === 'up/x/q0')).toEqual([])
})
