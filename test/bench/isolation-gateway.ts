/**
 * One gateway as `uns-bridge start` runs it (in-process bus, journal on disk), in its own
 * process so the measuring clients do not share its event loop, as they do not share
 * Mosquitto's. Prints `{"port":…}` once it listens; SIGTERM closes it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Session } from 'node:inspector/promises'
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { silentLogger } from '../../services/common/log.ts'
import { createStoreClient } from '../../services/contracts/store-client.ts'
import { createGateway } from '../../services/gateway/index.ts'

const dataDir = mkdtempSync(join(tmpdir(), 'ub-iso-'))
const bus = createInProcessBus({ dataDir })
const gateway = await createGateway({
  bus,
  store: createStoreClient({ bus }),
  log: silentLogger(),
  host: '127.0.0.1',
  mqttPort: 0,
  storeLimits: { sessionMaxQueued: Number(process.env.BENCH_ISO_MAX_QUEUED ?? 10_000) },
  ...(process.env.BENCH_ISO_HOLD_MS ? { holdWritesMs: Number(process.env.BENCH_ISO_HOLD_MS) } : {}),
})
process.stdout.write(JSON.stringify({ port: gateway.ports.mqtt }) + '\n')
if (process.env.BENCH_ISO_TRACE) traceLoop()
if (process.env.BENCH_ISO_PROFILE) profileOnSignal(process.env.BENCH_ISO_PROFILE)
if (process.env.BENCH_ISO_SPLIT) reportOwnShare()
process.once('SIGTERM', () => {
  void gateway
    .close()
    .then(() => bus.close())
    .finally(() => {
      rmSync(dataDir, { recursive: true, force: true })
      process.exit(0)
    })
})

/**
 * BENCH_ISO_TRACE=1: the event loop's delay and utilization each second, and GC pauses over
 * 10 ms, on stderr: where a latency figure came from.
 */
function traceLoop(): void {
  const gcs = new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      if (e.duration > 10)
        process.stderr.write(`gc: ${e.duration.toFixed(0)} ms at ${e.startTime.toFixed(0)}\n`)
  })
  gcs.observe({ entryTypes: ['gc'] })
  const delay = monitorEventLoopDelay({ resolution: 1 })
  delay.enable()
  let last = performance.eventLoopUtilization()
  setInterval(() => {
    const now = performance.eventLoopUtilization()
    const elu = performance.eventLoopUtilization(now, last).utilization
    last = now
    const ms = (ns: number) => (ns / 1e6).toFixed(1)
    const heapMiB = (process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)
    process.stderr.write(
      `loop: utilization ${(elu * 100).toFixed(0)}%, delay p50 ${ms(delay.percentile(50))} ` +
        `p99 ${ms(delay.percentile(99))} max ${ms(delay.max)} ms, heap ${heapMiB} MiB\n`
    )
    delay.reset()
  }, 1_000).unref()
}

/**
 * BENCH_ISO_PROFILE=dir: each SIGUSR2 starts or stops a CPU profile, written to dir as
 * `stalled-<n>.cpuprofile`; the bench signals around each stalled stream, so the profile holds
 * that stream and not the backlogs' preparation (what `--cpu-prof` over the whole process mixes in).
 */
function profileOnSignal(dir: string): void {
  const session = new Session()
  session.connect()
  let running = false
  let n = 0
  process.on('SIGUSR2', () => {
    running = !running
    const step = running
      ? session.post('Profiler.enable').then(() => session.post('Profiler.start'))
      : session.post('Profiler.stop').then(({ profile }) => {
          writeFileSync(join(dir, `stalled-${n++}.cpuprofile`), JSON.stringify(profile))
        })
    step.catch((err: unknown) => process.stderr.write(`profile: ${String(err)}\n`))
  })
}

/**
 * BENCH_ISO_SPLIT=1: per measured stream, on stderr, the percentiles of the time from the
 * publisher's stamp (wall clock, isolation.ts) to aedes' `publish` event here, which comes once the
 * message was handed to every subscriber: the gateway's share of the healthy subscriber's latency.
 */
function reportOwnShare(): void {
  let ms: number[] = []
  let quiet: NodeJS.Timeout | undefined
  const report = () => {
    ms.sort((a, b) => a - b)
    const at = (q: number) => ms[Math.floor(q * (ms.length - 1))]!.toFixed(2)
    process.stderr.write(
      `gateway's share: ${ms.length} msgs, p50 ${at(0.5)} p99 ${at(0.99)} max ${at(1)} ms\n`
    )
    ms = []
  }
  const aedes = gateway.broker.aedes as unknown as {
    on(event: 'publish', f: (p: { topic: string; payload: Buffer }, client: unknown) => void): void
  }
  aedes.on('publish', (p, client) => {
    if (!client || p.topic !== 'iso/live') return
    ms.push(performance.timeOrigin + performance.now() - p.payload.readDoubleLE(0))
    clearTimeout(quiet)
    quiet = setTimeout(report, 1_000) // a stream ended
  })
}
