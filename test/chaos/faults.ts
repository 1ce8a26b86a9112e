import { forwarding, owningSupervisor } from './bridge.ts'
import type { Fabric } from './fabric.ts'
import { LIFECYCLE_FAULTS } from './lifecycle-faults.ts'
import type { LifecycleReport } from './lifecycle.ts'
import type { CutMode } from './link-proxy.ts'
import type { NatsNode } from './nats-cluster.ts'
import { PARTITION_FAULTS } from './partition-faults.ts'
import { remotePortsOf } from './sockets.ts'
import { sleep } from './wait.ts'

export interface FaultContext {
  fabric: Fabric
  bridgeId: string
  /** How long a killed part stays down before it is started again. */
  downMs: number
  /** How long a cut link stays cut. */
  linkDownMs: number
  note(line: string): void
}

/** What a fault tells beyond its notes. */
export interface FaultOutcome {
  /** When the broken part was back: delivery's resumption and the backlog's drain count from here. */
  healedAt?: number
  /** Other upstreams driven through their lifecycle while it lasted. */
  lifecycle?: LifecycleReport
}

/** One fault: it breaks something and brings it back, while traffic flows. */
export interface Fault {
  name: string
  inject(ctx: FaultContext): Promise<FaultOutcome | void>
}

const RECOVERY_MS = 90_000
type Note = (line: string) => void

/** SIGKILL one NATS node (one that does not lead the session-queue stream), then restart it. */
const natsNodeKill: Fault = {
  name: 'nats-node-kill',
  async inject({ fabric, downMs, note }) {
    const leader = await fabric.nats.leaderOf(fabric.outgoingStream).catch(() => undefined)
    const node = fabric.nats.nodes.find((n) => n.name !== leader)!
    await crashNats(fabric, node, downMs, note)
  },
}

/** SIGKILL the NATS node leading `gw_outgoing` (every queued bridge message), then restart it. */
const natsLeaderKill: Fault = {
  name: 'nats-leader-kill',
  async inject({ fabric, downMs, note }) {
    const leader = await fabric.nats.leaderOf(fabric.outgoingStream)
    const node = fabric.nats.nodes.find((n) => n.name === leader)
    if (!node) throw new Error(`no node is named ${leader}, the leader of ${fabric.outgoingStream}`)
    await crashNats(fabric, node, downMs, note)
  },
}

async function crashNats(fabric: Fabric, node: NatsNode, downMs: number, note: Note) {
  // What it leads says what stalls: each of those streams elects a new leader first.
  const led = await fabric.nats.ledBy(node.name, `KV_${fabric.prefix}_`).catch(() => [])
  note(`SIGKILL nats ${node.name}, leader of ${led.join(', ') || 'no stream'}`)
  await node.stop('SIGKILL')
  await sleep(downMs)
  await node.start()
  note(`nats ${node.name} back`)
  await fabric.nats.settled(`KV_${fabric.prefix}_`, RECOVERY_MS)
  note('every stream has its leader and current replicas')
}

/** SIGKILL the gateway the owning supervisor's bridge reads from; its publishers move too. */
const gatewayKill: Fault = {
  name: 'gateway-kill',
  async inject({ fabric, bridgeId, downMs, note }) {
    const owner = await owningSupervisor(fabric, bridgeId)
    const ports = await remotePortsOf(owner.pid!)
    const gateway = fabric.of('gateway').find((g) => ports.has(Number(new URL(g.mqttUrl!).port)))
    if (!gateway) throw new Error(`${owner.label} holds no connection to a gateway`)
    note(`SIGKILL ${gateway.label} (pid ${gateway.pid}), read by ${owner.label}`)
    await gateway.kill()
    await sleep(downMs)
    await gateway.start()
    note(`${gateway.label} back (pid ${gateway.pid})`)
  },
}

/** SIGKILL the supervisor that owns the bridge: the other takes its lease after the TTL. */
const supervisorKill: Fault = {
  name: 'supervisor-kill',
  async inject({ fabric, bridgeId, downMs, note }) {
    const owner = await owningSupervisor(fabric, bridgeId)
    note(`SIGKILL ${owner.label} (pid ${owner.pid}), owner of the bridge`)
    await owner.kill()
    const taken = await forwarding(fabric, bridgeId, RECOVERY_MS)
    note(`bridge forwarding again, owner ${taken.owner}`)
    await sleep(downMs)
    await owner.start()
    note(`${owner.label} back (pid ${owner.pid})`)
  },
}

/** Every NATS node, then every service replica, stopped (SIGTERM) and started, one at a time. */
const rollingRestart: Fault = {
  name: 'rolling-restart',
  async inject({ fabric, bridgeId, note }) {
    for (const node of fabric.nats.nodes) {
      const led = await fabric.nats.ledBy(node.name, `KV_${fabric.prefix}_`).catch(() => [])
      await node.stop('SIGTERM')
      note(`nats ${node.name} stopped (led ${led.join(', ') || 'no stream'})`)
      await node.start()
      await fabric.nats.settled(`KV_${fabric.prefix}_`, RECOVERY_MS)
      note(`nats ${node.name} restarted, streams settled`)
    }
    for (const service of fabric.services) {
      await service.stop()
      await service.start()
      await forwarding(fabric, bridgeId, RECOVERY_MS)
      note(`${service.label} restarted (pid ${service.pid}), bridge forwarding`)
    }
  },
}

/** The link between the supervisors and the cloud broker cut (the counter's own stays up). */
function cloudCut(name: string, mode: CutMode): Fault {
  return {
    name,
    async inject({ fabric, linkDownMs, note }) {
      note(`cloud link cut (${mode}) for ${linkDownMs} ms, ${fabric.cloudLink.open} connections`)
      fabric.cloudLink.cut(mode)
      await sleep(linkDownMs)
      fabric.cloudLink.restore()
      const healedAt = Date.now()
      note(`cloud link back; ${fabric.cloudLink.connections} connections accepted in all`)
      return { healedAt }
    },
  }
}

export const FAULTS: Fault[] = [
  natsNodeKill,
  natsLeaderKill,
  gatewayKill,
  supervisorKill,
  rollingRestart,
  cloudCut('cloud-cut', 'silent'),
  cloudCut('cloud-reset', 'reset'),
  ...LIFECYCLE_FAULTS,
  ...PARTITION_FAULTS,
]

export function faultNamed(name: string): Fault {
  const fault = FAULTS.find((f) => f.name === name)
  if (!fault)
    throw new Error(`unknown fault ${name}; known: ${FAULTS.map((f) => f.name).join(', ')}`)
  return fault
}
