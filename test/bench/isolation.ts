/**
 * Isolation: does one client that stops reading hurt the others? (README, Bounds.)
 *
 * A healthy subscriber takes a paced stream (RATE msg/s, QoS 1, 64 B) and its p99 delivery
 * latency is measured three times on each broker: quiet (nothing else connected); stalled, while
 * 10 persistent sessions, subscribed to the same stream and to a bulk topic, resume backlogs of
 * BACKLOG messages of 1 KiB, 8 of them reading and 2 never reading a byte; and all reading, the
 * same sessions and backlogs with every one of them reading. stalled/quiet is what the whole
 * stalled load costs the healthy subscriber (`ratio`); stalled/all reading what the two that never
 * read cost it beyond the load itself (`stallRatio`): the isolation proper. The 10 sessions run in
 * a process of their own (isolation-sessions.ts), and both brokers queue at most MAX_QUEUED
 * messages per session. Anchor: Mosquitto with `max_queued_messages` MAX_QUEUED, in the same run.
 * Ours is one gateway in its own process, as `uns-bridge start` runs it. After one unrecorded
 * warm-up round, each figure is the median over ROUNDS rounds, quiet, all reading and stalled in
 * turn, each after the broker had SETTLE_MS to finish what the previous stream left. Target:
 * our stalled/quiet ratio within 1.5, and no worse than Mosquitto's. Beside each figure, the
 * broker process's CPU over that stream (% of one core): what the latency is made of. Diagnosis:
 * BENCH_ISO_TIMELINE prints the worst latency per 250 ms of each stream, BENCH_ISO_NEVER_READ
 * changes how many sessions never read, BENCH_ISO_HOLD_MS sets our gateway's holdWritesMs,
 * BENCH_ISO_PROFILE=dir writes a CPU profile of our gateway over each stalled stream,
 * BENCH_ISO_SPLIT=1 has our gateway print its own share of each stream's latency (the publisher's
 * stamp to the message's routing there), so the rest is the sockets and the clients' processes.
 * Ends with one JSON line.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import mqtt, { type MqttClient } from 'mqtt'
import { startMosquitto } from '../helpers/mosquitto.ts'
import { bundled } from './bundled.ts'
import { cpuSeconds } from './proc.ts'

const RATE = Number(process.env.BENCH_ISO_RATE ?? 2_000) // msg/s on the measured stream
const SECONDS = Number(process.env.BENCH_ISO_SECONDS ?? 5)
const BACKLOG = Number(process.env.BENCH_ISO_BACKLOG ?? 5_000) // per session
const SESSIONS = 10
const NEVER_READ = Number(process.env.BENCH_ISO_NEVER_READ ?? 2)
const ROUNDS = Number(process.env.BENCH_ISO_ROUNDS ?? 3)
// Both brokers queue at most this many messages per session (Mosquitto's default
// max_queued_messages; ours is sessionMaxQueued, 10,000 by default): the same bound, the same work.
const MAX_QUEUED = Number(process.env.BENCH_ISO_MAX_QUEUED ?? 1_000)
// Before each quiet figure: a stalled round leaves work behind (queues purged by the clean
// reconnects, the journal's rewrite, GC); measured at once, "quiet" was 8-16 ms instead of ~1.5.
const SETTLE_MS = Number(process.env.BENCH_ISO_SETTLE_MS ?? 5_000)

interface Figures {
  quietP99Ms: number
  stalledP99Ms: number
  /** stalled / quiet: what the stalled load as a whole costs the healthy subscriber. */
  ratio: number
  /** The same 10 sessions and backlogs, every one of them reading. */
  loadedP99Ms: number
  /** stalled / loaded: what the sessions that never read cost it, beyond the load itself. */
  stallRatio: number
  /** The broker process's CPU (user + system) over each measured stream, % of one core. */
  quietCpuPct: number
  loadedCpuPct: number
  stalledCpuPct: number
}

interface Measured {
  p99Ms: number
  cpuPct: number
}

// Wall-clock ms with sub-ms precision, the same in every process on the machine: the gateway
// reads the stamp too (BENCH_ISO_SPLIT).
const now = (): number => performance.timeOrigin + performance.now()
const round = (n: number, d = 2): number => Math.round(n * 10 ** d) / 10 ** d
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0

function connect(url: string, opts: mqtt.IClientOptions = {}): Promise<MqttClient> {
  const c = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, ...opts })
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c))
    c.once('error', reject)
  })
}

/** Subscribe the sessions and leave them with BACKLOG queued bulk messages each. */
async function prepareBacklogs(url: string, tag: string): Promise<void> {
  for (let i = 0; i < SESSIONS; i++) {
    const c = await connect(url, { clientId: `${tag}-s${i}`, clean: false })
    await c.subscribeAsync({ 'iso/live': { qos: 1 }, 'iso/bulk/#': { qos: 1 } })
    await c.endAsync()
  }
  const pub = await connect(url, { clientId: `${tag}-bulk` })
  const payload = Buffer.alloc(1_024, 0x62)
  for (let sent = 0; sent < BACKLOG; sent += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, BACKLOG - sent) }, (_, i) =>
        pub.publishAsync(`iso/bulk/${(sent + i) % 16}`, payload, { qos: 1 })
      )
    )
  }
  await pub.endAsync()
}

/** The healthy subscriber's p99 over a paced stream of RATE × SECONDS messages. */
export async function measureP99(url: string, pid: number, tag: string): Promise<Measured> {
  const sub = await connect(url, { clientId: `${tag}-healthy` })
  await sub.subscribeAsync('iso/live', { qos: 1 })
  const pub = await connect(url, { clientId: `${tag}-pub` })
  const count = RATE * SECONDS
  const latencies: number[] = []
  sub.on('message', (_t, payload) => latencies.push(now() - payload.readDoubleLE(0)))
  const cpu0 = cpuSeconds(pid)
  const start = performance.now()
  for (let i = 0; i < count; i++) {
    const wait = start + (i * 1_000) / RATE - performance.now()
    if (wait > 1) await sleep(wait)
    const p = Buffer.alloc(64)
    p.writeDoubleLE(now(), 0)
    pub.publish('iso/live', p, { qos: 1 })
  }
  const deadline = Date.now() + 30_000
  while (latencies.length < count && Date.now() < deadline) await sleep(50)
  const cpuPct = ((cpuSeconds(pid) - cpu0) * 100_000) / (performance.now() - start)
  await Promise.all([sub.endAsync(), pub.endAsync()])
  // A message that never came counts as the whole wait: a stall must not look fast.
  while (latencies.length < count) latencies.push(30_000)
  if (process.env.BENCH_ISO_TIMELINE) {
    // Worst latency per 250 ms of the run: where the tail comes from.
    const worst: number[] = []
    latencies.forEach((l, i) => {
      const b = Math.floor(i / (RATE / 4))
      worst[b] = Math.max(worst[b] ?? 0, l)
    })
    console.error(`  ${tag} worst per 250 ms: ${worst.map((w) => w.toFixed(0)).join(' ')}`)
  }
  latencies.sort((a, b) => a - b)
  return { p99Ms: latencies[Math.floor(0.99 * (latencies.length - 1))]!, cpuPct }
}

/** One stalled measurement: sessions resume their backlogs (isolation-sessions.ts), two never read. */
export async function stalledRound(
  url: string,
  port: number,
  pid: number,
  tag: string,
  neverRead = NEVER_READ
): Promise<Measured> {
  await prepareBacklogs(url, tag)
  const script = fileURLToPath(new URL('./isolation-sessions.ts', import.meta.url))
  const args = [url, String(port), tag, String(SESSIONS), String(neverRead)]
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve())
      child.once('exit', (code) => reject(new Error(`stalled sessions exited ${code}`)))
    })
    // BENCH_ISO_PROFILE: our gateway profiles this stream (isolation-gateway.ts).
    const profile = process.env.BENCH_ISO_PROFILE && tag.startsWith('ours') && neverRead > 0
    if (profile) process.kill(pid, 'SIGUSR2')
    try {
      return await measureP99(url, pid, tag)
    } finally {
      if (profile) process.kill(pid, 'SIGUSR2')
    }
  } finally {
    child.kill('SIGTERM')
    await exited
    // Clean the sessions up, so the next round starts from the same state.
    for (let i = 0; i < SESSIONS; i++)
      (await connect(url, { clientId: `${tag}-s${i}`, clean: true })).end(true)
  }
}

async function runBroker(url: string, port: number, pid: number, name: string): Promise<Figures> {
  const quiet: Measured[] = []
  const loaded: Measured[] = []
  const stalled: Measured[] = []
  const ratios: number[] = []
  const stallRatios: number[] = []
  // One round unrecorded first: a fresh process runs its first backlog before the JIT warmed up.
  await measureP99(url, pid, `${name}-warm-q`)
  await stalledRound(url, port, pid, `${name}-warm`)
  for (let r = 0; r < ROUNDS; r++) {
    await sleep(SETTLE_MS)
    const q = await measureP99(url, pid, `${name}-q${r}`)
    await sleep(SETTLE_MS)
    // The same sessions and backlogs, all reading: the load without the stall.
    const l = await stalledRound(url, port, pid, `${name}-l${r}`, 0)
    await sleep(SETTLE_MS)
    const s = await stalledRound(url, port, pid, `${name}-r${r}`)
    quiet.push(q)
    loaded.push(l)
    stalled.push(s)
    ratios.push(s.p99Ms / Math.max(q.p99Ms, 0.01))
    stallRatios.push(s.p99Ms / Math.max(l.p99Ms, 0.01))
    console.error(
      `  ${name} round ${r + 1}: quiet p99 ${round(q.p99Ms)} ms (CPU ${round(q.cpuPct, 0)} %), ` +
        `all reading ${round(l.p99Ms)} ms (CPU ${round(l.cpuPct, 0)} %), ` +
        `stalled ${round(s.p99Ms)} ms (CPU ${round(s.cpuPct, 0)} %)`
    )
  }
  const p99 = (ms: Measured[]) => round(median(ms.map((m) => m.p99Ms)))
  const cpu = (ms: Measured[]) => round(median(ms.map((m) => m.cpuPct)), 0)
  return {
    quietP99Ms: p99(quiet),
    stalledP99Ms: p99(stalled),
    ratio: round(median(ratios)),
    loadedP99Ms: p99(loaded),
    stallRatio: round(median(stallRatios)),
    quietCpuPct: cpu(quiet),
    loadedCpuPct: cpu(loaded),
    stalledCpuPct: cpu(stalled),
  }
}

/** Our gateway in its own process (isolation-gateway.ts), queueing at most `maxQueued` per session. */
export async function startOurs(
  maxQueued: number | undefined = MAX_QUEUED
): Promise<{ port: number; child: ChildProcess }> {
  // Run from a bundle, as `uns-bridge start` runs the code (bundled.ts).
  const entry = await bundled('./isolation-gateway.ts')
  // BENCH_ISO_NODE_ARGS: extra node flags for our gateway's process (e.g. --cpu-prof).
  const extra = (process.env.BENCH_ISO_NODE_ARGS ?? '').split(' ').filter(Boolean)
  const child = spawn(process.execPath, [...extra, ...entry.nodeArgs, entry.path], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: {
      ...process.env,
      ...(maxQueued === undefined ? {} : { BENCH_ISO_MAX_QUEUED: String(maxQueued) }),
    },
  })
  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString()
      const line = out.split('\n')[0]
      if (out.includes('\n')) resolve((JSON.parse(line!) as { port: number }).port)
    })
    child.once('exit', (code) => reject(new Error(`gateway exited ${code}`)))
  })
  return { port, child }
}

export async function runIsolationBench(): Promise<unknown> {
  console.error(
    `isolation: ${RATE} msg/s × ${SECONDS} s to a healthy subscriber; stalled = ${SESSIONS} sessions resuming ${BACKLOG} × 1 KiB, ${NEVER_READ} never reading; at most ${MAX_QUEUED} queued per session on both brokers; ${ROUNDS} rounds`
  )
  const ours = await startOurs()
  let oursFigures: Figures
  try {
    oursFigures = await runBroker(
      `mqtt://127.0.0.1:${ours.port}`,
      ours.port,
      ours.child.pid!,
      'ours'
    )
  } finally {
    ours.child.kill('SIGTERM')
  }
  const mosq = await startMosquitto({
    config: `max_queued_messages ${MAX_QUEUED}\nset_tcp_nodelay true`,
  })
  let mosqFigures: Figures
  try {
    mosqFigures = await runBroker(mosq.url, mosq.port, mosq.pid, 'mosquitto')
  } finally {
    await mosq.stop()
  }
  const line = (f: Figures) =>
    `quiet p99 ${f.quietP99Ms} ms, all reading ${f.loadedP99Ms} ms, stalled ${f.stalledP99Ms} ms; ` +
    `stalled/quiet ${f.ratio}, stalled/all reading ${f.stallRatio}; ` +
    `CPU ${f.quietCpuPct} / ${f.loadedCpuPct} / ${f.stalledCpuPct} % of a core`
  console.error(`ours:      ${line(oursFigures)} (target: ratio ≤ 1.5)`)
  console.error(`mosquitto: ${line(mosqFigures)}`)
  const result = { bench: 'isolation', ours: oursFigures, mosquitto: mosqFigures }
  console.log(JSON.stringify(result))
  return result
}
