import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../helpers/server-process.ts'
import type { Mosquitto } from '../helpers/mosquitto.ts'
import { forwarding, linkOf } from './bridge.ts'
import type { Fabric } from './fabric.ts'
import type { Fault } from './faults.ts'
import { accepts, type Netns } from './netns.ts'
import type { ServiceProcess } from './services.ts'
import { sleep, until } from './wait.ts'

const RECOVERY_MS = 90_000
const WATCH_EVERY_MS = 500
const MOSQUITTO_BIN = process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto'
type Note = (line: string) => void

/** The parts of the fabric that run in network namespaces: what the partition faults cut. */
export interface NetnsHandles {
  /** The namespace the cloud Mosquitto runs in (startCloudInNetns). */
  cloud?: Netns
  /**
   * A gateway started inside `ns`: it reaches NATS over the data link (the NATS nodes listen on
   * `ns.hostAddress`) and is reached by its MQTT clients and over HTTP on the control link.
   */
  gateway?: { process: ServiceProcess; ns: Netns }
}

/** What the partition faults need of the fabric: Fabric gains `netns`. */
export interface PartitionableFabric {
  netns?: NetnsHandles
}

const handlesOf = (fabric: Fabric): NetnsHandles =>
  (fabric as Fabric & PartitionableFabric).netns ?? {}

/** A cloud broker in a namespace: `url` is its control link (the counter's), never cut. */
export interface NetnsMosquitto extends Mosquitto {
  /** Through the data link, which cloud-partition cuts: what the bridge is given. */
  fabricUrl: string
}

/**
 * The cloud Mosquitto inside `ns`, one port on both of its links: the bridge connects through
 * the data link, the counting subscriber (`url`) through the control link, so a partition
 * cuts the fabric off the cloud while the harness still sees everything that arrives.
 */
export async function startCloudInNetns(
  ns: Netns,
  { port }: { port?: number } = {}
): Promise<NetnsMosquitto> {
  const p = port ?? (await freePort())
  const dir = await mkdtemp(join(tmpdir(), 'ub-mosq-netns-'))
  const lines = [
    `listener ${p} ${ns.nsAddress}`,
    `listener ${p} ${ns.controlNsAddress}`,
    'allow_anonymous true',
    'persistence false',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
  ]
  // Run as root, mosquitto drops to user `mosquitto`, who cannot read our 0700 temp folder.
  if (process.getuid?.() === 0) lines.push('user root')
  const configPath = join(dir, 'mosquitto.conf')
  await writeFile(configPath, lines.join('\n') + '\n')
  const [bin, ...wrapArgs] = ns.wrap
  const child = spawn(bin!, [...wrapArgs, MOSQUITTO_BIN, '-c', configPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4_000)))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let stopping: Promise<void> | undefined
  const stop = (signal: NodeJS.Signals = 'SIGTERM') =>
    (stopping ??= (async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      await exited
      await rm(dir, { recursive: true, force: true })
    })())
  try {
    await until(
      async () => {
        if (child.exitCode !== null) throw new Error(`exited ${child.exitCode}`)
        return (await accepts(ns.nsAddress, p)) && (await accepts(ns.controlNsAddress, p))
      },
      { timeoutMs: 10_000, what: `mosquitto in ${ns.name} on port ${p}`, everyMs: 50 }
    )
  } catch (err) {
    await stop('SIGKILL')
    throw new Error(`${String(err)}\n${stderr}`, { cause: err })
  }
  return {
    port: p,
    pid: child.pid!,
    url: `mqtt://${ns.controlNsAddress}:${p}`,
    fabricUrl: `mqtt://${ns.nsAddress}:${p}`,
    configPath,
    dir,
    stop,
    [Symbol.asyncDispose]: () => stop(),
  }
}

/** Cut the cloud broker off the whole fabric (every supervisor) for linkDownMs, then heal. */
export const cloudPartition: Fault = {
  name: 'cloud-partition',
  async inject({ fabric, bridgeId, linkDownMs, note }) {
    const ns = handlesOf(fabric).cloud
    if (!ns) throw new Error('the fabric runs its cloud broker in no network namespace')
    const watchers = [await watch(() => describeLink(fabric, bridgeId), note)]
    const what = `the cloud broker (${ns.nsAddress})`
    const healedAt = await partitionFor(ns, what, linkDownMs, note, watchers)
    const link = await forwarding(fabric, bridgeId, RECOVERY_MS)
    note(`bridge forwarding again, owner ${link.owner}`)
    return { healedAt }
  },
}

/**
 * Cut one gateway off the NATS cluster for linkDownMs, then heal: its MQTT clients (publishers,
 * the supervisors' bridges) still reach it over the control link, so it keeps taking publishes
 * it cannot store.
 */
export const gatewayNatsPartition: Fault = {
  name: 'gateway-nats-partition',
  async inject({ fabric, bridgeId, linkDownMs, note }) {
    const handle = handlesOf(fabric).gateway
    if (!handle) throw new Error('the fabric runs no gateway in a network namespace')
    const { process: gateway, ns } = handle
    const watchers = [
      await watch(() => describeReady(gateway), note),
      await watch(() => describeLink(fabric, bridgeId), note),
    ]
    const what = `${gateway.label} (pid ${gateway.pid}) from NATS`
    const healedAt = await partitionFor(ns, what, linkDownMs, note, watchers)
    await until(async () => (await readyOf(gateway)).startsWith('ready'), {
      timeoutMs: RECOVERY_MS,
      what: `${gateway.label} to be ready again`,
    })
    note(`${gateway.label} ready again`)
    const link = await forwarding(fabric, bridgeId, RECOVERY_MS)
    note(`bridge forwarding again, owner ${link.owner}`)
    return { healedAt }
  },
}

export const PARTITION_FAULTS: Fault[] = [cloudPartition, gatewayNatsPartition]

/**
 * Partition, wait downMs while the watchers note what changes, heal (also when waiting fails).
 * Resolves with when it healed.
 */
async function partitionFor(
  ns: Netns,
  what: string,
  downMs: number,
  note: Note,
  watchers: Array<() => Promise<void>>
): Promise<number> {
  let healedAt = 0
  try {
    await ns.partition()
    note(`partitioned ${what} for ${downMs} ms`)
    await sleep(downMs)
  } finally {
    try {
      await ns.heal()
      healedAt = Date.now()
      note(`healed ${what}`)
      // A few more looks: what the fabric does when the link is back.
      await sleep(2 * WATCH_EVERY_MS)
    } finally {
      await Promise.all(watchers.map((stop) => stop()))
    }
  }
  return healedAt
}

/**
 * Note `describe()`'s answer (an error is an answer too) now, then each change of it until
 * stopped: the first look is taken before the fault strikes.
 */
async function watch(describe: () => Promise<string>, note: Note): Promise<() => Promise<void>> {
  const look = () => describe().catch((err: unknown) => `unanswered: ${String(err)}`)
  let last = await look()
  note(last)
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      await sleep(WATCH_EVERY_MS)
      const now = await look()
      if (now !== last) note(now)
      last = now
    }
  })()
  return async () => {
    stopped = true
    await loop
  }
}

async function describeLink(fabric: Fabric, bridgeId: string): Promise<string> {
  const link = await linkOf(fabric, bridgeId)
  if (!link) return 'link: no status'
  return `link ${link.state}, owner ${link.owner}${link.lastError ? `: ${link.lastError}` : ''}`
}

async function describeReady(gateway: ServiceProcess): Promise<string> {
  return `${gateway.label} ${await readyOf(gateway)}`
}

/** `ready`, `not_ready {"bus":false,…}`, or why it did not answer (its readiness waits on NATS). */
async function readyOf(gateway: ServiceProcess): Promise<string> {
  const res = await fetch(`${gateway.httpUrl}/readyz`, { signal: AbortSignal.timeout(2_000) })
  const body = (await res.json()) as { status: string; checks: Record<string, boolean> }
  return body.status === 'ready' ? 'ready' : `${body.status} ${JSON.stringify(body.checks)}`
}
