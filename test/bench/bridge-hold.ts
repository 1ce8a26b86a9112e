/**
 * Held queue writes (gateway `holdWritesMs`), side by side: the full path (publisher on our
 * gateway → our bridge → an upstream Mosquitto) in two fabric processes alike but for the hold,
 * 20 ms against 0, beside Mosquitto's bridge in the same rounds. QoS 1, 64 B and 1 KiB, the
 * paths alternating as in bridge.ts. `BENCH_BRIDGE_NATS=<url>` puts both gateways on a NATS bus
 * (where the hold is on by default) instead of the in-process one (where it is off); `BENCH_HOLD_TCP=1`
 * uses the TCP link instead of the co-located one. Ends with one JSON line.
 */
import { startMosquitto } from '../helpers/mosquitto.ts'
import {
  anchorConfig,
  benchAll,
  BROKER_CONFIG,
  fmt,
  startOurBridge,
  stopChildren,
} from './bridge.ts'
import { COUNT, median, REPEATS, round } from './bridge-measure.ts'

const HOLD_MS = 20

export async function runHoldBench(): Promise<unknown> {
  const layout = process.env.BENCH_BRIDGE_NATS ? 'nats' : 'in-process'
  const link = process.env.BENCH_HOLD_TCP ? [] : ['colocated']
  const upHold = await startMosquitto({ config: BROKER_CONFIG })
  const upNoHold = await startMosquitto({ config: BROKER_CONFIG })
  const upMosq = await startMosquitto({ config: BROKER_CONFIG })
  const downMosq = await startMosquitto({ config: anchorConfig(upMosq.port, 'out') })
  // startOurBridge's child takes this process's environment as it is when spawned.
  process.env.BENCH_BRIDGE_HOLD_MS = String(HOLD_MS)
  const hold = await startOurBridge(['fabric', String(upHold.port), ...link])
  process.env.BENCH_BRIDGE_HOLD_MS = '0'
  const noHold = await startOurBridge(['fabric', String(upNoHold.port), ...link])
  delete process.env.BENCH_BRIDGE_HOLD_MS
  await new Promise((r) => setTimeout(r, 1_000)) // Mosquitto's bridge connects on its own timer
  const runs = []
  console.error(
    `hold: ${layout} bus, ${link.length ? 'co-located' : 'TCP'} link, ${COUNT} msgs × ${REPEATS} rounds`
  )
  try {
    for (const payloadBytes of [64, 1_024]) {
      const [h, n, m] = await benchAll(
        [
          {
            name: 'hold',
            downUrl: hold.line,
            upUrl: upHold.url,
            pids: [hold.child.pid!, upHold.pid],
          },
          {
            name: 'noHold',
            downUrl: noHold.line,
            upUrl: upNoHold.url,
            pids: [noHold.child.pid!, upNoHold.pid],
          },
          {
            name: 'mosquitto',
            downUrl: downMosq.url,
            upUrl: upMosq.url,
            pids: [downMosq.pid, upMosq.pid],
          },
        ],
        1,
        payloadBytes
      )
      const ratio = (x: { rounds: number[] }) =>
        round(median(x.rounds.map((v, i) => v / m!.rounds[i]!)))
      const run = {
        payloadBytes,
        hold: h!,
        noHold: n!,
        mosquitto: m!,
        holdRatio: ratio(h!),
        noHoldRatio: ratio(n!),
      }
      runs.push(run)
      console.error(
        `QoS 1 ${payloadBytes} B:\n  held ${HOLD_MS} ms: ${fmt(h!)}\n  no hold:    ${fmt(n!)}\n` +
          `  mosquitto's bridge: ${fmt(m!)}\n  ratios to mosquitto's bridge: held ${run.holdRatio}, no hold ${run.noHoldRatio}`
      )
    }
  } finally {
    await stopChildren([hold.child, noHold.child])
    await Promise.all([upHold, upNoHold, upMosq, downMosq].map((b) => b.stop()))
  }
  const result = { bench: 'hold', layout, holdMs: HOLD_MS, count: COUNT, repeats: REPEATS, runs }
  console.log(JSON.stringify(result))
  return result
}
