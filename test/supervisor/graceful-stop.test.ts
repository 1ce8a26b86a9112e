import { connectAsync } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { startTestGateway } from '../helpers/gateway.ts'
import { startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'
import { LOCAL_TRANSPORTS, localBroker } from './local-transports.ts'

/**
 * A supervisor stopped on purpose (SIGTERM in a rolling restart) in the middle of a stream hands
 * its link over without duplicates: it stops taking local messages and lets the upstream
 * acknowledge what is in flight before it closes, so its successor does not send them again.
 */
const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const N = 4_000

describe.each(LOCAL_TRANSPORTS)('%s local link', (transport) => {
  it('hands a link over mid-stream on a clean stop without sending anything twice', async () => {
    const bus = createInProcessBus({ prefix: 't' })
    const local = await startTestGateway({ bus, anonymous: 'always' })
    const remote = await startAedes()
    const store = await startFakeStore(bus)
    cleanups.push(
      () => bus.close(),
      () => local.close(),
      () => remote.close(),
      () => store.close()
    )
    store.put({ id: 'G2', brokerPort: remote.port, bindings: [{ source: 'x', target: 'up/x' }] })
    const first = await startSupervisor(testContext(bus), {
      ...localBroker(transport, local),
      window: 8,
    })
    await waitFor(() => first.links().get('G2')?.state === 'Forwarding', { what: 'Forwarding' })

    const pub = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => pub.endAsync(true))
    let next = 0
    const publishing = Promise.all(
      Array.from({ length: 64 }, async () => {
        while (next < N) await pub.publishAsync('x/seq', String(next++), { qos: 1 })
      })
    )
    const upstreamSeq = () => remote.published.filter((m) => m.topic === 'up/x/seq')
    await waitFor(() => upstreamSeq().length >= N / 4, { what: 'a quarter through' })
    await first.close()
    const second = await startSupervisor(testContext(bus), localBroker(transport, local))
    cleanups.push(() => second.close())
    await publishing
    await waitFor(() => new Set(upstreamSeq().map((m) => m.payload.toString())).size === N, {
      timeoutMs: 30_000,
      what: `all ${N} upstream`,
    })
    await new Promise((r) => setTimeout(r, 300))
    const got = upstreamSeq().length
    expect(got - N, `${got - N} sent twice`).toBe(0)
  }, 60_000)
})
