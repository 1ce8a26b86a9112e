import { connectAsync, type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { startTestGateway } from '../helpers/gateway.ts'
import { startMosquitto } from '../helpers/mosquitto.ts'
import { collect, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'
import { LOCAL_TRANSPORTS, localBroker } from './local-transports.ts'

/**
 * A `both` link under sustained load each way at once. Each window pauses its source socket when
 * full; when the socket a window pauses also carries the acknowledgements the other window waits
 * for, both stop for good (each waits for the other). A small window makes it happen in a
 * second where the default needs a long run (`npm run bench -- bridge`, `both`).
 */
const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const N = 3_000
const BOTH = [{ source: 'x', target: 'up/x', direction: 'both' as const }]
const IN_FLIGHT = 64 // publishes each publisher keeps outstanding

async function publishAll(client: MqttClient, topic: string): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < N) await client.publishAsync(topic, String(next++), { qos: 1 })
    })
  )
}

describe.each(LOCAL_TRANSPORTS)('%s local link', (transport) => {
  it('carries sustained QoS 1 load both ways at once without stalling, and echoes nothing', async () => {
    const bus = createInProcessBus({ prefix: 't' })
    const local = await startTestGateway({ bus, anonymous: 'always' })
    const remote = await startMosquitto({ config: 'max_queued_messages 100000' })
    const store = await startFakeStore(bus)
    cleanups.push(
      () => bus.close(),
      () => local.close(),
      () => remote.stop(),
      () => store.close()
    )
    store.put({
      id: 'B2',
      brokerPort: remote.port,
      bindings: BOTH,
    })
    const sup = await startSupervisor(testContext(bus), {
      ...localBroker(transport, local),
      window: 4,
    })
    cleanups.push(() => sup.close())
    await waitFor(() => sup.links().get('B2')?.state === 'Forwarding', { what: 'Forwarding' })

    const atLocal = await collect(local.url, 'x/#')
    const atRemote = await collect(remote.url, 'up/x/#')
    cleanups.push(
      () => atLocal.close(),
      () => atRemote.close()
    )
    const localPub = await connectAsync(local.url, { protocolVersion: 4 })
    const remotePub = await connectAsync(remote.url, { protocolVersion: 4 })
    cleanups.push(
      () => localPub.endAsync(true),
      () => remotePub.endAsync(true)
    )
    const count = (got: { topic: string; payload: Buffer }[], topic: string) =>
      new Set(got.filter((m) => m.topic === topic).map((m) => m.payload.toString())).size

    await Promise.all([publishAll(localPub, 'x/out'), publishAll(remotePub, 'up/x/in')])
    await waitFor(() => count(atRemote.got, 'up/x/out') === N && count(atLocal.got, 'x/in') === N, {
      timeoutMs: 30_000,
      what: `${N} each way (went up ${count(atRemote.got, 'up/x/out')}, came down ${count(atLocal.got, 'x/in')})`,
    }).catch((err: Error) => {
      const link = JSON.stringify(sup.links().get('B2'))
      throw new Error(
        `${err.message}; up ${count(atRemote.got, 'up/x/out')}, down ${count(atLocal.got, 'x/in')}; link ${link}`
      )
    })
    await new Promise((r) => setTimeout(r, 500))
    // No echo: what came down is not sent back up, what went up does not come back down.
    expect(atRemote.got.filter((m) => m.topic === 'up/x/in').length).toBe(N)
    expect(atLocal.got.filter((m) => m.topic === 'x/out').length).toBe(N)
    expect(count(atRemote.got, 'up/x/x/in') + count(atLocal.got, 'x/x/out')).toBe(0)
  }, 90_000)
})
