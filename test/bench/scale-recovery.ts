/**
 * Recovery after each fault of the chaos suite, for `npm run bench -- scale --with-chaos`: the
 * chaos harness (test/chaos) on its own fabric, every fault for a few seconds of traffic, as
 * its short run in `npm test` does. `npm run chaos` is the full-length run with every count.
 */
import { runChaos } from '../chaos/chaos.ts'
import { FAULTS } from '../chaos/faults.ts'
import type { FaultTiming } from '../chaos/run-fault.ts'

const SHORT: FaultTiming = {
  trafficMs: 8_000,
  leadMs: 2_000,
  tailMs: 4_000,
  downMs: 2_000,
  ratePerSec: 200,
  publishers: 2,
  settleMs: 30_000,
}

export interface Recovery {
  fault: string
  /** Longest silence upstream while traffic flowed: how long forwarding stalled. */
  recoveryMs: number
  /** Longest time the publishers got no PUBACK. */
  maxAckGapMs: number
  /** From injecting the fault until its part was back. */
  faultMs: number
  sent: number
  lost: number
  duplicated: number
  logVerifies: boolean
  error?: string
}

export async function runRecovery(): Promise<Recovery[]> {
  console.error(
    `chaos: ${FAULTS.map((f) => f.name).join(', ')}; ${SHORT.trafficMs} ms of traffic each at ${SHORT.ratePerSec} msg/s`
  )
  const reports = await runChaos({
    faults: FAULTS,
    timing: SHORT,
    onReport: (r) =>
      console.error(
        `${r.fault}: forwarding stalled ${r.maxGapMs} ms at most, PUBACKs ${r.maxAckGapMs} ms; ` +
          `fault lasted ${r.faultMs} ms; sent ${r.sent}, lost ${r.lost}, duplicated ${r.duplicated}` +
          (r.error ? `; error: ${r.error}` : '')
      ),
  })
  return reports.map((r) => ({
    fault: r.fault,
    recoveryMs: r.maxGapMs,
    maxAckGapMs: r.maxAckGapMs,
    faultMs: r.faultMs,
    sent: r.sent,
    lost: r.lost,
    duplicated: r.duplicated,
    logVerifies: r.logVerifies,
    ...(r.error ? { error: r.error } : {}),
  }))
}
