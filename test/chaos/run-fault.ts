import { forwarding, verifyLog } from './bridge.ts'
import type { Fabric } from './fabric.ts'
import type { Fault, FaultOutcome } from './faults.ts'
import { afterHeal, bySecond, duplicateRuns, maxGap, type CloudCounter } from './cloud-counter.ts'
import type { LifecycleReport } from './lifecycle.ts'
import { startPublisher, type Publisher } from './publisher.ts'
import { sleep, until } from './wait.ts'

export interface FaultTiming {
  /** Traffic in all, at least: before the fault, while it lasts, after. */
  trafficMs: number
  /** Traffic before the fault is injected. */
  leadMs: number
  /** Traffic after the fault's part is back, at least. */
  tailMs: number
  /** How long a killed part stays down. */
  downMs: number
  /** How long a cut link stays cut; `downMs` when not given. */
  linkDownMs?: number
  /** Messages per second, over all publishers. */
  ratePerSec: number
  publishers: number
  /** After sending stops: wait this long for outstanding PUBACKs, then as long for arrivals upstream. */
  settleMs: number
}

export interface FaultReport {
  fault: string
  /** Acknowledged by a gateway (PUBACK). */
  sent: number
  /** Acknowledged but never received upstream. Must be 0. */
  lost: number
  /** Copies received beyond the first. */
  duplicated: number
  /** Longest silence between arrivals upstream while traffic flowed. */
  maxGapMs: number
  logVerifies: boolean
  /** Sent but never acknowledged (the publisher still holds them). */
  unacked: number
  maxLatencyMs: number
  maxAckGapMs: number
  /** From injecting the fault until its part was back (and NATS settled). */
  faultMs: number
  /** From the part's return (faults that say when) to the next arrival upstream. */
  resumeMs?: number
  /** From the part's return to the arrival of the last message sent before it. */
  drainMs?: number
  /** Other upstreams driven through their lifecycle during the fault. */
  lifecycle?: LifecycleReport
  notes: string[]
  error?: string
  /** Lost, counted again now: the counter keeps listening, so a late arrival still counts. */
  lostNow(): number
}

/** Run one fault under traffic on a recovered fabric and count every message. */
export async function runFault(
  fabric: Fabric,
  bridgeId: string,
  counter: CloudCounter,
  fault: Fault,
  timing: FaultTiming
): Promise<FaultReport> {
  await recover(fabric, bridgeId)
  const tag = `${fault.name}-${Date.now().toString(36)}`
  const gateways = fabric.of('gateway').map((g) => g.mqttUrl!)
  const startedAt = Date.now()
  const notes: string[] = [`traffic starts at ${new Date(startedAt).toISOString()} (${startedAt})`]
  const note = (line: string) =>
    notes.push(`+${((Date.now() - startedAt) / 1_000).toFixed(1)}s ${line}`)
  const publishers: Publisher[] = Array.from({ length: timing.publishers }, (_, i) =>
    startPublisher({
      id: `p${i}`,
      tag,
      // Each starts on its own gateway and lists the other next.
      gatewayUrls: [
        ...gateways.slice(i % gateways.length),
        ...gateways.slice(0, i % gateways.length),
      ],
      ratePerSec: timing.ratePerSec / timing.publishers,
    })
  )
  let error: string | undefined
  let faultMs = 0
  let outcome: FaultOutcome | void = undefined
  try {
    await sleep(timing.leadMs)
    const injectedAt = Date.now()
    const { downMs, linkDownMs = downMs } = timing
    outcome = await fault
      .inject({ fabric, bridgeId, downMs, linkDownMs, note })
      .catch((err: unknown) => {
        error = String(err instanceof Error ? err.message : err)
        note(`fault failed: ${error}`)
      })
    faultMs = Date.now() - injectedAt
    await sleep(Math.max(timing.tailMs, startedAt + timing.trafficMs - Date.now()))
    const stoppedAt = Date.now()
    note('sending stops')
    await Promise.all(publishers.map((p) => p.stop(timing.settleMs)))
    for (const p of publishers) note(p.describe())
    const arrivals = counter.of(tag)
    const expected = publishers.flatMap((p) => [...p.acked].map((seq) => `${p.id}:${seq}`))
    await until(() => expected.every((k) => arrivals.copies.has(k)), {
      timeoutMs: timing.settleMs,
      what: 'every acknowledged message upstream',
    }).catch(() => note(`not everything arrived within ${timing.settleMs} ms`))
    const unackedUpstream = publishers.flatMap((p) =>
      p.unacked().filter((seq) => arrivals.copies.has(`${p.id}:${seq}`))
    )
    if (arrivals.duplicateTimes.length) {
      note(`duplicates arrived at ${bySecond(arrivals.duplicateTimes, startedAt)}`)
      note(`duplicated: ${duplicateRuns(arrivals)}`)
    }
    if (unackedUpstream.length) note(`${unackedUpstream.length} unacknowledged arrived upstream`)
    // A store that cannot answer is this fault's finding, not the end of the whole run.
    const log = await verifyLog(fabric, bridgeId).catch((err: Error) => ({
      ok: false,
      rows: 0,
      detail: `could not replay: ${err.message}`,
    }))
    if (log.detail) note(`log: ${log.detail}`)
    const lostNow = () => expected.filter((k) => !arrivals.copies.has(k)).length
    const healed =
      outcome?.healedAt === undefined ? undefined : afterHeal(arrivals, outcome.healedAt)
    return {
      fault: fault.name,
      sent: expected.length,
      lost: lostNow(),
      duplicated: [...arrivals.copies.values()].reduce((sum, n) => sum + n - 1, 0),
      maxGapMs: gapWhileSending(arrivals.times, stoppedAt),
      logVerifies: log.ok,
      unacked: publishers.reduce((sum, p) => sum + p.issued - p.acked.size, 0),
      maxLatencyMs: arrivals.maxLatencyMs,
      maxAckGapMs: Math.max(...publishers.map((p) => p.maxAckGapMs)),
      faultMs,
      ...(healed?.resumeMs === undefined ? {} : { resumeMs: healed.resumeMs }),
      ...(healed ? { drainMs: healed.drainMs } : {}),
      ...(outcome?.lifecycle ? { lifecycle: outcome.lifecycle } : {}),
      notes,
      ...(error ? { error } : {}),
      lostNow,
    }
  } finally {
    await Promise.all(publishers.map((p) => p.close()))
  }
}

/** Gaps between arrivals up to the stop of sending, and the one that ends with the next arrival. */
function gapWhileSending(times: readonly number[], stoppedAt: number): number {
  const cut = times.findIndex((t) => t > stoppedAt)
  return maxGap(cut === -1 ? times : times.slice(0, cut + 1))
}

/** Every part running, every stream settled, the bridge forwarding: a fault starts from here. */
export async function recover(fabric: Fabric, bridgeId: string): Promise<void> {
  for (const node of fabric.nats.nodes) await node.start()
  await fabric.nats.settled(`KV_${fabric.prefix}_`)
  for (const s of fabric.services) await s.start()
  await forwarding(fabric, bridgeId, 90_000)
}
