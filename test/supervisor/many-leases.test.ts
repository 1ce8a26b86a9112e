import { Writable } from 'node:stream'
import pino from 'pino'
import { afterEach, describe, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { waitFor } from './aedes.ts'
import { startRig } from './rig.ts'
import { testContext } from './fake-store.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

const BRIDGES = 250

/**
 * A first pass that claims many leases on the in-process bus, where a claim never waits for
 * I/O: claimed in one go, the pass held the event loop longer than the lease fence (5/6 of the
 * TTL), no lease was renewed meanwhile, and the first links claimed were stopped for a lost lease
 * and claimed again, over and over (1,000 upstreams: 8,761 link starts, ready after 83 s).
 */
describe('a supervisor claiming many leases at once', () => {
  it('keeps every lease it claimed: no link stops for a lost lease', async () => {
    const bus = createInProcessBus({ prefix: 'ml' })
    const { local, remote, store } = await startRig(bus, cleanups)
    for (let i = 0; i < BRIDGES; i++)
      store.put({
        id: `M${i}`,
        brokerPort: remote.port,
        bindings: [{ source: `site${i}`, target: `cloud/site${i}` }],
      })
    const warnings: string[] = []
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        const line = JSON.parse(chunk.toString()) as { level: number; msg: string }
        if (line.level >= 40) warnings.push(line.msg)
        done()
      },
    })
    const ctx = { ...testContext(bus), log: pino({ level: 'warn' }, sink) }
    const sup = await startSupervisor(ctx, {
      localBrokerUrl: local.url,
      leaseTtlMs: 600, // the smallest allowed: the fence at 500 ms
      backoffBaseMs: 50,
    })
    cleanups.push(() => sup.close())
    const forwarding = () => [...sup.links()].filter(([, l]) => l.state === 'Forwarding').length
    await waitFor(() => forwarding() === BRIDGES, {
      timeoutMs: 60_000,
      what: `every link Forwarding (${forwarding()} of ${BRIDGES})`,
    })
    await new Promise((r) => setTimeout(r, 1_000)) // a few renewals later
    expect(warnings.filter((w) => w.startsWith('lease lost'))).toEqual([])
    expect(forwarding()).toBe(BRIDGES)
  }, 90_000)
})
