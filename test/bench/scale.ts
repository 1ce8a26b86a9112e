/**
 * `npm run bench -- scale [--quick] [--with-chaos]`: how the fabric scales out on one machine.
 *
 * For n = 1, 2, 3 (gateway processes only ever added):
 * - gateways: n gateway processes on one NATS (a private nats-server), 6 pub/sub pairs, pair j
 *   publishing on gateway j mod n and subscribed on gateway (j+1) mod n, so with n ≥ 2 every
 *   message crosses the bus; QoS 1 and QoS 0, 64 B. Each round also measures, right after, a
 *   single gateway in this process on the same NATS and a Mosquitto with the same pairs.
 * - bridges: 100 plain-MQTT upstreams to one cloud Mosquitto (upstream k: `plant<k>` →
 *   `acme/plant<k>`), Active on n supervisor processes each listing the n gateways; 6 QoS 1
 *   publishers spread over the gateways write into the 100 namespaces, a counter on the cloud
 *   takes the distinct messages forwarded. Each round also measures, the same way, Mosquitto's
 *   own bridge (a Mosquitto with 100 `connection` blocks, one per namespace, to a cloud
 *   Mosquitto) and the embedded default (every service in one process, the same 100 upstreams).
 *   The upstreams are activated only once the n supervisors run, so the leases spread over them.
 *
 * Every process (gateways, supervisors, store, handshake API, NATS, Mosquittos, load) shares the
 * machine's cores; the core count is printed and kept in the JSON. Rates are medians over the
 * rounds, ratios medians of the per-round ratios. `--with-chaos` then runs the chaos harness's
 * faults for a few seconds each on its own fabric (test/chaos) and reports how long forwarding
 * stalled after each. Ends with one JSON line.
 */
import { availableParallelism, loadavg } from 'node:os'
import { performance } from 'node:perf_hooks'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import { silentLogger } from '../../services/common/log.ts'
import { createStoreClient } from '../../services/contracts/store-client.ts'
import { createGateway } from '../../services/gateway/index.ts'
import { startMosquitto } from '../helpers/mosquitto.ts'
import { MAX_GATEWAYS, startScaleFabric, type ScaleFabric } from './scale-fabric.ts'
import {
  measureBridges,
  measurePairs,
  startCounter,
  type BridgeFigures,
  type CloudCounter,
  type PairFigures,
} from './scale-load.ts'
import { runRecovery, type Recovery } from './scale-recovery.ts'
import { createUpstreams, sourceOf, startEmbedded, switchAll, targetOf } from './scale-upstreams.ts'

const QUICK = process.argv.includes('--quick')
const WITH_CHAOS = process.argv.includes('--with-chaos')
const UPSTREAMS = 100
const PAIRS = 6 // divisible by 1, 2 and 3: every gateway carries the same share
const PUBLISHERS = 6
const PAIR_WINDOW = 200 // messages a pair's publisher may be ahead of its subscriber
// Unacknowledged QoS 1 messages per bridge-phase publisher: as bench/bridge.ts, wide enough that
// the PUBACK's wait for the queue write does not set the rate.
const PUBLISH_WINDOW = Number(process.env.BENCH_SCALE_WINDOW ?? 1_000)
const GATEWAY_MESSAGES = QUICK ? 10_000 : 20_000 // per run
const BRIDGE_MESSAGES = QUICK ? 10_000 : 20_000
const ROUNDS = QUICK ? 1 : 3
// As bench/bridge.ts: queues deep enough that no QoS 1 message is dropped, Nagle off.
export const BROKER_CONFIG = [
  'max_queued_messages 1000000',
  'max_queued_bytes 0',
  'set_tcp_nodelay true',
].join('\n')

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}
const round = (n: number, d = 2): number => Math.round(n * 10 ** d) / 10 ** d
const load1 = () => round(loadavg()[0]!)
/** The run whose rate is the median (its latencies come with it). */
const medianRun = <T extends { msgsPerSec: number }>(rs: T[]): T =>
  [...rs].sort((a, b) => a.msgsPerSec - b.msgsPerSec)[(rs.length - 1) >> 1]!

interface GatewayRow {
  gateways: number
  qos: 0 | 1
  ours: PairFigures & { rounds: number[] }
  single: PairFigures
  mosquitto: PairFigures
  ratioToSingle: number
  ratioToMosquitto: number
}

interface BridgeRow {
  supervisors: number
  gateways: number
  /** Links per supervisor process, as the leases fell. */
  spread: number[]
  /** False when links were still moving between supervisors as measuring began. */
  settled: boolean
  ours: BridgeFigures & { rounds: number[] }
  /** The embedded default: every service in one process, the same 100 upstreams. */
  embedded: BridgeFigures & { rounds: number[] }
  mosquitto: BridgeFigures & { rounds: number[] }
  ratioToEmbedded: number
  ratioToMosquitto: number
  load: [number, number]
}

interface Anchors {
  single: string
  mosquitto: string
}

/** One gateway in this process on the fabric's NATS (its own prefix), and a plain Mosquitto. */
async function startAnchors(natsUrl: string) {
  const bus = await connectNatsBus({ servers: natsUrl, prefix: 'scale_single' })
  const gw = await createGateway({
    bus,
    store: createStoreClient({ bus }),
    log: silentLogger(),
    host: '127.0.0.1',
    mqttPort: 0,
    gatewayId: 'scale-single',
  })
  const mosq = await startMosquitto({ config: BROKER_CONFIG })
  return {
    urls: { single: `mqtt://127.0.0.1:${gw.ports.mqtt}`, mosquitto: mosq.url } as Anchors,
    async close() {
      await gw.close()
      await bus.close()
      await mosq.stop()
    },
  }
}

async function gatewayRows(n: number, urls: string[], anchors: Anchors): Promise<GatewayRow[]> {
  const spread = Array.from({ length: PAIRS }, (_, j) => ({
    pub: urls[j % n]!,
    sub: urls[(j + 1) % n]!,
  }))
  const on = (url: string) => Array.from({ length: PAIRS }, () => ({ pub: url, sub: url }))
  const setups = [spread, on(anchors.single), on(anchors.mosquitto)]
  const opts = (qos: 0 | 1, tag: string, count = GATEWAY_MESSAGES) => ({
    qos,
    count,
    window: PAIR_WINDOW,
    tag,
  })
  // Warm-up: JIT, connections, NATS interest; not measured.
  for (const [i, s] of setups.entries()) await measurePairs(s, opts(1, `w${n}s${i}`, 3_000))
  const rows: GatewayRow[] = []
  for (const qos of [1, 0] as const) {
    const runs: PairFigures[][] = [[], [], []]
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 ? [2, 1, 0] : [0, 1, 2] // all three see the same background load
      for (const i of order)
        runs[i]!.push(await measurePairs(setups[i]!, opts(qos, `g${n}q${qos}r${r}s${i}`)))
    }
    const [ours, single, mosq] = runs as [PairFigures[], PairFigures[], PairFigures[]]
    const row: GatewayRow = {
      gateways: n,
      qos,
      ours: { ...medianRun(ours), rounds: ours.map((x) => x.msgsPerSec) },
      single: medianRun(single),
      mosquitto: medianRun(mosq),
      ratioToSingle: round(median(ours.map((x, r) => x.msgsPerSec / single[r]!.msgsPerSec))),
      ratioToMosquitto: round(median(ours.map((x, r) => x.msgsPerSec / mosq[r]!.msgsPerSec))),
    }
    const fmt = (f: PairFigures) =>
      `${f.msgsPerSec} msg/s (p50 ${f.p50Ms} ms, p99 ${f.p99Ms} ms, ${f.received}/${f.sent})`
    console.error(
      `gateways=${n} QoS ${qos}: ours ${fmt(row.ours)} [${row.ours.rounds.join(', ')}]\n` +
        `  single in-process gateway ${fmt(row.single)}; mosquitto ${fmt(row.mosquitto)}\n` +
        `  ratio to single ${row.ratioToSingle}, to mosquitto ${row.ratioToMosquitto}`
    )
    rows.push(row)
  }
  return rows
}

/** One way of bridging the 100 namespaces: where the publishers connect, who counts upstream. */
interface BridgePath {
  urls: string[]
  counter: CloudCounter
}

type BridgePaths = Record<'ours' | 'embedded' | 'mosquitto', BridgePath>

/** Every path measured ROUNDS times, the paths alternating within a round (reversed every other). */
async function measureBridgePaths(paths: BridgePaths, n: number) {
  const names = Object.keys(paths) as Array<keyof BridgePaths>
  const opts = (tag: string, count = BRIDGE_MESSAGES) => ({
    namespaces: UPSTREAMS,
    publishers: PUBLISHERS,
    window: PUBLISH_WINDOW,
    source: sourceOf,
    count,
    tag,
  })
  const run = (name: keyof BridgePaths, tag: string, count?: number) =>
    measureBridges(paths[name].urls, paths[name].counter, opts(tag, count))
  for (const name of names) await run(name, `${name}${n}w`, 3_000) // warm-up
  const runs = Object.fromEntries(names.map((name) => [name, [] as BridgeFigures[]]))
  for (let r = 0; r < ROUNDS; r++) {
    for (const name of r % 2 ? [...names].reverse() : names) {
      runs[name]!.push(await run(name, `${name}${n}r${r}`))
    }
  }
  const figures = (name: keyof BridgePaths) => ({
    ...medianRun(runs[name]!),
    rounds: runs[name]!.map((x) => x.msgsPerSec),
  })
  const ratio = (to: keyof BridgePaths) =>
    round(median(runs.ours!.map((x, r) => x.msgsPerSec / runs[to]![r]!.msgsPerSec)))
  return {
    ours: figures('ours'),
    embedded: figures('embedded'),
    mosquitto: figures('mosquitto'),
    ratioToEmbedded: ratio('embedded'),
    ratioToMosquitto: ratio('mosquitto'),
  }
}

/** n supervisors (and n gateways) with the 100 upstreams Active on them, measured beside the anchors. */
async function bridgeRow(
  fabric: ScaleFabric,
  n: number,
  ids: string[],
  anchors: Omit<BridgePaths, 'ours'> & { oursCounter: CloudCounter }
): Promise<BridgeRow> {
  const supervisors = await fabric.startSupervisors(n)
  try {
    // Activated only now, with every supervisor running: the leases spread over all of them.
    await switchAll(fabric.api, ids, 'activate')
    const { spread, settled } = await fabric.forwardingSpread(ids, 120_000)
    const urls = await fabric.useGateways(n)
    const before = load1()
    const measured = await measureBridgePaths(
      {
        ours: { urls, counter: anchors.oursCounter },
        embedded: anchors.embedded,
        mosquitto: anchors.mosquitto,
      },
      n
    )
    const row: BridgeRow = {
      supervisors: n,
      gateways: n,
      spread: supervisors.map((s) => spread[s.label] ?? 0),
      settled,
      ...measured,
      load: [before, load1()],
    }
    const fmt = (f: BridgeFigures & { rounds: number[] }) =>
      `${f.msgsPerSec} msg/s [${f.rounds.join(', ')}] (${f.received}/${f.sent}, ${f.duplicates} dup)`
    console.error(
      `bridges: ${UPSTREAMS} upstreams on ${n} supervisor(s) [${row.spread.join(' / ')}` +
        `${settled ? '' : ', still moving'}], ${n} gateway(s) (load ${row.load.join(' → ')}):\n` +
        `  ours ${fmt(row.ours)}\n  embedded (one process) ${fmt(row.embedded)}\n` +
        `  mosquitto's bridge ${fmt(row.mosquitto)}\n` +
        `  ratio to embedded ${row.ratioToEmbedded}, to mosquitto ${row.ratioToMosquitto}`
    )
    return row
  } finally {
    await switchAll(fabric.api, ids, 'deactivate')
    await fabric.allStopped(ids, 60_000)
    await fabric.stopSupervisors()
  }
}

/** Mosquitto's own bridge: one `connection` per namespace, as ours has one link per upstream. */
export function mosquittoBridgeConfig(cloudPort: number, count = UPSTREAMS): string {
  const blocks = Array.from({ length: count }, (_, k) =>
    [
      `connection anchor${k}`,
      `address 127.0.0.1:${cloudPort}`,
      `topic # out 1 ${sourceOf(k)}/ ${targetOf(k)}/`,
      'try_private true',
      'cleansession false',
      'bridge_protocol_version mqttv311',
      'notifications false',
    ].join('\n')
  )
  return [BROKER_CONFIG, ...blocks].join('\n')
}

/**
 * The bridge phase's anchors, each with its own cloud Mosquitto and counter: Mosquitto's own
 * bridge, and the embedded default (every service in one process) with the same 100 upstreams.
 */
async function startBridgeAnchors() {
  const closers: Array<() => Promise<unknown>> = []
  const close = async () => {
    for (const c of closers.splice(0).reverse()) await c().catch(() => {})
  }
  const cloud = async () => {
    const m = await startMosquitto({ config: BROKER_CONFIG })
    closers.push(() => m.stop())
    const counter = await startCounter(m.url, 'acme/#')
    closers.push(() => counter.close())
    return { port: m.port, counter }
  }
  try {
    const mosqCloud = await cloud()
    const down = await startMosquitto({ config: mosquittoBridgeConfig(mosqCloud.port) })
    closers.push(() => down.stop())
    const embeddedCloud = await cloud()
    const embedded = await startEmbedded(embeddedCloud.port, UPSTREAMS)
    closers.push(() => embedded.close())
    const paths: Omit<BridgePaths, 'ours'> = {
      embedded: { urls: [embedded.url], counter: embeddedCloud.counter },
      mosquitto: { urls: [down.url], counter: mosqCloud.counter },
    }
    return { paths, close }
  } catch (err) {
    await close()
    throw err
  }
}

export async function runScaleBench(): Promise<object> {
  const startedAt = performance.now()
  const cores = availableParallelism()
  console.error(
    `scale: ${cores} cores, load average ${loadavg()
      .map((l) => round(l))
      .join(' ')}` +
      `${QUICK ? ', quick' : ''}; ${ROUNDS} round(s), ${GATEWAY_MESSAGES} / ${BRIDGE_MESSAGES} messages a run`
  )
  const gateways: GatewayRow[] = []
  const bridges: BridgeRow[] = []
  const fabric = await startScaleFabric(BROKER_CONFIG)
  const closers: Array<() => Promise<unknown>> = [() => fabric.close()]
  try {
    const anchors = await startAnchors(fabric.nats.url)
    closers.push(() => anchors.close())
    const ids = await createUpstreams(fabric.api, fabric.cloud.port, UPSTREAMS)
    const bridgeAnchors = await startBridgeAnchors()
    closers.push(() => bridgeAnchors.close())
    const oursCounter = await startCounter(fabric.cloud.url, 'acme/#')
    closers.push(() => oursCounter.close())
    for (let n = 1; n <= MAX_GATEWAYS; n++) {
      const urls = await fabric.useGateways(n)
      gateways.push(...(await gatewayRows(n, urls, anchors.urls)))
      bridges.push(await bridgeRow(fabric, n, ids, { ...bridgeAnchors.paths, oursCounter }))
    }
  } finally {
    for (const c of closers.reverse()) await c().catch(() => {})
  }
  // Rate at n processes over the rate at one, each figure a median of its own rounds.
  const scaleOut = (rates: number[]) => rates.map((r) => round(r / rates[0]!))
  const scaling = {
    gatewaysQos1: scaleOut(gateways.filter((g) => g.qos === 1).map((g) => g.ours.msgsPerSec)),
    gatewaysQos0: scaleOut(gateways.filter((g) => g.qos === 0).map((g) => g.ours.msgsPerSec)),
    bridges: scaleOut(bridges.map((b) => b.ours.msgsPerSec)),
  }
  console.error(
    `1 / 2 / 3 processes, rate over the rate at 1: gateways QoS 1 ${scaling.gatewaysQos1.join(' / ')}, ` +
      `QoS 0 ${scaling.gatewaysQos0.join(' / ')}; bridges ${scaling.bridges.join(' / ')}`
  )
  const recovery: Recovery[] | null = WITH_CHAOS ? await runRecovery() : null
  const result = {
    bench: 'scale',
    cores,
    quick: QUICK,
    rounds: ROUNDS,
    payloadBytes: 64,
    gatewayPhase: { messages: GATEWAY_MESSAGES, pairs: PAIRS, window: PAIR_WINDOW, runs: gateways },
    bridgePhase: {
      upstreams: UPSTREAMS,
      messages: BRIDGE_MESSAGES,
      publishers: PUBLISHERS,
      window: PUBLISH_WINDOW,
      runs: bridges,
    },
    scaling,
    recovery,
    loadAverage: loadavg().map((l) => round(l)),
    seconds: Math.round((performance.now() - startedAt) / 1_000),
  }
  console.log(JSON.stringify(result))
  return result
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runScaleBench()
  process.exit(0)
}
