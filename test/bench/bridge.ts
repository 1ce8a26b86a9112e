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
 * `fullPath` figures sit next to the bridge-only ones in each run. It runs twice, each in a process
 * of its own: `fullPath` with the link on loopback TCP to the gateway (the MQTT path a supervisor
 * in a separate process keeps), `fullPathColocated` with the co-located link reading the gateway
 * in process (gateway/in-process.ts), as the embedded default runs it.
 *
 * For each QoS and payload size: after a warm-up of every path, BENCH_BRIDGE_REPEATS (default 3)
 * rounds of flat-out runs (publisher 1,000 in flight), the paths alternating within each round
 * (and the order reversed every other round) so all see the same background load; then as many
 * rounds paced at 10,000 msg/s and as many at 2,000 msg/s for p50/p99. Figures are medians over
 * the rounds; the ratio is the median of the per-round ratios. The 1-minute load average is
 * printed before each configuration (a 2-core box shared with other benchmarks moves single runs
 * by 2×).
 * `BENCH_BRIDGE_COUNT` shrinks the count (default 100,000), `BENCH_BRIDGE_QOS=1` runs QoS 1 only,
 * `BENCH_BRIDGE_SIZES=1024` one payload size only (default 64 and 1,024 bytes).
 * Bindings coming in (`in`, `both`) are measured in bridge-directions.ts; `BENCH_BRIDGE_DIRECTIONS`
 * picks which (default `out,in,both`; `out` is this file's runs). Prints one JSON line last.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { loadavg, tmpdir } from 'node:os'
import { silentLogger } from '../../services/common/log.ts'
import { createBridgeLink, type CreateBridgeLinkOptions } from '../../services/supervisor/bridge.ts'
import type { Direction } from '../../machines/index.ts'
export type { Direction }
import { startMosquitto } from '../helpers/mosquitto.ts'
import { bundled } from './bundled.ts'
import {
  alternate,
  COUNT,
  cpuSeconds,
  load1,
  measure,
  median,
  openClients,
  PACED_COUNT,
  PACED_RATE,
  REPEATS,
  SLOW_COUNT,
  SLOW_RATE,
  round,
  type Figures,
  type Path,
} from './bridge-measure.ts'

// `BENCH_BRIDGE_QOS=1` runs QoS 1 only (default both).
const QOS_LEVELS = (process.env.BENCH_BRIDGE_QOS ?? '1,0').split(',').map((q) => Number(q) as 0 | 1)
const PAYLOAD_SIZES = (process.env.BENCH_BRIDGE_SIZES ?? '64,1024').split(',').map(Number)
const BRIDGE_WINDOW = Number(process.env.BENCH_BRIDGE_WINDOW ?? 256)
const DIRECTIONS = (process.env.BENCH_BRIDGE_DIRECTIONS ?? 'out,in,both').split(',') as Direction[]
// Every broker queues deep enough that no QoS 1 message is dropped for a slow consumer, and
// sends without Nagle (Mosquitto's default keeps it on, adding up to 40 ms to small messages).
// The in-flight limit stays at Mosquitto's default (20) unless BENCH_MOSQ_INFLIGHT says otherwise:
// it caps both bridges alike (ours as the downstream broker's subscriber, Mosquitto's towards
// the upstream).
export const BROKER_CONFIG = [
  'max_queued_messages 1000000',
  'max_queued_bytes 0',
  `max_inflight_messages ${process.env.BENCH_MOSQ_INFLIGHT ?? 20}`,
  'set_tcp_nodelay true',
].join('\n')

/** The anchor's downstream Mosquitto: its own bridge to `upPort`, `src/…` ↔ `dst/…`. */
export const anchorConfig = (upPort: number, direction: Direction) =>
  [
    BROKER_CONFIG,
    'connection anchor',
    `address 127.0.0.1:${upPort}`,
    `topic # ${direction} 1 src/ dst/`,
    'try_private true',
    'cleansession false',
    'bridge_protocol_version mqttv311',
    'notifications false',
  ].join('\n')

export const fmt = (x: Figures & { rounds: number[] }) =>
  `${x.msgsPerSec} msg/s [${x.rounds.join(', ')}] (p50 ${x.p50Ms} ms, p99 ${x.p99Ms} ms, ` +
  (x.slowP50Ms === undefined
    ? ''
    : `at ${SLOW_RATE} msg/s p50 ${x.slowP50Ms} ms, p99 ${x.slowP99Ms} ms, `) +
  `${x.received}/${x.sent}` +
  (x.cpuUsPerMsg === undefined ? ')' : `; CPU ${x.cpuUsPerMsg} µs/msg)`)

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
  /** The same full path with the co-located link (in process to the gateway, no socket). */
  fullPathColocated: Figures & { rounds: number[] }
  /** Median of the per-round ratios fullPathColocated / mosquitto. */
  fullPathColocatedRatio: number
  /** CPU per message of the full path (TCP link) / of Mosquitto's bridge path: why the ratio. */
  fullPathCpuRatio: number
}

/** One configuration on every path: warm-up, then alternating rounds; medians. */
export async function benchAll(
  paths: Path[],
  qos: 0 | 1,
  payloadBytes: number
): Promise<Array<Figures & { rounds: number[] }>> {
  const clients = await Promise.all(
    paths.map(async (p) => ({ ...(await openClients(p, qos)), pids: p.pids ?? [] }))
  )
  try {
    const counts = { flat: COUNT, paced: PACED_COUNT, slow: SLOW_COUNT, 'warm-up': 5_000 }
    const rates = { paced: PACED_RATE, slow: SLOW_RATE } as Record<string, number | undefined>
    const { flat, paced, slow } = await alternate(
      clients,
      async (c, mode) => {
        const cpuBefore = cpuSeconds(c.pids)
        const rate = rates[mode]
        const f = await measure(c.pub, c.sub, {
          qos,
          payloadBytes,
          topic: c.topic,
          count: Math.min(counts[mode], COUNT),
          ...(rate ? { rate } : {}),
        })
        // The measure waits 2 s of silence at the end: idle then, so the CPU is the messages'.
        const cpu = cpuSeconds(c.pids) - cpuBefore
        if (c.pids.length > 0) f.cpuUsPerMsg = round((cpu * 1e6) / Math.max(1, f.received), 1)
        return f
      },
      { slow: true }
    )
    return paths.map((_, i) => ({
      ...(paths[i]!.pids?.length
        ? { cpuUsPerMsg: round(median(flat[i]!.map((f) => f.cpuUsPerMsg ?? 0)), 1) }
        : {}),
      msgsPerSec: Math.round(median(flat[i]!.map((f) => f.msgsPerSec))),
      p50Ms: round(median(paced[i]!.map((f) => f.p50Ms))),
      p99Ms: round(median(paced[i]!.map((f) => f.p99Ms))),
      slowP50Ms: round(median(slow[i]!.map((f) => f.p50Ms))),
      slowP99Ms: round(median(slow[i]!.map((f) => f.p99Ms))),
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
export async function startOurBridge(
  args: string[]
): Promise<{ child: ChildProcess; line: string }> {
  // Run from a bundle, as `uns-bridge start` runs the code (bundled.ts).
  const entry = await bundled('./bridge-child.ts')
  const child = spawn(
    process.execPath,
    [
      // BENCH_BRIDGE_PROF=<dir>: a CPU profile of each bridge process, written when it stops.
      ...(process.env.BENCH_BRIDGE_PROF
        ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_BRIDGE_PROF]
        : []),
      ...entry.nodeArgs,
      entry.path,
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

/**
 * Full path: our gateway (in-process bus, anonymous) and a bridge link to it, in one process;
 * the link over loopback TCP, or `colocated` in process.
 */
export async function runFabric(upstreamPort: number, colocated: boolean): Promise<void> {
  const { createInProcessBus } = await import('../../services/common/bus/in-process.ts')
  const { startTestGateway } = await import('../helpers/gateway.ts')
  // As `uns-bridge start` runs it: KV buckets kept on disk in the data folder.
  // BENCH_BRIDGE_NO_JOURNAL=1 leaves them in memory only, to measure what the journal costs.
  const dataDir = process.env.BENCH_BRIDGE_NO_JOURNAL
    ? undefined
    : mkdtempSync(join(tmpdir(), 'ub-bench-fabric-'))
  // BENCH_BRIDGE_NATS=<url>: the gateway on a NATS bus (the distributed layout) instead.
  const natsUrl = process.env.BENCH_BRIDGE_NATS
  const bus = natsUrl
    ? await (await import('../helpers/nats.ts')).createTestNatsBus({ url: natsUrl })
    : createInProcessBus(dataDir ? { prefix: 'bench', dataDir } : { prefix: 'bench' })
  // BENCH_BRIDGE_HOLD_MS: the gateway's holdWritesMs (default 20 on NATS, 0 in process).
  const hold = process.env.BENCH_BRIDGE_HOLD_MS
  const gw = await startTestGateway({
    bus,
    anonymous: 'always',
    ...(hold === undefined ? {} : { holdWritesMs: Number(hold) }),
  })
  // The fabric's own login, as the supervisor uses: `ub-bridge-…` client ids are the fabric's only.
  const { INTERNAL_USERNAME, internalCredential } =
    await import('../../services/common/internal-credential.ts')
  const { inProcessDialer } = await import('../../services/gateway/index.ts')
  const link = await startLink(gw.url, upstreamPort, {
    username: INTERNAL_USERNAME,
    password: await internalCredential(bus),
    ...(colocated ? { dial: inProcessDialer(gw) } : {}),
  })
  process.stdout.write(`ready ${gw.url}\n`)
  // A link cut as a slow consumer reconnects and drains its queue: a low round, explained. One
  // at its pending bound catches up from its queue on the same connection (queue-catch-up.ts).
  let cuts = 0
  let catchUps = 0
  const where = colocated ? ', co-located' : ''
  setInterval(() => {
    const { slowConsumers, queueCatchUps } = gw.stats()
    if (slowConsumers > cuts) console.error(`[fabric${where}] link cut as a slow consumer`)
    if (queueCatchUps > catchUps)
      console.error(`[fabric${where}] link caught up from its queue ${queueCatchUps - catchUps}×`)
    cuts = slowConsumers
    catchUps = queueCatchUps
  }, 1_000).unref()
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
  login: Omit<CreateBridgeLinkOptions['local'], 'url'> = {},
  direction: Direction = 'out'
) {
  const link = createBridgeLink({
    upstreamId: 'bench',
    target: { host: 'mqtt://127.0.0.1', brokerPort: upstreamPort },
    bindings: [{ source: 'src', target: 'dst', ...(direction === 'out' ? {} : { direction }) }],
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

export async function runLink(localUrl: string, upstreamPort: number, direction: Direction) {
  // The local broker here is a Mosquitto: what comes down goes out on the session itself.
  const link = await startLink(localUrl, upstreamPort, { inboundOnSession: true }, direction)
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

/** Wait for the bridge processes to exit (a CPU profile is written on exit), at most 5 s each. */
export async function stopChildren(children: ChildProcess[]): Promise<void> {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.exitCode !== null || c.signalCode !== null) return resolve()
          const t = setTimeout(() => (c.kill('SIGKILL'), resolve()), 5_000)
          c.once('exit', () => (clearTimeout(t), resolve()))
          c.kill('SIGTERM')
        })
    )
  )
}

export async function runBridgeBench(): Promise<object> {
  const runs = DIRECTIONS.includes('out') ? await runOut() : []
  const { runDirections } = await import('./bridge-directions.ts')
  const coming = await runDirections(DIRECTIONS)
  const result = {
    bench: 'bridge',
    count: COUNT,
    pacedRate: PACED_RATE,
    pacedCount: PACED_COUNT,
    slowRate: SLOW_RATE,
    slowCount: SLOW_COUNT,
    repeats: REPEATS,
    window: BRIDGE_WINDOW,
    loadAverage: loadavg().map((l) => round(l)),
    runs,
    ...coming,
  }
  console.log(JSON.stringify(result))
  return result
}

/** Direction `out`: publisher downstream, subscriber upstream; and the full path. */
async function runOut(): Promise<Run[]> {
  const runs: Run[] = []
  const upOurs = await startMosquitto({ config: BROKER_CONFIG })
  const downOurs = await startMosquitto({ config: BROKER_CONFIG })
  const upMosq = await startMosquitto({ config: BROKER_CONFIG })
  const downMosq = await startMosquitto({ config: anchorConfig(upMosq.port, 'out') })
  const upFull = await startMosquitto({ config: BROKER_CONFIG })
  const ours = await startOurBridge(['link', downOurs.url, String(upOurs.port)])
  const upColocated = await startMosquitto({ config: BROKER_CONFIG })
  const fabric = await startOurBridge(['fabric', String(upFull.port)])
  const colocated = await startOurBridge(['fabric', String(upColocated.port), 'colocated'])
  const paths: Path[] = [
    {
      name: 'ours',
      downUrl: downOurs.url,
      upUrl: upOurs.url,
      pids: [downOurs.pid, ours.child.pid!, upOurs.pid],
    },
    {
      name: 'mosquitto',
      downUrl: downMosq.url,
      upUrl: upMosq.url,
      pids: [downMosq.pid, upMosq.pid],
    },
    {
      name: 'fullPath',
      downUrl: fabric.line,
      upUrl: upFull.url,
      pids: [fabric.child.pid!, upFull.pid],
    },
    {
      name: 'fullPathColocated',
      downUrl: colocated.line,
      upUrl: upColocated.url,
      pids: [colocated.child.pid!, upColocated.pid],
    },
  ]
  try {
    await new Promise((r) => setTimeout(r, 1_000)) // Mosquitto's bridge connects on its own timer
    for (const qos of QOS_LEVELS) {
      for (const payloadBytes of PAYLOAD_SIZES) {
        const before = load1()
        console.error(
          `QoS ${qos} ${payloadBytes} B: load average ${loadavg()
            .map((l) => round(l))
            .join(' ')}`
        )
        const [o, m, f, c] = await benchAll(paths, qos, payloadBytes)
        const ratios = o!.rounds.map((x, i) => x / m!.rounds[i]!)
        const fullRatios = f!.rounds.map((x, i) => x / m!.rounds[i]!)
        const colocatedRatios = c!.rounds.map((x, i) => x / m!.rounds[i]!)
        const run: Run = {
          qos,
          payloadBytes,
          load: [before, load1()],
          ours: o!,
          mosquitto: m!,
          ratio: round(median(ratios)),
          fullPath: f!,
          fullPathRatio: round(median(fullRatios)),
          fullPathColocated: c!,
          fullPathColocatedRatio: round(median(colocatedRatios)),
          fullPathCpuRatio: round((f!.cpuUsPerMsg ?? 0) / Math.max(0.1, m!.cpuUsPerMsg ?? 0)),
        }
        runs.push(run)
        console.error(
          `QoS ${qos} ${payloadBytes} B (load ${run.load.join(' → ')}):\n` +
            `  bridge only: ours      ${fmt(o!)}\n` +
            `  bridge only: mosquitto ${fmt(m!)}\n` +
            `  bridge only: ratio ${run.ratio} (per round ${ratios.map((r) => round(r)).join(', ')})\n` +
            `  full path (our gateway → our bridge → mosquitto): ${fmt(f!)}\n` +
            `  full path / mosquitto's bridge: ${run.fullPathRatio} (per round ${fullRatios.map((r) => round(r)).join(', ')})\n` +
            `  full path, co-located link (in process): ${fmt(c!)}\n` +
            `  co-located full path / mosquitto's bridge: ${run.fullPathColocatedRatio} (per round ${colocatedRatios.map((r) => round(r)).join(', ')})\n` +
            `  CPU per message, full path / mosquitto's bridge path: ${f!.cpuUsPerMsg} / ${m!.cpuUsPerMsg} µs = ${run.fullPathCpuRatio}`
        )
      }
    }
  } finally {
    await stopChildren([ours.child, fabric.child, colocated.child])
    const brokers = [upOurs, downOurs, upMosq, downMosq, upFull, upColocated]
    await Promise.all(brokers.map((m) => m.stop()))
  }
  return runs
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runBridgeBench()
  process.exit(0)
}
