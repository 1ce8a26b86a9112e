/**
 * One gateway against one Mosquitto, each in a process of its own, under the same load from this
 * process: ours as `uns-bridge start` runs it (in-process bus, journal on disk; the isolation
 * bench's isolation-gateway.ts), Mosquitto configured as our gateway behaves (MOSQUITTO_CONFIG).
 * The rest of the gateway bench runs our gateways inside the bench's own process, beside its
 * clients, while Mosquitto has a process to itself: fine for gateway against plain aedes, unfair
 * against Mosquitto. Here both brokers get the same footing, and each one's CPU per message
 * (user + system from /proc) says what the throughput ratio is made of.
 *
 * Cases: QoS 1 to a clean subscriber, QoS 1 to a persistent one (queued until acknowledged), QoS
 * 0. One publisher, WINDOW messages in flight, 64 B, COUNT messages; after a warm-up of each
 * broker, ROUNDS rounds alternating the two, medians reported, the ratio as the median of the
 * per-round ratios.
 */
import mqtt, { type MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.ts'
import { median, round } from './bridge-measure.ts'
import { startOurs } from './isolation.ts'
import { cpuSeconds } from './proc.ts'

const COUNT = Number(process.env.BENCH_SINGLE_COUNT ?? 60_000)
const ROUNDS = Number(process.env.BENCH_SINGLE_ROUNDS ?? 3)
const WINDOW = 500
const PAYLOAD_BYTES = 64
const IDLE_MS = 2_000 // QoS 0 may drop: a run ends when nothing arrived for this long
// As our gateway runs: no Nagle, no cap on QoS 1 messages in flight to a subscriber (Mosquitto's
// default of 20 made it wait for PUBACKs: 25.5k against 29.1k msg/s), no queue bound this load
// could reach.
const MOSQUITTO_CONFIG = 'set_tcp_nodelay true\nmax_inflight_messages 0\nmax_queued_messages 0'

interface Case {
  name: string
  qos: 0 | 1
  persistent: boolean
}
const CASES: Case[] = [
  { name: 'qos1', qos: 1, persistent: false },
  { name: 'qos1Persistent', qos: 1, persistent: true },
  { name: 'qos0', qos: 0, persistent: false },
]

interface Run {
  msgsPerSec: number
  cpuUsPerMsg: number
  received: number
}

export interface SingleFigures {
  ours: Run
  mosquitto: Run
  ratio: number
  cpuRatio: number
}

const connect = (url: string, opts: mqtt.IClientOptions = {}): Promise<MqttClient> =>
  mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0, ...opts })

async function run(url: string, pid: number, c: Case, tag: string): Promise<Run> {
  const subOpts = { clientId: `${tag}-sub`, clean: !c.persistent }
  const sub = await connect(url, subOpts)
  await sub.subscribeAsync(`single/${tag}`, { qos: c.qos })
  const pub = await connect(url)
  let received = 0
  let lastAt = performance.now()
  let wake: (() => void) | undefined
  sub.on('message', () => {
    received++
    lastAt = performance.now()
    wake?.()
  })
  const cpu0 = cpuSeconds(pid)
  const started = performance.now()
  const payload = Buffer.alloc(PAYLOAD_BYTES)
  for (let sent = 0; sent < COUNT; sent++) {
    // The window is end to end (sent, not yet received), so QoS 0 is paced as QoS 1 is.
    while (sent - received >= WINDOW && performance.now() - lastAt < IDLE_MS)
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50) // re-checks for a QoS 0 run whose messages were dropped
        wake = () => {
          clearTimeout(t)
          r()
        }
      })
    pub.publish(`single/${tag}`, payload, { qos: c.qos })
  }
  while (received < COUNT && performance.now() - lastAt < IDLE_MS)
    await new Promise((r) => setTimeout(r, 5))
  const elapsed = (Math.min(performance.now(), lastAt) - started) / 1_000
  const cpu = cpuSeconds(pid) - cpu0
  await Promise.all([pub.endAsync(), sub.endAsync()])
  // The persistent session goes, so the next round starts from the same state.
  if (c.persistent) await (await connect(url, { ...subOpts, clean: true })).endAsync()
  return {
    msgsPerSec: Math.round(received / elapsed),
    cpuUsPerMsg: round((cpu * 1e6) / Math.max(received, 1), 1),
    received,
  }
}

/** Ours with the gateway's default queue bound, as `uns-bridge start` runs it. */
async function startGateway(): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const { port, child } = await startOurs(undefined)
  return {
    url: `mqtt://127.0.0.1:${port}`,
    pid: child.pid!,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve())
        child.kill('SIGTERM')
      }),
  }
}

const medianRun = (runs: Run[]): Run => ({
  msgsPerSec: median(runs.map((r) => r.msgsPerSec)),
  cpuUsPerMsg: median(runs.map((r) => r.cpuUsPerMsg)),
  received: Math.min(...runs.map((r) => r.received)),
})

export async function runSingleGateway(): Promise<Record<string, SingleFigures>> {
  const ours = await startGateway()
  const mosq = await startMosquitto({ config: MOSQUITTO_CONFIG })
  const out: Record<string, SingleFigures> = {}
  try {
    for (const c of CASES) {
      await run(ours.url, ours.pid, c, `o-${c.name}-w`)
      await run(mosq.url, mosq.pid, c, `m-${c.name}-w`)
      const o: Run[] = []
      const m: Run[] = []
      const ratios: number[] = []
      const cpuRatios: number[] = []
      for (let r = 0; r < ROUNDS; r++) {
        // Alternating first, so both see the same background load.
        const pair = async (first: 'o' | 'm') => {
          const a = first === 'o' ? ours : mosq
          const b = first === 'o' ? mosq : ours
          const x = await run(a.url, a.pid, c, `${first}-${c.name}-${r}`)
          const y = await run(b.url, b.pid, c, `${first === 'o' ? 'm' : 'o'}-${c.name}-${r}`)
          return first === 'o' ? [x, y] : [y, x]
        }
        const [oursRun, mosqRun] = await pair(r % 2 === 0 ? 'o' : 'm')
        o.push(oursRun!)
        m.push(mosqRun!)
        ratios.push(oursRun!.msgsPerSec / mosqRun!.msgsPerSec)
        cpuRatios.push(oursRun!.cpuUsPerMsg / mosqRun!.cpuUsPerMsg)
      }
      const f: SingleFigures = {
        ours: medianRun(o),
        mosquitto: medianRun(m),
        ratio: round(median(ratios)),
        cpuRatio: round(median(cpuRatios)),
      }
      out[c.name] = f
      console.error(
        `single gateway ${c.name}: ours ${f.ours.msgsPerSec} msg/s (${f.ours.cpuUsPerMsg} µs/msg), ` +
          `mosquitto ${f.mosquitto.msgsPerSec} msg/s (${f.mosquitto.cpuUsPerMsg} µs/msg): ` +
          `ratio ${f.ratio} (target ≥ 0.8 at QoS 1), CPU per message ${f.cpuRatio}×`
      )
    }
  } finally {
    await Promise.all([ours.stop(), mosq.stop()])
  }
  return out
}
