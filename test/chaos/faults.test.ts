import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { setUpBridge } from './bridge.ts'
import { startCloudCounter, type CloudCounter } from './cloud-counter.ts'
import { startFabric, type Fabric } from './fabric.ts'
import { faultNamed } from './faults.ts'
import { runFault, type FaultTiming } from './run-fault.ts'

/** A few seconds of each: `npm run chaos` runs them all at full length. */
const SHORT: FaultTiming = {
  trafficMs: 6_000,
  leadMs: 2_000,
  tailMs: 2_000,
  downMs: 2_000,
  ratePerSec: 200,
  publishers: 2,
  settleMs: 30_000, // a loaded CI machine recovers slower; a loss still shows, late arrivals are counted
}

/**
 * Faults under load on the distributed fabric (three-node NATS with 3 copies of every bucket,
 * Postgres, every service replica its own process): every message a gateway acknowledged
 * reaches the cloud broker, and the upstream's lifecycle log still verifies.
 */
describe('faults under load, every message counted', () => {
  let fabric: Fabric
  let counter: CloudCounter
  let bridgeId: string

  beforeAll(async () => {
    fabric = await startFabric()
    counter = await startCloudCounter(fabric.cloud.url)
    bridgeId = await setUpBridge(fabric)
  }, 150_000)

  afterAll(async () => {
    await counter?.close()
    await fabric?.close()
  }, 60_000)

  // gateway-kill once lost 8 acknowledged messages here: a drain's high-water mark refused live
  // copies of messages whose queue writes finished late, and aedes erased their queued copies
  // (test/gateway/drain-dedupe.test.ts). Every fault that can reorder queue writes runs here,
  // a store's death under lifecycle calls, a Postgres restart (the stores once never used it
  // again: test/store/pg-restart-pool.test.ts), and both network partitions.
  for (const name of [
    'nats-leader-kill',
    'nats-node-kill',
    'gateway-kill',
    'store-kill',
    'postgres-restart',
    'cloud-partition',
    'gateway-nats-partition',
  ]) {
    it(`${name}: loses no acknowledged message`, async () => {
      const report = await runFault(fabric, bridgeId, counter, faultNamed(name), SHORT)
      // A failed fault carries the tail of every process's output, to see which one went wrong.
      const tails = report.error
        ? Object.entries(fabric.logs()).map(
            ([label, text]) => `--- ${label}\n${text.slice(-2_000)}`
          )
        : []
      const context = [JSON.stringify(report, null, 1), ...tails].join('\n')
      expect(report.error, context).toBeUndefined()
      // Most of the traffic went through: not a run where nothing was sent.
      expect(report.sent, context).toBeGreaterThan((SHORT.ratePerSec * SHORT.trafficMs) / 2_000)
      expect(report.lost, context).toBe(0)
      expect(report.unacked, context).toBe(0)
      expect(report.logVerifies, context).toBe(true)
      if (report.lifecycle) {
        // Every lifecycle call answered clearly (a JSON error at worst) and took in the end.
        expect(report.lifecycle.unclear, context).toEqual([])
        expect(report.lifecycle.gaveUp, context).toEqual([])
        expect(report.lifecycle.logFailures, context).toEqual([])
        expect(report.lifecycle.completed, context).toBe(report.lifecycle.attempted)
      }
    }, 120_000)
  }
})
