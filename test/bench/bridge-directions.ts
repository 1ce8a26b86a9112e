/**
 * The bridge benchmark for bindings coming in, QoS 1, between two Mosquitto processes as in
 * bridge.ts (same warm-up, alternating rounds, medians, ratio beside the anchor):
 * - `in`: a publisher on the upstream broker on `dst/…`, a subscriber on the downstream one on
 *   `src/#`. Ours: `createBridgeLink` in its own process, binding `{source: 'src', target: 'dst',
 *   direction: 'in'}` (persistent upstream session in bridge mode; each message is published to
 *   the downstream broker and acknowledged upstream only after its PUBACK). Anchor: Mosquitto's
 *   bridge with `topic # in 1 src/ dst/`.
 * - `both`: traffic each way at once, a publisher and a subscriber on each side; ours with
 *   direction `both`, the anchor with `topic # both 1 src/ dst/`. Each subscriber listens to its
 *   whole subtree (`dst/#` upstream, `src/#` downstream), so it should get every message exactly
 *   once: its own side's directly, the other side's through the bridge. Anything beyond that (an
 *   echo, a loop, a redelivery) is counted as a duplicate. msg/s per direction (at the receiving
 *   side, bridged messages only) and in total; paced runs send PACED_RATE / 2 each way.
 */
import type { MqttClient } from 'mqtt'
import { loadavg } from 'node:os'
import type { Direction } from '../../machines/index.ts'
import { startMosquitto } from '../helpers/mosquitto.ts'
import {
  anchorConfig,
  benchAll,
  BROKER_CONFIG,
  fmt,
  startOurBridge,
  stopChildren,
} from './bridge.ts'
import {
  alternate,
  COUNT,
  IDLE_MS,
  load1,
  median,
  openClients,
  PACED_COUNT,
  PACED_RATE,
  percentile,
  PUBLISH_WINDOW,
  round,
  type Clients,
  type Figures,
  type Path,
} from './bridge-measure.ts'

const PAYLOADS = [64, 1_024]
const SETTLE_MS = 300 // after the last expected message, for a late echo to show
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

type Rounds = Figures & { rounds: number[] }

export interface InRun {
  qos: 1
  payloadBytes: number
  load: [number, number]
  ours: Rounds
  mosquitto: Rounds
  /** Median of the per-round ratios ours / mosquitto. */
  ratio: number
}

interface BothFigures {
  out: Figures
  in: Figures
  totalMsgsPerSec: number
  /** Receipts beyond the first of a message, at the upstream and the downstream subscriber. */
  duplicates: { up: number; down: number }
  /** Messages of an earlier run. */
  strays: number
}

export interface BothSide {
  out: Rounds
  in: Rounds
  totalMsgsPerSec: number
  totalRounds: number[]
  /** Over every run of this configuration, warm-up included. */
  duplicates: { up: number; down: number }
  strays: number
}

export interface BothRun {
  qos: 1
  payloadBytes: number
  load: [number, number]
  ours: BothSide
  mosquitto: BothSide
  /** Medians of the per-round ratios ours / mosquitto: total, and each direction. */
  ratio: number
  ratioOut: number
  ratioIn: number
}

// Payload: send time (double), sequence (u32), run id (u16), origin (0 out, 1 in).
const OUT = 0
const IN = 1
let runId = 0

/** Both publishers at once; each subscriber counts every message it gets, by origin. */
async function measureBoth(
  out: Clients,
  inn: Clients,
  { payloadBytes, count, rate }: { payloadBytes: number; count: number; rate?: number }
): Promise<BothFigures> {
  const id = ++runId & 0xffff
  // seen[side][origin], side 0 the upstream subscriber (out.sub), 1 the downstream one: a message
  // crossed the bridge when origin === side.
  const seen = [0, 1].map(() => [new Uint8Array(count), new Uint8Array(count)])
  const distinct = [
    [0, 0],
    [0, 0],
  ]
  const dups = [0, 0]
  let strays = 0
  const lat = [new Float64Array(count), new Float64Array(count)]
  const lastAt = [0, 0]
  let lastAny = 0
  const listen = (side: 0 | 1) => (_t: string, p: Buffer) => {
    const now = performance.now()
    lastAny = now
    if (p.readUInt16LE(12) !== id) return void strays++
    const origin = p[14]!
    const seq = p.readUInt32LE(8)
    const s = seen[side]![origin]!
    if (s[seq]) return void dups[side]!++
    s[seq] = 1
    const n = distinct[side]![origin]!++
    if (origin === side) {
      lat[origin]![n] = now - p.readDoubleLE(0)
      lastAt[origin] = now
    }
  }
  const listeners = [listen(0), listen(1)] as const
  out.sub.on('message', listeners[0])
  inn.sub.on('message', listeners[1])
  const firstSent = performance.now()
  const publishAll = async (pub: MqttClient, topic: string, origin: number) => {
    let inflight = 0
    let wake: (() => void) | undefined
    const done = () => {
      inflight--
      wake?.()
    }
    for (let i = 0; i < count; i++) {
      if (rate) {
        const wait = firstSent + (i * 1_000) / rate - performance.now()
        if (wait > 1) await sleep(wait)
      }
      while (inflight >= PUBLISH_WINDOW) await new Promise<void>((r) => (wake = r))
      const p = Buffer.alloc(payloadBytes, 0x61)
      p.writeDoubleLE(performance.now(), 0)
      p.writeUInt32LE(i, 8)
      p.writeUInt16LE(id, 12)
      p[14] = origin
      inflight++
      pub.publish(topic, p, { qos: 1 }, done)
    }
  }
  await Promise.all([publishAll(out.pub, out.topic, OUT), publishAll(inn.pub, inn.topic, IN)])
  const total = () => distinct.flat().reduce((a, b) => a + b, 0)
  while (total() < 4 * count) {
    const before = lastAny
    await sleep(IDLE_MS)
    if (lastAny === before) break
  }
  await sleep(SETTLE_MS)
  out.sub.removeListener('message', listeners[0])
  inn.sub.removeListener('message', listeners[1])
  const fig = (o: 0 | 1): Figures => {
    const received = distinct[o]![o]!
    const got = lat[o]!.subarray(0, received).sort()
    return {
      msgsPerSec: Math.round(received / ((lastAt[o]! - firstSent) / 1_000)),
      p50Ms: round(percentile(got, 0.5)),
      p99Ms: round(percentile(got, 0.99)),
      received,
      sent: count,
    }
  }
  const bridged = distinct[0]![0]! + distinct[1]![1]!
  return {
    out: fig(0),
    in: fig(1),
    totalMsgsPerSec: Math.round(bridged / ((Math.max(...lastAt) - firstSent) / 1_000)),
    duplicates: { up: dups[0]!, down: dups[1]! },
    strays,
  }
}

async function benchBoth(paths: Path[], payloadBytes: number): Promise<BothSide[]> {
  const sets: Array<[Clients, Clients]> = []
  for (const p of paths) {
    sets.push([
      await openClients({ ...p, direction: 'out' }, 1),
      await openClients({ ...p, direction: 'in' }, 1),
    ])
  }
  const all: BothFigures[][] = paths.map(() => [])
  try {
    const { flat, paced } = await alternate(sets, async ([o, i], mode) => {
      const f = await measureBoth(o, i, {
        payloadBytes,
        count:
          mode === 'flat' ? COUNT : mode === 'paced' ? PACED_COUNT >> 1 : Math.min(5_000, COUNT),
        ...(mode === 'paced' ? { rate: PACED_RATE / 2 } : {}),
      })
      all[sets.findIndex((s) => s[0] === o)]!.push(f)
      return f
    })
    return paths.map((_, k) => {
      const pick = (d: 'out' | 'in'): Rounds => ({
        msgsPerSec: Math.round(median(flat[k]!.map((f) => f[d].msgsPerSec))),
        p50Ms: round(median(paced[k]!.map((f) => f[d].p50Ms))),
        p99Ms: round(median(paced[k]!.map((f) => f[d].p99Ms))),
        received: Math.min(...flat[k]!.map((f) => f[d].received)),
        sent: COUNT,
        rounds: flat[k]!.map((f) => f[d].msgsPerSec),
      })
      const totals = flat[k]!.map((f) => f.totalMsgsPerSec)
      return {
        out: pick('out'),
        in: pick('in'),
        totalMsgsPerSec: Math.round(median(totals)),
        totalRounds: totals,
        duplicates: {
          up: all[k]!.reduce((a, f) => a + f.duplicates.up, 0),
          down: all[k]!.reduce((a, f) => a + f.duplicates.down, 0),
        },
        strays: all[k]!.reduce((a, f) => a + f.strays, 0),
      }
    })
  } finally {
    for (const c of sets.flat()) {
      await c.pub.endAsync(true)
      await c.sub.endAsync(true)
    }
  }
}

/** Two Mosquitto pairs: ours (a link process) and the anchor (Mosquitto's bridge). */
async function startPairs(direction: Direction) {
  const upOurs = await startMosquitto({ config: BROKER_CONFIG })
  const downOurs = await startMosquitto({ config: BROKER_CONFIG })
  const upMosq = await startMosquitto({ config: BROKER_CONFIG })
  const downMosq = await startMosquitto({ config: anchorConfig(upMosq.port, direction) })
  const brokers = [upOurs, downOurs, upMosq, downMosq]
  const ours = await startOurBridge(['link', downOurs.url, String(upOurs.port), direction])
  await sleep(1_000) // Mosquitto's bridge connects on its own timer
  const paths: Path[] = [
    { name: 'ours', downUrl: downOurs.url, upUrl: upOurs.url, direction: 'in' },
    { name: 'mosquitto', downUrl: downMosq.url, upUrl: upMosq.url, direction: 'in' },
  ]
  return {
    paths,
    stop: async () => {
      await stopChildren([ours.child])
      await Promise.all(brokers.map((m) => m.stop()))
    },
  }
}

const header = (what: string, payloadBytes: number) =>
  console.error(
    `${what} QoS 1 ${payloadBytes} B: load average ${loadavg()
      .map((l) => round(l))
      .join(' ')}`
  )

async function runIn(): Promise<InRun[]> {
  const runs: InRun[] = []
  const { paths, stop } = await startPairs('in')
  try {
    for (const payloadBytes of PAYLOADS) {
      const before = load1()
      header('in', payloadBytes)
      const [o, m] = await benchAll(paths, 1, payloadBytes)
      const ratios = o!.rounds.map((x, i) => x / m!.rounds[i]!)
      const run: InRun = {
        qos: 1,
        payloadBytes,
        load: [before, load1()],
        ours: o!,
        mosquitto: m!,
        ratio: round(median(ratios)),
      }
      runs.push(run)
      console.error(
        `in QoS 1 ${payloadBytes} B (load ${run.load.join(' → ')}), upstream dst/… → local src/#:\n` +
          `  ours      ${fmt(o!)}\n` +
          `  mosquitto ${fmt(m!)}\n` +
          `  ratio ${run.ratio} (per round ${ratios.map((r) => round(r)).join(', ')})`
      )
    }
  } finally {
    await stop()
  }
  return runs
}

async function runBoth(): Promise<BothRun[]> {
  const runs: BothRun[] = []
  const { paths, stop } = await startPairs('both')
  try {
    for (const payloadBytes of PAYLOADS) {
      const before = load1()
      header('both', payloadBytes)
      const [o, m] = await benchBoth(paths, payloadBytes)
      const ratio = (f: (s: BothSide) => number[]) =>
        round(median(f(o!).map((x, i) => x / f(m!)[i]!)))
      const run: BothRun = {
        qos: 1,
        payloadBytes,
        load: [before, load1()],
        ours: o!,
        mosquitto: m!,
        ratio: ratio((s) => s.totalRounds),
        ratioOut: ratio((s) => s.out.rounds),
        ratioIn: ratio((s) => s.in.rounds),
      }
      runs.push(run)
      const show = (s: BothSide) =>
        `total ${s.totalMsgsPerSec} msg/s [${s.totalRounds.join(', ')}], duplicates ` +
        `up ${s.duplicates.up} down ${s.duplicates.down}, strays ${s.strays}` +
        (s.out.received < s.out.sent || s.in.received < s.in.sent
          ? ' — INCOMPLETE: the bridge stopped forwarding'
          : '') +
        '\n' +
        `      out ${fmt(s.out)}\n      in  ${fmt(s.in)}`
      console.error(
        `both QoS 1 ${payloadBytes} B (load ${run.load.join(' → ')}), each way at once:\n` +
          `  ours      ${show(o!)}\n` +
          `  mosquitto ${show(m!)}\n` +
          `  ratio total ${run.ratio}, out ${run.ratioOut}, in ${run.ratioIn}`
      )
    }
  } finally {
    await stop()
  }
  return runs
}

/** The `in` and `both` runs among `directions`, keyed by direction for the JSON line. */
export async function runDirections(
  directions: readonly Direction[]
): Promise<{ in?: InRun[]; both?: BothRun[] }> {
  const result: { in?: InRun[]; both?: BothRun[] } = {}
  if (directions.includes('in')) result.in = await runIn()
  if (directions.includes('both')) result.both = await runBoth()
  return result
}
