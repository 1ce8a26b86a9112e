/**
 * What the bridge benchmark (bridge.ts, bridge-directions.ts) measures with: a publisher on one
 * broker, a subscriber on another, COUNT messages flat out or paced, alternating rounds.
 */
import { loadavg } from 'node:os'
export { cpuSeconds } from './proc.ts'
import { connectAsync, type MqttClient } from 'mqtt'

export const COUNT = Number(process.env.BENCH_BRIDGE_COUNT ?? 100_000)
export const PACED_RATE = 10_000 // msg/s for the latency run (the target: p99 < 20 ms at this rate)
export const PACED_COUNT = Math.min(COUNT, 30_000) // 3 s per paced run
export const SLOW_RATE = 2_000 // msg/s: the second latency run, a steady plant's rate
export const SLOW_COUNT = Math.min(COUNT, 10_000) // 5 s per slow run
export const REPEATS = Number(process.env.BENCH_BRIDGE_REPEATS ?? 3)
export const PUBLISH_WINDOW = 1_000 // publisher's own in-flight limit
export const IDLE_MS = 2_000 // a run ends when nothing arrived for 2 s (QoS 0 may drop)

export interface Figures {
  /** p50 and p99 when paced at SLOW_RATE (bridge.ts), beside p50Ms/p99Ms at PACED_RATE. */
  slowP50Ms?: number
  slowP99Ms?: number
  /** CPU time of the path's processes (user + system) per message received, in µs. */
  cpuUsPerMsg?: number
  msgsPerSec: number
  p50Ms: number
  p99Ms: number
  received: number
  sent: number
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
export const load1 = () => round(loadavg()[0]!)

export const percentile = (sorted: Float64Array, p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!
export const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits

/** Send COUNT messages (flat out, or paced) and measure at the subscriber. */
export async function measure(
  pub: MqttClient,
  sub: MqttClient,
  {
    qos,
    payloadBytes,
    count,
    rate,
    topic,
  }: { qos: 0 | 1; payloadBytes: number; count: number; rate?: number; topic: string }
): Promise<Figures> {
  const latencies = new Float64Array(count)
  let received = 0
  let firstSent = 0
  let lastAt = 0
  const onMessage = (_t: string, payload: Buffer) => {
    const now = performance.now()
    if (received < count) latencies[received] = now - payload.readDoubleLE(0)
    received++
    lastAt = now
  }
  sub.on('message', onMessage)
  const payload = Buffer.alloc(payloadBytes, 0x61)
  let inflight = 0
  let wake: (() => void) | undefined
  const done = () => {
    inflight--
    wake?.()
  }
  firstSent = performance.now()
  for (let i = 0; i < count; i++) {
    if (rate) {
      const due = firstSent + (i * 1_000) / rate
      const wait = due - performance.now()
      if (wait > 1) await new Promise((r) => setTimeout(r, wait))
    }
    while (inflight >= PUBLISH_WINDOW) await new Promise<void>((r) => (wake = r))
    const p = Buffer.from(payload)
    p.writeDoubleLE(performance.now(), 0)
    inflight++
    pub.publish(topic, p, { qos }, done)
  }
  while (received < count) {
    const before = received
    await new Promise((r) => setTimeout(r, IDLE_MS))
    if (received === before) break
  }
  sub.removeListener('message', onMessage)
  const got = latencies.subarray(0, Math.min(received, count)).sort()
  return {
    msgsPerSec: Math.round(received / ((lastAt - firstSent) / 1_000)),
    p50Ms: round(percentile(got, 0.5)),
    p99Ms: round(percentile(got, 0.99)),
    received,
    sent: count,
  }
}

export interface Path {
  name: string
  /** The processes that carry this path (brokers, bridge), measuring clients excluded. */
  pids?: number[]
  downUrl: string
  upUrl: string
  /** `in`: the publisher on the upstream broker (`dst/…`), the subscriber on the downstream one. */
  direction?: 'out' | 'in'
}

export interface Clients {
  pub: MqttClient
  sub: MqttClient
  /** Where `pub` publishes. */
  topic: string
}

export async function openClients(path: Path, qos: 0 | 1): Promise<Clients> {
  const coming = path.direction === 'in'
  const opts = { protocolVersion: 4, reconnectPeriod: 0 } as const
  const sub = await connectAsync(coming ? path.downUrl : path.upUrl, opts)
  await sub.subscribeAsync(coming ? 'src/#' : 'dst/#', { qos })
  const pub = await connectAsync(coming ? path.upUrl : path.downUrl, opts)
  for (const c of [pub, sub]) {
    // MQTT.js leaves Nagle on: small QoS 0 packets would wait for delayed ACKs (~40 ms).
    ;(c.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true)
    c.stream.setMaxListeners(PUBLISH_WINDOW + 10) // one 'drain' listener per blocked publish
  }
  return { pub, sub, topic: coming ? 'dst/bench/m' : 'src/bench/m' }
}

/**
 * A warm-up of every client set (JIT and connections, not measured), then REPEATS flat-out rounds
 * and REPEATS paced ones (and, with `slow`, REPEATS paced at SLOW_RATE), the sets alternating
 * within each round (the order reversed every other).
 */
export async function alternate<C, F>(
  clients: C[],
  run: (c: C, mode: 'warm-up' | 'flat' | 'paced' | 'slow') => Promise<F>,
  { slow = false }: { slow?: boolean } = {}
): Promise<{ flat: F[][]; paced: F[][]; slow: F[][] }> {
  for (const c of clients) await run(c, 'warm-up')
  const flat: F[][] = clients.map(() => [])
  const paced: F[][] = clients.map(() => [])
  const slowRuns: F[][] = clients.map(() => [])
  const order = (round: number) => {
    const idx = clients.map((_, i) => i)
    return round % 2 ? idx.reverse() : idx
  }
  const modes = [
    ['flat', flat],
    ['paced', paced],
    ...(slow ? [['slow', slowRuns] as const] : []),
  ] as const
  for (const [mode, out] of modes) {
    for (let r = 0; r < REPEATS; r++) {
      for (const i of order(r)) out[i]!.push(await run(clients[i]!, mode))
    }
  }
  return { flat, paced, slow: slowRuns }
}
