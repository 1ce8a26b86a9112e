/**
 * `npm run bench -- supervisor`: how far one supervisor goes. N plain-MQTT upstreams
 * (BENCH_SUP_UPSTREAMS, default 1,000; scale-upstreams.ts: upstream k mirrors `plant<k>` to
 * `acme/plant<k>`) Active on one embedded instance (every service in one child process; its
 * supervisor dials the gateway in process), all to one cloud Mosquitto this bench starts.
 *
 * - idle: the instance's CPU (/proc/<pid>/stat over 10 s), then its RSS (/proc/<pid>/status) and
 *   V8 heap (its /metrics), each after a full collection, with 0, N/4, N/2 and N links Forwarding
 *   and nothing published; per link = (figure at N − at 0) / N. The instance runs with an
 *   inspector (to collect garbage on demand). Anchor: a Mosquitto bridging N idle `connection`s
 *   beside a bare Mosquitto.
 * - restart: SIGTERM (the supervisor hands every lease back) and a new process on the same data
 *   folder: the time from its `ready` line until every link is Forwarding under it (GET
 *   /api/v1/links), and until a probe published to each namespace right after `ready` (queued in
 *   the link's session meanwhile) reached the cloud from all N.
 * - busy: 6 QoS 1 publishers (64 B) on the gateway write into the first 100 namespaces while the
 *   other N − 100 links idle; a counter on the cloud. Anchor: Mosquitto's own bridge with 100
 *   connections (scale.ts), and with N of which the same 100 busy. Rounds alternate the paths.
 * Ends with one JSON line (`undelivered`: not received when a run ended, unsent ones included).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { retry, sleep, until } from '../chaos/wait.ts'
import { apiRequest, startInstance, type Instance } from '../helpers/instance.ts'
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.ts'
import { BROKER_CONFIG, mosquittoBridgeConfig } from './scale.ts'
import {
  connect,
  measureBridges,
  startCounter,
  type BridgeFigures,
  type CloudCounter,
} from './scale-load.ts'
import {
  collectGarbage,
  connectedOn,
  cpuPercent,
  heapBytes,
  logCount,
  logTime,
  INSPECTOR_ENV,
  probeWatch,
} from './supervisor-scale-probes.ts'
import { rssBytes } from './proc.ts'
import { createUpstreams, sourceOf, switchAll, targetOf, type Api } from './scale-upstreams.ts'

const UPSTREAMS = Number(process.env.BENCH_SUP_UPSTREAMS ?? 1_000)
const BUSY = Math.min(100, UPSTREAMS)
const PUBLISHERS = 6
const PUBLISH_WINDOW = 1_000 // as scale.ts: unacknowledged QoS 1 messages per publisher
const BUSY_MESSAGES = 20_000 // per run
const ROUNDS = 5
const SETTLE_MS = 5_000 // after the last link came up, before an idle figure is taken
const MEMORY_SAMPLES = 3 // a second apart, each after a full collection
const POLL_MS = 250 // GET /api/v1/links while waiting for links
const LINKS_TIMEOUT_MS = 300_000
const CLOUD_CONFIG = [BROKER_CONFIG, 'max_connections -1', 'sys_interval 1'].join('\n')
const KiB = 1024
const MiB = 1024 * 1024

const round = (n: number, d = 2): number => Math.round(n * 10 ** d) / 10 ** d
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

const apiOf =
  (inst: Instance): Api =>
  (method, path, body) =>
    apiRequest(inst, method, path, body)

/** ms until every one of `ids` is Forwarding under this process (a supervisor id carries its pid). */
async function allForwarding(inst: Instance, ids: string[]): Promise<number> {
  const t0 = performance.now()
  const mine = `-${inst.process.child.pid}-`
  await retry(
    async () => {
      const { status, body } = await apiOf(inst)('GET', '/api/v1/links')
      if (status !== 200) throw new Error(`GET /api/v1/links: ${status}`)
      const waiting = ids.filter((id) => {
        const link = body.items[id]
        return link?.state !== 'Forwarding' || !String(link.owner).includes(mine)
      })
      if (waiting.length) throw new Error(`${waiting.length} of ${ids.length} not Forwarding here`)
    },
    { timeoutMs: LINKS_TIMEOUT_MS, everyMs: POLL_MS, what: `${ids.length} links to forward` }
  )
  return Math.round(performance.now() - t0)
}

interface IdleStep {
  links: number
  /** ms from the first activation of this step until its links were all Forwarding. */
  upMs: number
  rssMiB: number
  heapMiB: number
  cpuPercent: number
}

/** CPU of the instance as it idles now, then its RSS (median) and heap after a full collection. */
async function idleFigures(inst: Instance): Promise<Omit<IdleStep, 'links' | 'upMs'>> {
  const pid = inst.process.child.pid!
  await sleep(SETTLE_MS)
  const cpu = await cpuPercent(pid) // before the collections and /metrics reads, which cost CPU
  const rss: number[] = []
  const heap: number[] = []
  for (let i = 0; i < MEMORY_SAMPLES; i++) {
    if (i) await sleep(1_000)
    await collectGarbage(inst)
    rss.push(rssBytes(pid))
    heap.push(await heapBytes(inst))
  }
  return {
    rssMiB: round(median(rss) / MiB),
    heapMiB: round(median(heap) / MiB),
    cpuPercent: cpu,
  }
}

/** Activate the upstreams in steps (0, N/4, N/2, N), taking the idle figures at each. */
async function idlePhase(inst: Instance, ids: string[]): Promise<IdleStep[]> {
  const marks = [...new Set([0, ids.length >> 2, ids.length >> 1, ids.length])]
  const steps: IdleStep[] = []
  let on = 0
  for (const links of marks) {
    const t0 = performance.now()
    await switchAll(apiOf(inst), ids.slice(on, links), 'activate')
    on = links
    if (links) await allForwarding(inst, ids.slice(0, links))
    const step = { links, upMs: Math.round(performance.now() - t0), ...(await idleFigures(inst)) }
    console.error(
      `  ${links} links idle: RSS ${step.rssMiB} MiB, heap ${step.heapMiB} MiB, ` +
        `CPU ${step.cpuPercent} %${links ? ` (up in ${step.upMs} ms)` : ''}`
    )
    steps.push(step)
  }
  return steps
}

interface Restart {
  /** SIGTERM until the process exited; spawn until the new one's `ready` line. */
  stopMs: number
  readyMs: number
  /**
   * From the gateway's start line (the supervisor starts right after it): until its first pass
   * had claimed and started every link ('supervisor started'); until every link was Forwarding
   * (link status, polled); until a probe published to every namespace just after `ready`
   * (queued in the link's session meanwhile) had reached the cloud.
   */
  firstPassMs: number
  reconcileMs: number
  probeMs: number
  /** Links started, and stopped for a lease our own fence gave up, until all were Forwarding. */
  linkStarts: number
  leasesLost: number
}

/** Stop the instance (SIGTERM) and start it again on the same data folder; the times it took. */
async function restartPhase(
  inst: Instance,
  ids: string[],
  cloudUrl: string
): Promise<{ inst: Instance; restart: Restart }> {
  const probes = await probeWatch(cloudUrl, 'probe', ids.length, LINKS_TIMEOUT_MS)
  try {
    let t = performance.now()
    await inst.stop()
    const stopMs = Math.round(performance.now() - t)
    t = performance.now()
    const next = await startInstance({
      dataDir: inst.dataDir,
      env: { ...INSPECTOR_ENV, UB_ADMIN_TOKEN: inst.adminToken },
    })
    const readyMs = Math.round(performance.now() - t)
    // Queued in each link's gateway session until its link is up again.
    const pub = await connect(next.mqttUrl!)
    await Promise.all(
      ids.map((_, k) => pub.publishAsync(`${sourceOf(k)}/probe`, Buffer.alloc(64), { qos: 1 }))
    )
    await pub.endAsync()
    await allForwarding(next, ids)
    const forwardingAt = Date.now()
    const probedAt = await probes.all()
    const from = logTime(next, (l) => l.service === 'gateway')
    const firstPassMs = logTime(next, (l) => l.msg === 'supervisor started') - from
    return {
      inst: next,
      restart: {
        stopMs,
        readyMs,
        firstPassMs,
        reconcileMs: forwardingAt - from,
        probeMs: probedAt - from,
        linkStarts: logCount(next, (l) => l.msg === 'bridge owned'),
        leasesLost: logCount(next, (l) => l.lastError === 'lease lost' && l.state === 'Stopped'),
      },
    }
  } finally {
    await probes.close()
  }
}

/** Where the load goes in and who counts what comes out upstream. */
interface BusyPath {
  url: string
  counter: CloudCounter
}

/** Every path ROUNDS times (after a warm-up), alternating, reversed every other round. */
async function busyPhase(paths: Record<string, BusyPath>) {
  const names = Object.keys(paths)
  const run = (name: string, tag: string, count = BUSY_MESSAGES) =>
    measureBridges([paths[name]!.url], paths[name]!.counter, {
      namespaces: BUSY,
      source: sourceOf,
      publishers: PUBLISHERS,
      window: PUBLISH_WINDOW,
      count,
      tag,
    })
  for (const name of names) await run(name, `${name}w`, 3_000)
  const runs: Record<string, BridgeFigures[]> = Object.fromEntries(names.map((n) => [n, []]))
  for (let r = 0; r < ROUNDS; r++) {
    for (const name of r % 2 ? [...names].reverse() : names)
      runs[name]!.push(await run(name, `${name}r${r}`))
  }
  const rates = (name: string) => runs[name]!.map((x) => x.msgsPerSec)
  const ratio = (to: string) =>
    round(median(runs.ours!.map((x, r) => x.msgsPerSec / runs[to]![r]!.msgsPerSec)))
  const undelivered = (name: string) => runs[name]!.reduce((n, x) => n + x.sent - x.received, 0)
  for (const name of names)
    console.error(
      `  ${name}: ${median(rates(name))} msg/s [${rates(name).join(', ')}], ${undelivered(name)} undelivered`
    )
  return { names, rates, ratio, undelivered }
}

/** Mosquitto's bridge with N idle connections: RSS and CPU beside a bare Mosquitto's. */
async function mosquittoIdle(bridge: Mosquitto, bare: Mosquitto, anchorCloudUrl: string) {
  const clients = await connectedOn(anchorCloudUrl)
  await until(() => clients.now() >= UPSTREAMS, {
    ...{ timeoutMs: LINKS_TIMEOUT_MS, everyMs: POLL_MS, what: `${UPSTREAMS} Mosquitto bridges` },
  }).finally(() => clients.close())
  await sleep(SETTLE_MS)
  const pid = bridge.pid
  const cpu = await cpuPercent(pid)
  const rss = rssBytes(pid)
  const bareRss = rssBytes(bare.pid)
  return {
    rssMiB: round(rss / MiB),
    bareRssMiB: round(bareRss / MiB),
    rssPerLinkKiB: round((rss - bareRss) / UPSTREAMS / KiB),
    cpuPercent: cpu,
  }
}

/** What the run keeps open, closed in reverse order at the end (or on a failure). */
function closerList() {
  const closers: Array<() => Promise<unknown>> = []
  return {
    add: <T>(what: T, close: (w: T) => Promise<unknown>): T => {
      closers.push(() => close(what))
      return what
    },
    close: async () => {
      for (const c of closers.splice(0).reverse()) await c().catch(() => {})
    },
  }
}

export async function runSupervisorScaleBench(): Promise<unknown> {
  const startedAt = performance.now()
  console.error(
    `supervisor-scale: ${UPSTREAMS} upstreams on one embedded instance, ${availableParallelism()} cores, ` +
      `load ${loadavg()
        .map((l) => round(l))
        .join(' ')}`
  )
  const open = closerList()
  const dataDir = mkdtempSync(join(tmpdir(), 'ub-supscale-'))
  open.add(dataDir, async (d) => rmSync(d, { recursive: true, force: true }))
  try {
    const cloud = open.add(await startMosquitto({ config: CLOUD_CONFIG }), (m) => m.stop())
    let inst = await startInstance({ dataDir, env: INSPECTOR_ENV })
    const stopInst = open.add({ inst }, async (h) => h.inst.stop())
    let t = performance.now()
    const ids = await createUpstreams(apiOf(inst), cloud.port, UPSTREAMS)
    const createMs = Math.round(performance.now() - t)
    console.error(`created ${UPSTREAMS} upstreams in ${createMs} ms; idle, nothing published:`)
    const steps = await idlePhase(inst, ids)
    const restarted = await restartPhase(inst, ids, cloud.url)
    inst = stopInst.inst = restarted.inst
    const { restart } = restarted
    console.error(
      `restart (SIGTERM, same data folder): stopped in ${restart.stopMs} ms, ready in ${restart.readyMs} ms; ` +
        `from the supervisor's start: first pass ${restart.firstPassMs} ms, all ${UPSTREAMS} links ` +
        `Forwarding ${restart.reconcileMs} ms, a probe through each ${restart.probeMs} ms ` +
        `(${restart.linkStarts} link starts, ${restart.leasesLost} stopped for a lease lost)`
    )
    const anchorCloud = open.add(await startMosquitto({ config: CLOUD_CONFIG }), (m) => m.stop())
    const bare = open.add(await startMosquitto({ config: BROKER_CONFIG }), (m) => m.stop())
    const bridgeN = open.add(
      await startMosquitto({ config: mosquittoBridgeConfig(anchorCloud.port, UPSTREAMS) }),
      (m) => m.stop()
    )
    const mosquitto = await mosquittoIdle(bridgeN, bare, anchorCloud.url)
    console.error(
      `Mosquitto bridge, ${UPSTREAMS} idle connections: RSS ${mosquitto.rssMiB} MiB ` +
        `(bare ${mosquitto.bareRssMiB} MiB), CPU ${mosquitto.cpuPercent} %`
    )
    const bridge100 = open.add(
      await startMosquitto({ config: mosquittoBridgeConfig(anchorCloud.port, BUSY) }),
      (m) => m.stop()
    )
    const oursCounter = open.add(await startCounter(cloud.url, 'acme/#'), (c) => c.close())
    const anchorCounter = open.add(await startCounter(anchorCloud.url, 'acme/#'), (c) => c.close())
    console.error(`busy: ${BUSY} of the ${UPSTREAMS} links loaded (QoS 1, 64 B), ${ROUNDS} rounds:`)
    const busy = await busyPhase({
      ours: { url: inst.mqttUrl!, counter: oursCounter },
      mosquitto100: { url: bridge100.url, counter: anchorCounter },
      ...(UPSTREAMS > BUSY ? { mosquittoN: { url: bridgeN.url, counter: anchorCounter } } : {}),
    })
    return report({ ids, createMs, steps, restart, mosquitto, busy, startedAt })
  } finally {
    await open.close()
  }
}

/** Per-link figures from the first and last idle steps; the human summary and the JSON line. */
function report(run: {
  ids: string[]
  createMs: number
  steps: IdleStep[]
  restart: Restart
  mosquitto: Awaited<ReturnType<typeof mosquittoIdle>>
  busy: Awaited<ReturnType<typeof busyPhase>>
  startedAt: number
}) {
  const { steps, restart, mosquitto, busy } = run
  const [none, quarter, all] = [steps[0]!, steps[1]!, steps.at(-1)!]
  const perLink = (from: IdleStep, key: 'rssMiB' | 'heapMiB') =>
    round(((all[key] - from[key]) * MiB) / (all.links - from.links) / KiB)
  const idle = {
    rssPerLinkKiB: perLink(none, 'rssMiB'),
    heapPerLinkKiB: perLink(none, 'heapMiB'),
    // From N/4 to N: without what the first link pays once (mqtt-packet's number cache, ~7 MB)
    marginalRssPerLinkKiB: perLink(quarter, 'rssMiB'),
    marginalHeapPerLinkKiB: perLink(quarter, 'heapMiB'),
    cpuPercent: all.cpuPercent,
    cpuPercentNoLinks: none.cpuPercent,
    // ms of CPU a second per idle link: the slope from no links to N
    cpuMsPerLinkPerSec: round((10 * (all.cpuPercent - none.cpuPercent)) / all.links, 4),
    steps,
    mosquittoBridge: mosquitto,
  }
  const rate = (name: string) => (busy.names.includes(name) ? median(busy.rates(name)) : null)
  const busy100 = {
    ours: rate('ours'),
    mosquittoBridge: rate('mosquitto100'),
    ratio: busy.ratio('mosquitto100'),
    mosquittoBridgeN: rate('mosquittoN'),
    ratioToN: busy.names.includes('mosquittoN') ? busy.ratio('mosquittoN') : null,
    rounds: Object.fromEntries(busy.names.map((n) => [n, busy.rates(n)])),
    undelivered: Object.fromEntries(busy.names.map((n) => [n, busy.undelivered(n)])),
  }
  console.error(
    `per idle link: RSS ${idle.rssPerLinkKiB} KiB (Mosquitto's bridge ${mosquitto.rssPerLinkKiB} KiB), ` +
      `heap ${idle.heapPerLinkKiB} KiB (from N/4 to N: RSS ${idle.marginalRssPerLinkKiB}, heap ` +
      `${idle.marginalHeapPerLinkKiB} KiB), CPU ${idle.cpuMsPerLinkPerSec} ms/s ` +
      `(${all.links} links ${all.cpuPercent} % vs none ${none.cpuPercent} %; Mosquitto's ${mosquitto.cpuPercent} %)\n` +
      `busy ${BUSY}: ours ${busy100.ours} msg/s, Mosquitto's bridge (${BUSY} connections) ` +
      `${busy100.mosquittoBridge} msg/s, ratio ${busy100.ratio}` +
      (busy100.ratioToN === null
        ? ''
        : `; Mosquitto's bridge (${UPSTREAMS} connections) ${busy100.mosquittoBridgeN} msg/s, ratio ${busy100.ratioToN}`)
  )
  const result = {
    bench: 'supervisor-scale',
    upstreams: run.ids.length,
    cores: availableParallelism(),
    createMs: run.createMs,
    idle,
    reconcileMs: restart.reconcileMs,
    restart: { how: 'SIGTERM, new process on the same data folder', ...restart },
    busy100,
    loadAverage: loadavg().map((l) => round(l)),
    seconds: Math.round((performance.now() - run.startedAt) / 1_000),
  }
  console.log(JSON.stringify(result))
  return result
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runSupervisorScaleBench()
  process.exit(0)
}
