/**
 * Bridge throughput and latency: a publisher on the downstream broker, a subscriber on the
 * upstream one, the bridge between them remapping `src/…` to `dst/…`.
 *
 * Both sides run the same two Mosquitto processes, so the only difference is the bridge:
 * - ours: `createBridgeLink` in its own Node process (0x84 on the downstream side, window, acks in
 *   order after the upstream PUBACK);
 * - anchor: Mosquitto's own bridge (`connection` block in the downstream broker, `topic # out`
 *   with the same prefix remapping, `try_private`, `cleansession false`).
 *
 * Beside them, clearly apart, our full path as the issue states it: a publisher on our own gateway
 * (aedes-based, in-process bus, in the same process as the bridge link, as `uns-bridge start` runs
 * them) → our bridge → an upstream Mosquitto. It has no Mosquitto counterpart of its own; the
 * `fullPath` figures sit next to the bridge-only ones in each run.
 *
 * For each QoS and payload size: after a warm-up of every path, BENCH_BRIDGE_REPEATS (default 3)
 * rounds of flat-out runs (publisher 1,000 in flight), the paths alternating within each round
 * (and the order reversed every other round) so all see the same background load; then as many
 * rounds paced at 10,000 msg/s for p50/p99. Figures are medians over the rounds; the ratio is the
 * median of the per-round ratios. The 1-minute load average is printed before each configuration
 * (a 2-core box shared with other benchmarks moves single runs by 2×).
 * `BENCH_BRIDGE_COUNT` shrinks the count (default 100,000), `BENCH_BRIDGE_QOS=1` runs QoS 1 only.
 * Prints one JSON line last.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { loadavg, tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { connectAsync, type MqttClient } from 'mqtt'
import { silentLogger } from '../../services/common/log.ts'
import { createBridgeLink } from '../../services/supervisor/bridge.ts'
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.ts'

const COUNT = Number(process.env.BENCH_BRIDGE_COUNT ?? 100_000)
const PACED_RATE = 10_000 // msg/s for the latency run (the target: p99 < 20 ms at this rate)
const PACED_COUNT = Math.min(COUNT, 30_000) // 3 s per paced run
const REPEATS = Number(process.env.BENCH_BRIDGE_REPEATS ?? 3)
// `BENCH_BRIDGE_QOS=1` runs QoS 1 only (default both).
const QOS_LEVELS = (process.env.BENCH_BRIDGE_QOS ?? '1,0').split(',').map((q) => Number(q) as 0 | 1)
const PUBLISH_WINDOW = 1_000 // publisher's own in-flight limit
const IDLE_MS = 2_000 // a run ends when nothing arrived for 2 s (QoS 0 may drop)
const BRIDGE_WINDOW = Number(process.env.BENCH_BRIDGE_WINDOW ?? 256)
// Every broker queues deep enough that no QoS 1 message is dropped for a slow consumer, and
// sends without Nagle (Mosquitto's default keeps it on, adding up to 40 ms to small messages).
// The in-flight limit stays at Mosquitto's default (20) unless BENCH_MOSQ_INFLIGHT says otherwise:
// it caps both bridges alike (ours as the downstream broker's subscriber, Mosquitto's towards
// the upstream).
const BROKER_CONFIG = [
  'max_queued_messages 1000000',
  'max_queued_bytes 0',
  `max_inflight_messages ${process.env.BENCH_MOSQ_INFLIGHT ?? 20}`,
  'set_tcp_nodelay true',
].join('\n')

interface Figures {
  msgsPerSec: number
  p50Ms: number
  p99Ms: number
  received: number
  sent: number
}

interface Run {
  qos: 0 | 1
  payloadBytes: number
  /** 1-minute load average before this configuration, and after it. */
  load: [number, number]
  /** Bridge only: our bridge between two Mosquittos. Medians over the rounds. */
  ours: Figures & { rounds: number[] }
  /** Mosquitto's bridge between two Mosquittos. */
  mosquitto: Figures & { rounds: number[] }
  /** Median of the per-round ratios ours / mosquitto (bridge only). */
  ratio: number
  /** Full path: publisher on our gateway → our bridge (same process) → upstream Mosquitto. */
  fullPath: Figures & { rounds: number[] }
  /**
   * Median of the per-round ratios fullPath / mosquitto: the issue's own definition of ours (a
   * publisher on the downstream gateway), against Mosquitto's bridge between two Mosquittos.
   */
  fullPathRatio: number
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const load1 = () => round(loadavg()[0]!)

const percentile = (sorted: Float64Array, p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!
const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits

/** Send COUNT messages (flat out, or paced) and measure at the subscriber. */
async function measure(
  pub: MqttClient,
  sub: MqttClient,
  {
    qos,
    payloadBytes,
    count,
    rate,
  }: { qos: 0 | 1; payloadBytes: number; count: number; rate?: number }
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
    pub.publish('src/bench/m', p, { qos }, done)
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

interface Path {
  name: string
  downUrl: string
  upUrl: string
}

interface Clients {
  pub: MqttClient
  sub: MqttClient
}

async function openClients(path: Path, qos: 0 | 1): Promise<Clients> {
  const sub = await connectAsync(path.upUrl, { protocolVersion: 4, reconnectPeriod: 0 })
  await sub.subscribeAsync('dst/#', { qos })
  const pub = await connectAsync(path.downUrl, { protocolVersion: 4, reconnectPeriod: 0 })
  for (const c of [pub, sub]) {
    // MQTT.js leaves Nagle on: small QoS 0 packets would wait for delayed ACKs (~40 ms).
    ;(c.stream as { setNoDelay?: (on: boolean) => void }).setNoDelay?.(true)
    c.stream.setMaxListeners(PUBLISH_WINDOW + 10) // one 'drain' listener per blocked publish
  }
  return { pub, sub }
}

/** One configuration on every path: warm-up, then alternating rounds; medians. */
async function benchAll(
  paths: Path[],
  qos: 0 | 1,
  payloadBytes: number
): Promise<Array<Figures & { rounds: number[] }>> {
  const clients = await Promise.all(paths.map((p) => openClients(p, qos)))
  try {
    // Warm-up: JIT and connections, not measured.
    for (const c of clients) {
      await measure(c.pub, c.sub, { qos, payloadBytes, count: Math.min(5_000, COUNT) })
    }
    const flat: Figures[][] = paths.map(() => [])
    const paced: Figures[][] = paths.map(() => [])
    const order = (round: number) => {
      const idx = paths.map((_, i) => i)
      return round % 2 ? idx.reverse() : idx
    }
    for (let r = 0; r < REPEATS; r++) {
      for (const i of order(r)) {
        const c = clients[i]!
        flat[i]!.push(await measure(c.pub, c.sub, { qos, payloadBytes, count: COUNT }))
      }
    }
    for (let r = 0; r < REPEATS; r++) {
      for (const i of order(r)) {
        const c = clients[i]!
        paced[i]!.push(
          await measure(c.pub, c.sub, { qos, payloadBytes, count: PACED_COUNT, rate: PACED_RATE })
        )
      }
    }
    return paths.map((_, i) => ({
      msgsPerSec: Math.round(median(flat[i]!.map((f) => f.msgsPerSec))),
      p50Ms: round(median(paced[i]!.map((f) => f.p50Ms))),
      p99Ms: round(median(paced[i]!.map((f) => f.p99Ms))),
      received: Math.min(...flat[i]!.map((f) => f.received)),
      sent: COUNT,
      rounds: flat[i]!.map((f) => f.msgsPerSec),
    }))
  } finally {
    for (const c of clients) {
      await c.pub.endAsync(true)
      await c.sub.endAsync(true)
    }
  }
}

/** Our bridge in its own process, as the supervisor would run it. */
async function startOurBridge(args: string[]): Promise<{ child: ChildProcess; line: string }> {
  const child = spawn(
    process.execPath,
    [
      // BENCH_BRIDGE_PROF=<dir>: a CPU profile of each bridge process, written when it stops.
      ...(process.env.BENCH_BRIDGE_PROF
        ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_BRIDGE_PROF]
        : []),
      '--import',
      'tsx',
      fileURLToPath(import.meta.url),
      ...args,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] }
  )
  const line = await new Promise<string>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /^ready(.*)$/m.exec(out)
      if (m) resolve(m[1]!.trim())
    })
    child.once('exit', (code) => reject(new Error(`bridge process exited ${code}`)))
  })
  return { child, line }
}

/** Full path: our gateway (in-process bus, anonymous) and a bridge link to it, in one process. */
async function runFabric(upstreamPort: number): Promise<void> {
  const { createInProcessBus } = await import('../../services/common/bus/in-process.ts')
  const { startTestGateway } = await import('../helpers/gateway.ts')
  // As `uns-bridge start` runs it: KV buckets kept on disk in the data folder.
  // BENCH_BRIDGE_NO_JOURNAL=1 leaves them in memory only, to measure what the journal costs.
  const dataDir = process.env.BENCH_BRIDGE_NO_JOURNAL
    ? undefined
    : mkdtempSync(join(tmpdir(), 'ub-bench-fabric-'))
  const bus = createInProcessBus(dataDir ? { prefix: 'bench', dataDir } : { prefix: 'bench' })
  const gw = await startTestGateway({ bus, anonymous: 'always' })
  // The fabric's own login, as the supervisor uses: `ub-bridge-…` client ids are the fabric's only.
  const { INTERNAL_USERNAME, internalCredential } =
    await import('../../services/common/internal-credential.ts')
  const link = await startLink(gw.url, upstreamPort, {
    username: INTERNAL_USERNAME,
    password: await internalCredential(bus),
  })
  process.stdout.write(`ready ${gw.url}\n`)
  process.on(
    'SIGTERM',
    () =>
      void link
        .stop()
        .then(() => gw.close())
        .then(() => bus.close())
        .then(() => dataDir && rmSync(dataDir, { recursive: true, force: true }))
        .then(() => process.exit(0))
  )
}

async function startLink(
  localUrl: string,
  upstreamPort: number,
  login: { username?: string; password?: string } = {}
) {
  const link = createBridgeLink({
    upstreamId: 'bench',
    target: { host: 'mqtt://127.0.0.1', brokerPort: upstreamPort },
    bindings: [{ source: 'src', target: 'dst' }],
    credentials: async () => ({}),
    local: { url: localUrl, ...login },
    localClientId: 'ub-bridge-bench',
    upstreamClientId: 'ub-bench-up',
    window: BRIDGE_WINDOW,
    log: silentLogger(),
  })
  const deadline = Date.now() + 30_000 // a refused login must fail the bench, not hang it
  while (link.status().state !== 'Forwarding') {
    if (Date.now() > deadline)
      throw new Error(`bridge link not forwarding: ${JSON.stringify(link.status())}`)
    await new Promise((r) => setTimeout(r, 20))
  }
  return link
}

async function runLink(localUrl: string, upstreamPort: number): Promise<void> {
  const link = await startLink(localUrl, upstreamPort)
  process.stdout.write('ready\n')
  // BENCH_BRIDGE_DIAG=1: every second with traffic, the event loop's busy share and how many
  // messages waited in the window (mean, max): is the bridge busy, or waiting?
  if (process.env.BENCH_BRIDGE_DIAG) {
    const { performance } = await import('node:perf_hooks')
    let elu = performance.eventLoopUtilization()
    let last = link.status().forwarded
    let sum = 0
    let n = 0
    let max = 0
    setInterval(() => {
      const w = link.status().waiting
      sum += w
      n++
      max = Math.max(max, w)
    }, 1).unref()
    setInterval(() => {
      const now = performance.eventLoopUtilization(elu)
      elu = performance.eventLoopUtilization()
      const fwd = link.status().forwarded
      if (fwd > last) {
        console.error(
          `[link] ${fwd - last} msg/s, loop busy ${Math.round(now.utilization * 100)}%, ` +
            `waiting mean ${(sum / n).toFixed(1)} max ${max}`
        )
      }
      last = fwd
      sum = n = max = 0
    }, 1_000).unref()
  }
  process.on('SIGTERM', () => void link.stop().then(() => process.exit(0)))
}

export async function runBridgeBench(): Promise<object> {
  const runs: Run[] = []
  const upOurs = await startMosquitto({ config: BROKER_CONFIG })
  const downOurs = await startMosquitto({ config: BROKER_CONFIG })
  const upMosq = await startMosquitto({ config: BROKER_CONFIG })
  const downMosq = await startMosquitto({
    config: [
      BROKER_CONFIG,
      'connection anchor',
      `address 127.0.0.1:${upMosq.port}`,
      'topic # out 1 src/ dst/',
      'try_private true',
      'cleansession false',
      'bridge_protocol_version mqttv311',
      'notifications false',
    ].join('\n'),
  })
  const upFull = await startMosquitto({ config: BROKER_CONFIG })
  const ours = await startOurBridge(['link', downOurs.url, String(upOurs.port)])
  const fabric = await startOurBridge(['fabric', String(upFull.port)])
  const paths: Path[] = [
    { name: 'ours', downUrl: downOurs.url, upUrl: upOurs.url },
    { name: 'mosquitto', downUrl: downMosq.url, upUrl: upMosq.url },
    { name: 'fullPath', downUrl: fabric.line, upUrl: upFull.url },
  ]
  try {
    await new Promise((r) => setTimeout(r, 1_000)) // Mosquitto's bridge connects on its own timer
    for (const qos of QOS_LEVELS) {
      for (const payloadBytes of [64, 1_024]) {
        const before = load1()
        console.error(
          `QoS ${qos} ${payloadBytes} B: load average ${loadavg()
            .map((l) => round(l))
            .join(' ')}`
        )
        const [o, m, f] = await benchAll(paths, qos, payloadBytes)
        const ratios = o!.rounds.map((x, i) => x / m!.rounds[i]!)
        const fullRatios = f!.rounds.map((x, i) => x / m!.rounds[i]!)
        const run: Run = {
          qos,
          payloadBytes,
          load: [before, load1()],
          ours: o!,
          mosquitto: m!,
          ratio: round(median(ratios)),
          fullPath: f!,
          fullPathRatio: round(median(fullRatios)),
        }
        runs.push(run)
        const fmt = (x: Figures & { rounds: number[] }) =>
          `${x.msgsPerSec} msg/s [${x.rounds.join(', ')}] (p50 ${x.p50Ms} ms, p99 ${x.p99Ms} ms, ` +
          `${x.received}/${x.sent})`
        console.error(
          `QoS ${qos} ${payloadBytes} B (load ${run.load.join(' → ')}):\n` +
            `  bridge only: ours      ${fmt(o!)}\n` +
            `  bridge only: mosquitto ${fmt(m!)}\n` +
            `  bridge only: ratio ${run.ratio} (per round ${ratios.map((r) => round(r)).join(', ')})\n` +
            `  full path (our gateway → our bridge → mosquitto): ${fmt(f!)}\n` +
            `  full path / mosquitto's bridge: ${run.fullPathRatio} (per round ${fullRatios.map((r) => round(r)).join(', ')})`
        )
      }
    }
  } finally {
    // Wait for the bridge processes to exit (a CPU profile is written on exit), at most 5 s.
    await Promise.all(
      [ours.child, fabric.child].map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve()
            const t = setTimeout(() => (c.kill('SIGKILL'), resolve()), 5_000)
            c.once('exit', () => (clearTimeout(t), resolve()))
            c.kill('SIGTERM')
          })
      )
    )
    await Promise.all([upOurs, downOurs, upMosq, downMosq, upFull].map((m) => m.stop()))
  }
  const result = {
    bench: 'bridge',
    count: COUNT,
    pacedRate: PACED_RATE,
    pacedCount: PACED_COUNT,
    repeats: REPEATS,
    window: BRIDGE_WINDOW,
    loadAverage: loadavg().map((l) => round(l)),
    runs,
  }
  console.log(JSON.stringify(result))
  return result
}

if (import.meta.url === `file://${process.argv[1]}`) {
  if (process.argv[2] === 'link') {
    await runLink(process.argv[3]!, Number(process.argv[4]))
  } else if (process.argv[2] === 'fabric') {
    await runFabric(Number(process.argv[3]))
  } else {
    await runBridgeBench()
    process.exit(0)
  }
}
