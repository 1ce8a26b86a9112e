/**
 * Gateway throughput and latency: 1, 2 and 3 gateways on one NATS (publisher i on gateway i,
 * its subscriber on gateway i+1, so with ≥2 gateways every message crosses the bus), QoS 0 and 1,
 * 64-byte payloads, against a plain aedes and a Mosquitto measured the same way in the same run.
 * Everything but Mosquitto and NATS runs in this one process. Ends with one JSON line.
 *
 * A run of 20k messages takes well under a second, so a busy machine moves single figures by 2×.
 * Each gateway run is therefore paired with a plain-aedes run right after it, every pair is
 * repeated (BENCH_REPEATS, default 5) after one warm-up, and the figures are medians: msgs/s per
 * setup, and the ratio to aedes as the median of the per-pair ratios.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, connect as netConnect, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Aedes } from 'aedes'
import mqtt, { type MqttClient } from 'mqtt'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import type { Bus } from '../../services/common/bus/bus.ts'
import { silentLogger } from '../../services/common/log.ts'
import { createStoreClient } from '../../services/contracts/store-client.ts'
import { createGateway, type Gateway } from '../../services/gateway/index.ts'
import { freePort } from '../../deploy/free-port.ts'
import { destroyBucketsWithPrefix } from '../helpers/nats.ts'
import { runSingleGateway } from './gateway-single.ts'

const MESSAGES = 20_000 // per run, split across the publishers
const PAYLOAD_BYTES = 64
const WINDOW = 500 // messages in flight per publisher: keeps latency a property of the broker
const REPEATS = Number(process.env.BENCH_REPEATS ?? 5)
const MOSQUITTO = process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto'
const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222'

interface RunResult {
  gateways: number
  qos: 0 | 1
  msgsPerSec: number
  p50Ms: number
  p99Ms: number
}

function connect(url: string): Promise<MqttClient> {
  const c = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, clean: true })
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c))
    c.once('error', reject)
  })
}

const quantile = (sorted: number[], q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0
const round = (n: number, d = 2): number => Math.round(n * 10 ** d) / 10 ** d

/** Publisher i on urls[i], its subscriber on urls[(i+1) % n]; returns delivered msgs/s and latency. */
async function measure(
  urls: string[],
  qos: 0 | 1,
  tag: string
): Promise<Omit<RunResult, 'gateways'>> {
  const n = urls.length
  const quota = Math.floor(MESSAGES / n)
  const latencies: number[] = []
  const pubs = await Promise.all(urls.map(connect))
  const subs = await Promise.all(urls.map((_, i) => connect(urls[(i + 1) % n]!)))
  const received = new Array<number>(n).fill(0)
  const wake: Array<(() => void) | null> = new Array(n).fill(null)
  let total = 0
  let finish!: () => void
  const finished = new Promise<void>((r) => (finish = r))
  await Promise.all(
    subs.map(async (s, i) => {
      s.on('message', (_t, payload) => {
        latencies.push(performance.now() - payload.readDoubleBE(0))
        received[i]!++
        wake[i]?.()
        if (++total === quota * n) finish()
      })
      await s.subscribeAsync(`bench/${tag}/${i}`, { qos })
    })
  )
  const started = performance.now()
  await Promise.all(
    pubs.map(async (p, i) => {
      const payload = Buffer.alloc(PAYLOAD_BYTES)
      for (let sent = 0; sent < quota; sent++) {
        while (sent - received[i]! >= WINDOW) await new Promise<void>((r) => (wake[i] = r))
        wake[i] = null
        payload.writeDoubleBE(performance.now(), 0)
        p.publish(`bench/${tag}/${i}`, Buffer.from(payload), { qos })
      }
    })
  )
  await finished
  const elapsed = (performance.now() - started) / 1_000
  for (const c of [...pubs, ...subs]) c.end(true)
  latencies.sort((a, b) => a - b)
  return {
    qos,
    msgsPerSec: Math.round((quota * n) / elapsed),
    p50Ms: round(quantile(latencies, 0.5)),
    p99Ms: round(quantile(latencies, 0.99)),
  }
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = netConnect(port, '127.0.0.1')
      s.once('connect', () => (s.destroy(), r(true)))
      s.once('error', () => r(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`nothing listens on ${port}`)
}

async function cluster(size: number, prefix: string) {
  const buses: Bus[] = []
  const gateways: Gateway[] = []
  for (let i = 0; i < size; i++) {
    const bus = await connectNatsBus({ servers: NATS_URL, prefix })
    buses.push(bus)
    gateways.push(
      await createGateway({
        bus,
        store: createStoreClient({ bus }),
        log: silentLogger(),
        host: '127.0.0.1',
        mqttPort: 0,
        gatewayId: `bench-${i}`,
      })
    )
  }
  return {
    urls: gateways.map((g) => `mqtt://127.0.0.1:${g.ports.mqtt}`),
    async close() {
      await Promise.all(gateways.map((g) => g.close()))
      await Promise.all(buses.map((b) => b.close()))
      // Every bucket the gateways opened (retained, sessions, queues, wills, bridge links).
      await destroyBucketsWithPrefix(prefix, NATS_URL)
    },
  }
}

type Measured = Omit<RunResult, 'gateways'>

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** One figure per setup: the median run by msgs/s (its latencies come with it). */
function medianRun(rs: Measured[]): Measured {
  const sorted = [...rs].sort((a, b) => a.msgsPerSec - b.msgsPerSec)
  return sorted[(sorted.length - 1) >> 1]!
}

async function startAedes() {
  const aedes = await Aedes.createBroker()
  const server: Server = createServer(aedes.handle)
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  return {
    url: `mqtt://127.0.0.1:${(server.address() as { port: number }).port}`,
    async close() {
      await new Promise<void>((r) => aedes.close(() => r()))
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}

export async function runGatewayBench(): Promise<object> {
  const runs: RunResult[] = []
  const aedesRuns: Record<0 | 1, Measured[]> = { 0: [], 1: [] }
  const pairRatios: Record<number, Record<0 | 1, number[]>> = {}
  const plain = await startAedes()
  try {
    for (const size of [1, 2, 3]) {
      const c = await cluster(size, `bench_gw_${process.pid}_${size}`)
      pairRatios[size] = { 0: [], 1: [] }
      try {
        await measure(c.urls, 0, `g${size}w`) // warm-up: JIT, NATS subscriptions, KV caches
        await measure([plain.url], 0, `a${size}w`)
        const mine: Record<0 | 1, Measured[]> = { 0: [], 1: [] }
        for (let rep = 0; rep < REPEATS; rep++) {
          for (const qos of [0, 1] as const) {
            const g = await measure(c.urls, qos, `g${size}q${qos}r${rep}`)
            const a = await measure([plain.url], qos, `a${size}q${qos}r${rep}`)
            mine[qos].push(g)
            aedesRuns[qos].push(a)
            pairRatios[size]![qos].push(g.msgsPerSec / a.msgsPerSec)
          }
        }
        for (const qos of [0, 1] as const) {
          const r = { gateways: size, ...medianRun(mine[qos]) }
          console.error(
            `gateways=${size} qos=${qos}: ${r.msgsPerSec} msgs/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms` +
              ` (×${round(median(pairRatios[size]![qos]))} of aedes in paired runs)`
          )
          runs.push(r)
        }
      } finally {
        await c.close()
      }
    }
  } finally {
    await plain.close()
  }

  const anchors: Record<string, Record<string, Measured>> = {
    aedes: { qos0: medianRun(aedesRuns[0]), qos1: medianRun(aedesRuns[1]) },
    mosquitto: {},
  }
  const dir = await mkdtemp(join(tmpdir(), 'ub-mosq-'))
  const port = await freePort()
  await writeFile(join(dir, 'm.conf'), `listener ${port} 127.0.0.1\nallow_anonymous true\n`)
  const mosq = spawn(MOSQUITTO, ['-c', join(dir, 'm.conf')], { stdio: 'ignore' })
  try {
    await waitForPort(port)
    const url = `mqtt://127.0.0.1:${port}`
    await measure([url], 0, 'mw')
    for (const qos of [0, 1] as const) {
      const rs: Measured[] = []
      for (let rep = 0; rep < REPEATS; rep++) rs.push(await measure([url], qos, `m${qos}r${rep}`))
      anchors.mosquitto![`qos${qos}`] = medianRun(rs)
    }
  } finally {
    mosq.kill('SIGTERM')
    await rm(dir, { recursive: true, force: true })
  }
  for (const [name, byQos] of Object.entries(anchors)) {
    for (const [q, r] of Object.entries(byQos)) {
      console.error(`${name} ${q}: ${r.msgsPerSec} msgs/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms`)
    }
  }

  // Our gateway and Mosquitto each in a process of their own (gateway-single.ts).
  const single = await runSingleGateway()

  const two = (qos: 0 | 1) => runs.find((r) => r.gateways === 2 && r.qos === qos)!.msgsPerSec
  const result = {
    bench: 'gateway',
    messages: MESSAGES,
    payloadBytes: PAYLOAD_BYTES,
    window: WINDOW,
    repeats: REPEATS,
    runs,
    anchors,
    // Medians of the paired ratios: each gateway run against the aedes run right after it.
    ratioTwoGatewaysToAedes: round(median(pairRatios[2]![0])),
    ratioTwoGatewaysToAedesQos1: round(median(pairRatios[2]![1])),
    ratioOneGatewayToAedes: round(median(pairRatios[1]![0])),
    ratioTwoGatewaysToMosquitto: round(two(0) / anchors.mosquitto!.qos0!.msgsPerSec),
    single,
  }
  console.log(JSON.stringify(result))
  return result
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runGatewayBench()
  process.exit(0)
}
