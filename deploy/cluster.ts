/**
 * A multi-process uns-bridge cluster on one machine, laid out as in production: a three-node NATS
 * cluster with JetStream (unless given NATS_URL), two replicas of each service, each its own
 * process, on one Postgres, and a TCP load balancer in front of the gateways' MQTT ports. The
 * end-to-end tests use it; run it by hand with
 *   DATABASE_URL=postgres://postgres@127.0.0.1/ub UB_ADMIN_TOKEN=… \
 *   UB_SECRET_KEY=$(openssl rand -base64 32) node --import tsx deploy/cluster.ts \
 *   [--mqtt-port <balancer port>] [--host <listen address>]
 * (with NATS_URL=… it uses that NATS instead, unless `--nats-nodes <n>` is given).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { parseArgs } from 'node:util'
import type { ServiceName } from '../services/common/config.ts'
import { launchProcess, type LaunchedProcess } from './launch.ts'
import { startNatsCluster, type NatsCluster } from './nats-cluster.ts'
import { startTcpBalancer, type TcpBalancer } from './tcp-balancer.ts'

export type ClusterLayout = Partial<Record<ServiceName, number>>

export const DEFAULT_LAYOUT: ClusterLayout = { store: 2, gateway: 2, supervisor: 2, handshake: 2 }

export interface ClusterMember {
  service: ServiceName
  index: number
  process: LaunchedProcess
  httpUrl: string
  mqttUrl: string | null
}

export interface Cluster {
  members: ClusterMember[]
  of(service: ServiceName): ClusterMember[]
  /** Every NATS URL the processes were given, comma-separated. */
  natsUrls: string
  /** The NATS cluster it started, when it was given no `natsUrl`. */
  nats: NatsCluster | undefined
  /** The MQTT load balancer in front of the gateways; none without gateways or with `balancer: false`. */
  balancer: TcpBalancer | undefined
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export interface ClusterOptions {
  /** A NATS to use (comma-separated URLs); without it, a cluster of `natsNodes` is started. */
  natsUrl?: string
  /** Nodes of the NATS cluster started when no `natsUrl` is given: 3 (JetStream R3) by default. */
  natsNodes?: number
  databaseUrl: string
  busPrefix: string
  adminToken: string
  /** Seals upstream secrets and TLS keys at rest; the same for every store replica. */
  secretKey: string
  layout?: ClusterLayout
  host?: string
  /** A TCP load balancer in front of the gateways' MQTT ports (the default). */
  balancer?: boolean
  /** The balancer's port; a free one by default. */
  mqttPort?: number
  extraArgs?: string[]
  /** Per-process flags, given the members started so far (gateways start before supervisors). */
  argsFor?: (service: ServiceName, index: number, started: readonly ClusterMember[]) => string[]
}

/**
 * Supervisor i lists every gateway, starting with gateway i (as a load balancer would spread
 * them): a link whose gateway dies resumes on the next one listed.
 */
function defaultArgsFor(
  service: ServiceName,
  index: number,
  started: readonly ClusterMember[]
): string[] {
  const gateways = started.filter((m) => m.service === 'gateway' && m.mqttUrl)
  if (service !== 'supervisor' || gateways.length === 0) return []
  const first = index % gateways.length
  const rotated = [...gateways.slice(first), ...gateways.slice(0, first)]
  return ['--local-broker-url', rotated.map((m) => m.mqttUrl).join(',')]
}

/** JetStream copies of each bucket on a cluster we started: 3 where there are three nodes. */
const busReplicasFor = (nodes: number) => Math.max(1, Math.min(nodes, 3))

export async function startCluster({
  natsUrl,
  natsNodes = 3,
  databaseUrl,
  busPrefix,
  adminToken,
  secretKey,
  layout = DEFAULT_LAYOUT,
  host = '127.0.0.1',
  balancer: wantsBalancer = true,
  mqttPort = 0,
  extraArgs = [],
  argsFor = defaultArgsFor,
}: ClusterOptions): Promise<Cluster> {
  const members: ClusterMember[] = []
  /** Every process started, members or not yet (one whose sibling failed to start among them). */
  const processes: LaunchedProcess[] = []
  const closers: Array<() => unknown> = []
  const close = async () => {
    await Promise.all(processes.splice(0).map((p) => p.stop()))
    members.splice(0)
    for (const c of closers.splice(0).reverse()) await c()
  }
  try {
    let nats: NatsCluster | undefined
    if (!natsUrl) {
      nats = await startNatsCluster({ size: natsNodes, host })
      closers.push(() => nats!.close())
    }
    const natsUrls = natsUrl ?? nats!.urls
    const copies = nats ? busReplicasFor(natsNodes) : 1
    const replicas = copies > 1 ? ['--bus-replicas', String(copies)] : []
    const env = {
      NATS_URL: natsUrls,
      DATABASE_URL: databaseUrl,
      UB_BUS_PREFIX: busPrefix,
      UB_ADMIN_TOKEN: adminToken,
      UB_SECRET_KEY: secretKey,
    }
    // The store first: the others wait for it on the bus, but starting it first saves their retries.
    const order: ServiceName[] = ['store', 'gateway', 'supervisor', 'handshake']
    // nats-server 2.9 leaves a stream info unanswered while another client creates the same
    // replicated stream (the KV bucket's first open times out): replicas of a service open the
    // same buckets, so on a replicated bus they start one after another.
    const oneByOne = replicas.length > 0
    for (const service of order) {
      const launch = async (index: number) => {
        const dir = mkdtempSync(join(tmpdir(), `ub-${service}-`))
        closers.push(() => rmSync(dir, { recursive: true, force: true }))
        const args = [
          ...['--services', service, '--data-dir', dir],
          ...['--http-host', host, '--http-port', '0', '--mqtt-host', host, '--mqtt-port', '0'],
          ...replicas,
          ...extraArgs,
          ...argsFor(service, index, members),
        ]
        const proc = await launchProcess({ args, env })
        processes.push(proc)
        return memberOf(service, index, proc)
      }
      members.push(...(await launchEach(layout[service] ?? 0, launch, oneByOne)))
    }
    const balancer = wantsBalancer ? await balanceGateways(members, host, mqttPort) : undefined
    if (balancer) closers.push(() => balancer.close())
    return {
      members,
      of: (service) => members.filter((m) => m.service === service),
      natsUrls,
      nats,
      balancer,
      close,
      [Symbol.asyncDispose]: close,
    }
  } catch (err) {
    await close()
    throw err
  }
}

/**
 * Start `count` of something, at once or one after another. All settle before a failure is
 * thrown: one still starting when its sibling fails must be stopped too.
 */
async function launchEach<T>(
  count: number,
  launch: (index: number) => Promise<T>,
  oneByOne: boolean
): Promise<T[]> {
  const indexes = Array.from({ length: count }, (_, i) => i)
  if (oneByOne) {
    const out: T[] = []
    for (const i of indexes) out.push(await launch(i))
    return out
  }
  const settled = await Promise.allSettled(indexes.map(launch))
  for (const s of settled) if (s.status === 'rejected') throw s.reason
  return settled.map((s) => (s as PromiseFulfilledResult<T>).value)
}

function memberOf(service: ServiceName, index: number, proc: LaunchedProcess): ClusterMember {
  return {
    service,
    index,
    process: proc,
    httpUrl: proc.ready.http as string,
    mqttUrl: (proc.ready.mqtt as string | null) ?? null,
  }
}

async function balanceGateways(
  members: readonly ClusterMember[],
  host: string,
  port: number
): Promise<TcpBalancer | undefined> {
  const backends = members
    .filter((m) => m.service === 'gateway' && m.mqttUrl)
    .map((m) => new URL(m.mqttUrl!))
    .map((u) => ({ host: u.hostname, port: Number(u.port) }))
  return backends.length ? startTcpBalancer({ backends, host, port }) : undefined
}

/** Where to connect, for a person: the MQTT balancer, each operator API, the NATS URLs. */
export function describeCluster(cluster: Cluster): string {
  const lines: string[] = []
  const counts = (['store', 'gateway', 'supervisor', 'handshake'] as const)
    .map((s) => `${cluster.of(s).length} ${s}`)
    .join(', ')
  lines.push(`uns-bridge cluster: ${counts}`)
  const gateways = cluster.of('gateway').map((m) => `gateway#${m.index} ${m.mqttUrl}`)
  if (cluster.balancer) {
    lines.push(`  mqtt  ${cluster.balancer.url()}   (load balancer over ${gateways.join(', ')})`)
  } else {
    for (const g of gateways) lines.push(`  mqtt  ${g}`)
  }
  for (const m of cluster.of('handshake')) {
    lines.push(`  api   ${m.httpUrl}/api/v1   (handshake#${m.index}, admin token UB_ADMIN_TOKEN)`)
  }
  lines.push(`  nats  ${cluster.natsUrls}`)
  if (cluster.nats) {
    const folders = dirname(cluster.nats.nodes[0]!.dir)
    lines.push(
      `        (${cluster.nats.nodes.length} nodes with JetStream started here, in ${folders})`
    )
  }
  lines.push('  processes:')
  for (const m of cluster.members) {
    const pid = m.process.child.pid
    lines.push(
      `    ${m.service}#${m.index}  pid ${pid}  ${m.httpUrl}${m.mqttUrl ? '  ' + m.mqttUrl : ''}`
    )
  }
  return lines.join('\n')
}

function parseCount(
  flag: string,
  value: string | undefined,
  [min, max]: [number, number]
): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) {
    console.error(`${flag} must be a whole number from ${min} to ${max}, not ${value}`)
    process.exit(2)
  }
  return n
}

async function main() {
  const { values } = parseArgs({
    options: {
      'nats-nodes': { type: 'string' },
      'mqtt-port': { type: 'string' },
      host: { type: 'string' },
    },
  })
  const natsNodes = parseCount('--nats-nodes', values['nats-nodes'], [1, 5])
  const databaseUrl = process.env.DATABASE_URL
  const adminToken = process.env.UB_ADMIN_TOKEN
  const secretKey = process.env.UB_SECRET_KEY
  if (!databaseUrl || !adminToken || !secretKey) {
    console.error(
      'set DATABASE_URL, UB_ADMIN_TOKEN and UB_SECRET_KEY (NATS_URL to use a running NATS; ' +
        'without it, or with --nats-nodes <1-5>, a NATS cluster is started here)'
    )
    process.exit(2)
  }
  const cluster = await startCluster({
    // --nats-nodes asks for a cluster of our own even when NATS_URL is set.
    ...(natsNodes ? { natsNodes } : { natsUrl: process.env.NATS_URL }),
    databaseUrl,
    adminToken,
    secretKey,
    busPrefix: process.env.UB_BUS_PREFIX ?? 'ub',
    mqttPort: parseCount('--mqtt-port', values['mqtt-port'], [0, 65_535]) ?? 0,
    ...(values.host ? { host: values.host } : {}),
  })
  console.log(describeCluster(cluster))
  const stop = () => void cluster.close().then(() => process.exit(0))
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
