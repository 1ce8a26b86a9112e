/**
 * `npm run chaos [-- --faults a,b --traffic-ms 30000 --rate 300 --down-ms 5000
 * --link-down-ms 30000 --logs <dir>]`: every fault at
 * full length on one distributed fabric, recovered between faults; prints a table and ends with
 * one JSON line. `--logs` keeps every process's output there (to read what a loss looked like).
 * A cut cloud link stays cut `--link-down-ms`, by default as long as `--traffic-ms`.
 */
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { FULL_TIMING, runChaos } from './chaos.ts'
import { FAULTS, faultNamed } from './faults.ts'
import type { LifecycleReport } from './lifecycle.ts'
import type { FaultReport } from './run-fault.ts'

const { values } = parseArgs({
  options: {
    faults: { type: 'string' },
    'traffic-ms': { type: 'string' },
    rate: { type: 'string' },
    'down-ms': { type: 'string' },
    'link-down-ms': { type: 'string' },
    logs: { type: 'string' },
  },
})
const faults = values.faults ? values.faults.split(',').map(faultNamed) : FAULTS
const trafficMs = Number(values['traffic-ms'] ?? FULL_TIMING.trafficMs)
const timing = {
  ...FULL_TIMING,
  trafficMs,
  linkDownMs: Number(values['link-down-ms'] ?? trafficMs),
  ...(values.rate ? { ratePerSec: Number(values.rate) } : {}),
  ...(values['down-ms'] ? { downMs: Number(values['down-ms']) } : {}),
}

const COLUMNS = ['fault', 'sent', 'lost', 'duplicated', 'maxGapMs', 'logVerifies', 'unacked']
const EXTRA = ['maxLatencyMs', 'maxAckGapMs', 'faultMs', 'resumeMs', 'drainMs'] as const

function describeLifecycle(l: LifecycleReport): string {
  const counts = (c: Record<string, number>) => JSON.stringify(c)
  return [
    `lifecycle: ${l.attempted} operations in ${l.rounds} rounds, ${l.completed} completed, the last ${l.lastCompletedAfterHealMs} ms after the heal; slowest call ${l.slowestCallMs} ms`,
    `  failed during the fault ${counts(l.failedDuringFault)}, outside it ${counts(l.failedOutsideFault)}`,
    `  logs ${l.logsVerified}/${l.logsChecked} verify${l.logFailures.length ? `: ${l.logFailures.join('; ')}` : ''}`,
    ...(l.unclear.length ? [`  unclear answers: ${l.unclear.join('; ')}`] : []),
    ...(l.gaveUp.length ? [`  given up: ${l.gaveUp.join('; ')}`] : []),
    ...(l.neverForwarded.length ? [`  never forwarded: ${l.neverForwarded.join(', ')}`] : []),
    ...(l.orphans.length ? [`  orphans (deleted): ${l.orphans.join(', ')}`] : []),
  ].join('\n')
}

/** Every call took, with clear errors only, and every log verified. */
const lifecycleOk = (l: LifecycleReport | undefined) =>
  !l ||
  (l.completed === l.attempted &&
    !l.unclear.length &&
    !l.gaveUp.length &&
    l.logsVerified === l.logsChecked)

function row(r: FaultReport): string {
  const cells = COLUMNS.map((c) => String(r[c as keyof FaultReport]))
  return cells.map((c, i) => (i === 0 ? c.padEnd(18) : c.padStart(11))).join(' ')
}

console.error(
  `chaos: ${faults.map((f) => f.name).join(', ')}; ${timing.trafficMs} ms of traffic each at ${timing.ratePerSec} msg/s`
)
const reports = await runChaos({
  faults,
  timing,
  onFabric: (fabric) =>
    console.error(`fabric up: ${fabric.services.map((s) => s.label).join(' ')}`),
  onReport: (r) => {
    console.error(`\n== ${r.fault} ==\n${r.notes.join('\n')}`)
    console.error(
      EXTRA.filter((k) => r[k] !== undefined)
        .map((k) => `${k} ${r[k]}`)
        .join('  ')
    )
    if (r.lifecycle) console.error(describeLifecycle(r.lifecycle))
    if (r.error) console.error(`error: ${r.error}`)
  },
  onClose: async (fabric) => {
    if (!values.logs) return
    await mkdir(values.logs, { recursive: true })
    for (const [label, text] of Object.entries(fabric.logs())) {
      await writeFile(join(values.logs, `${label.replace('#', '-')}.log`), text)
    }
    console.error(`process logs in ${values.logs}`)
  },
})

for (const r of reports.filter((r) => r.lost > 0)) console.error(`${r.fault}: ${r.notes.at(-1)}`)
console.log(['fault'.padEnd(18), ...COLUMNS.slice(1).map((c) => c.padStart(11))].join(' '))
for (const r of reports) console.log(row(r))
const line = reports.map(({ fault, sent, lost, duplicated, maxGapMs, logVerifies }) => ({
  fault,
  sent,
  lost,
  duplicated,
  maxGapMs,
  logVerifies,
}))
console.log(JSON.stringify({ bench: 'chaos', faults: line }))
process.exit(
  reports.every((r) => r.lost === 0 && r.logVerifies && !r.error && lifecycleOk(r.lifecycle))
    ? 0
    : 1
)
