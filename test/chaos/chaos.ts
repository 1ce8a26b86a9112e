import { setUpBridge } from './bridge.ts'
import { startFabric, type Fabric } from './fabric.ts'
import type { Fault } from './faults.ts'
import { runFault, type FaultReport, type FaultTiming } from './run-fault.ts'
import { startCloudCounter } from './cloud-counter.ts'

export const FULL_TIMING: FaultTiming = {
  trafficMs: 30_000,
  leadMs: 10_000,
  tailMs: 10_000,
  downMs: 5_000,
  linkDownMs: 30_000,
  ratePerSec: 300,
  publishers: 2,
  settleMs: 30_000,
}

/**
 * Start the fabric, bridge one upstream, run each fault in turn on the recovered fabric, and
 * take everything down again, also when a fault throws. `onReport` sees each report as it comes.
 */
export async function runChaos({
  faults,
  timing,
  onReport = () => {},
  onFabric = () => {},
  onClose = () => {},
}: {
  faults: Fault[]
  timing: FaultTiming
  onReport?: (report: FaultReport) => void
  onFabric?: (fabric: Fabric) => void
  /** Before the fabric goes: e.g. keep its logs. */
  onClose?: (fabric: Fabric) => void | Promise<void>
}): Promise<FaultReport[]> {
  const fabric = await startFabric()
  // Stopped from outside (Ctrl-C, a CI timeout's SIGTERM): take the fabric down, not leave its
  // processes, NATS nodes and private Postgres running.
  const stopped = (signal: NodeJS.Signals) => {
    console.error(`chaos: ${signal}, stopping the fabric`)
    void fabric.close().finally(() => process.exit(130))
  }
  process.once('SIGINT', stopped).once('SIGTERM', stopped)
  try {
    onFabric(fabric)
    const counter = await startCloudCounter(fabric.cloud.url)
    try {
      const bridgeId = await setUpBridge(fabric)
      const reports: FaultReport[] = []
      for (const fault of faults) {
        const report = await runFault(fabric, bridgeId, counter, fault, timing)
        reports.push(report)
        onReport(report)
      }
      // Whatever was missing had every later fault's time to arrive: say if it came.
      for (const r of reports.filter((r) => r.lost > 0)) {
        r.notes.push(`at the end of the run, ${r.lostNow()} of the ${r.lost} lost still missing`)
      }
      return reports
    } finally {
      await counter.close()
    }
  } finally {
    process.off('SIGINT', stopped).off('SIGTERM', stopped)
    await onClose(fabric)
    await fabric.close()
  }
}
