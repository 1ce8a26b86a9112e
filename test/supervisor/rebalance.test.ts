import { connectAsync } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { excessOf, fairShare, REBALANCE_BATCH } from '../../services/supervisor/balance.ts'
import { startSupervisor, type Supervisor } from '../../services/supervisor/index.ts'
import { collect, waitFor } from './aedes.ts'
import { startRig } from './rig.ts'
import { testContext } from './fake-store.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const BRIDGES = 12

/**
 * Bridges spread over the supervisor replicas (balance.ts): a replica added later takes its
 * share from the others without a restart, and a replica that stops hands its share back.
 * Before, the first replica kept every bridge until it died, and the new one sat idle.
 */
describe('supervisor replicas share the bridges', () => {
  it('moves bridges to a replica that joins, and back when it leaves, each bridge on one', async () => {
    const bus: Bus = createInProcessBus({ prefix: 'rb' })
    const { local, remote, store } = await startRig(bus, cleanups)
    for (let i = 0; i < BRIDGES; i++)
      store.put({
        id: `R${i}`,
        brokerPort: remote.port,
        bindings: [{ source: `site${i}`, target: `cloud/site${i}` }],
      })
    const replicas: Supervisor[] = []
    const start = async () => {
      const sup = await startSupervisor(testContext(bus), {
        localBrokerUrl: local.url,
        leaseTtlMs: 1_500,
        backoffBaseMs: 50,
      })
      replicas.push(sup)
      cleanups.push(() => sup.close())
      return sup
    }
    const counts = () => replicas.map((r) => r.links().size)
    /** Every bridge forwarding on exactly one replica. */
    const settled = (expected: number[]) => () => {
      const owners = replicas.flatMap((r) =>
        [...r.links()].filter(([, l]) => l.state === 'Forwarding').map(([id]) => id)
      )
      return (
        JSON.stringify([...counts()].sort()) === JSON.stringify([...expected].sort()) &&
        new Set(owners).size === BRIDGES &&
        owners.length === BRIDGES
      )
    }

    await start()
    await waitFor(settled([12]), { timeoutMs: 10_000, what: 'one replica with every bridge' })
    await start()
    await waitFor(settled([6, 6]), { timeoutMs: 15_000, what: `6 and 6, got ${counts()}` })
    const third = await start()
    await waitFor(settled([4, 4, 4]), { timeoutMs: 15_000, what: `4, 4, 4, got ${counts()}` })

    // Every bridge still forwards, once, wherever it went.
    const sub = await collect(remote.url, 'cloud/#')
    cleanups.push(() => sub.close())
    const publisher = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => publisher.endAsync(true))
    for (let i = 0; i < BRIDGES; i++)
      await publisher.publishAsync(`site${i}/m`, String(i), { qos: 1 })
    await waitFor(() => sub.got.length >= BRIDGES, { what: 'a message through every bridge' })
    await new Promise((r) => setTimeout(r, 300))
    expect(sub.got.map((m) => m.topic).sort()).toEqual(
      Array.from({ length: BRIDGES }, (_, i) => `cloud/site${i}/m`).sort()
    )

    // A replica that stops leaves the roster first: the other two take all of its bridges.
    await third.close()
    replicas.splice(replicas.indexOf(third), 1)
    await waitFor(settled([6, 6]), { timeoutMs: 15_000, what: `6 and 6 again, got ${counts()}` })
  }, 60_000)

  it('keeps a share that covers every bridge, and hands back a few per pass', () => {
    for (let bridges = 0; bridges <= 50; bridges++)
      for (let replicas = 1; replicas <= 7; replicas++)
        expect(fairShare(bridges, replicas) * replicas).toBeGreaterThanOrEqual(bridges)
    expect(fairShare(100, 3)).toBe(34)
    const held = Array.from({ length: 50 }, (_, i) => `b${i}`)
    expect(excessOf(held, 34)).toEqual(held.slice(50 - REBALANCE_BATCH))
    expect(excessOf(held, 48)).toEqual(['b48', 'b49'])
    expect(excessOf(held, 50)).toEqual([])
  })
})
