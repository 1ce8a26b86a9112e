import { connectAsync } from 'mqtt'
import { afterEach, expect, it } from 'vitest'
import { createInProcessBus, createInProcessHub } from '../../services/common/bus/in-process.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { startTestGateway } from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {})
})

/**
 * A supervisor lists every gateway of its fabric (`localBrokerUrl`, comma-separated). When the
 * one its bridge reads from dies, the link resumes its session on the next: the session and its
 * queue are the cluster's, not that gateway's. With one fixed gateway, the owner kept its lease
 * and retried the dead one while the bridge stood still (51 s in a fault run).
 */
it('moves its bridge to the next gateway when the one it reads dies, and loses nothing', async () => {
  const hub = createInProcessHub()
  const prefix = uniquePrefix('failover')
  const busA = createInProcessBus({ prefix, hub })
  const busB = createInProcessBus({ prefix, hub })
  const gwA = await startTestGateway({ bus: busA, gatewayId: 'a', anonymous: 'always' })
  const gwB = await startTestGateway({ bus: busB, gatewayId: 'b', anonymous: 'always' })
  const remote = await startAedes()
  const store = await startFakeStore(busB)
  cleanups.push(
    () => busA.close(),
    () => busB.close(),
    () => gwB.close(),
    () => remote.close(),
    () => store.close()
  )
  store.put({ id: 'F1', brokerPort: remote.port, bindings: [{ source: 'f', target: 'up/f' }] })
  const sup = await startSupervisor(testContext(busB), {
    localBrokerUrl: `${gwA.url},${gwB.url}`,
    backoffBaseMs: 50,
    backoffMaxMs: 500,
  })
  cleanups.push(() => sup.close())
  await waitFor(() => sup.links().get('F1')?.state === 'Forwarding', { what: 'Forwarding' })
  expect(gwA.stats().clients).toBeGreaterThan(0) // the first listed gateway holds the session

  // A publisher on the surviving gateway, before, during and after gateway A's death.
  const p = await connectAsync(gwB.url, { protocolVersion: 4 })
  cleanups.push(() => p.endAsync(true))
  const COUNT = 300
  const sending = (async () => {
    for (let i = 0; i < COUNT; i++) {
      await p.publishAsync(`f/${i % 4}`, String(i), { qos: 1 })
      if (i % 20 === 0) await new Promise((r) => setTimeout(r, 10))
    }
  })()
  await waitFor(() => remote.published.length >= 50, { what: 'traffic before the kill' })
  await gwA.close()
  await sending

  await waitFor(() => new Set(remote.published.map((m) => m.payload.toString())).size >= COUNT, {
    what: `all ${COUNT} messages upstream`,
    timeoutMs: 20_000,
  })
  const got = new Set(remote.published.map((m) => Number(m.payload)))
  expect([...Array(COUNT).keys()].filter((i) => !got.has(i))).toEqual([])
  expect(sup.links().get('F1')?.state).toBe('Forwarding')
}, 40_000)
