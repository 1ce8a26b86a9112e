/**
 * A multi-process uns-bridge cluster on one machine: each service in its own process(es) on one
 * NATS and one Postgres, as in production. The end-to-end tests use it; run it by hand with
 *   NATS_URL=nats://127.0.0.1:4222 DATABASE_URL=postgres://postgres@127.0.0.1/ub \
 *   UB_ADMIN_TOKEN=… UB_SECRET_KEY=$(openssl rand -base64 32) node --import tsx deploy/cluster.ts
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ServiceName } from '../services/common/config.ts'
import { launchProcess, type LaunchedProcess } from './launch.ts'

export type ClusterLayout = Partial<Record<ServiceName, number>>

export const DEFAULT_LAYOUT: ClusterLayout = { store: 2, gateway: 2, supervisor: 2, handshake: 1 }

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
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/**
 * Supervisor i talks to gateway i (round robin): in production that address is the gateways'
 * load balancer; here each supervisor gets one gateway's port.
 */
function defaultArgsFor(
  service: ServiceName,
  index: number,
  started: readonly ClusterMember[]
): string[] {
  const gateways = started.filter((m) => m.service === 'gateway' && m.mqttUrl)
  if (service !== 'supervisor' || gateways.length === 0) return []
  return ['--local-broker-url', gateways[index % gateways.length]!.mqttUrl!]
}

export async function startCluster({
  natsUrl,
  databaseUrl,
  busPrefix,
  adminToken,
  secretKey,
  layout = DEFAULT_LAYOUT,
  host = '127.0.0.1',
  extraArgs = [],
  argsFor = defaultArgsFor,
}: {
  natsUrl: string
  databaseUrl: string
  busPrefix: string
  adminToken: string
  /** Seals upstream secrets and TLS keys at rest; the same for every store replica. */
  secretKey: string
  layout?: ClusterLayout
  host?: string
  extraArgs?: string[]
  /** Per-process flags, given the members started so far (gateways start before supervisors). */
  argsFor?: (service: ServiceName, index: number, started: readonly ClusterMember[]) => string[]
}): Promise<Cluster> {
  const members: ClusterMember[] = []
  const dirs: string[] = []
  const close = async () => {
    await Promise.all(members.splice(0).map((m) => m.process.stop()))
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
  }
  try {
    // The store first: the others wait for it on the bus, but starting it first saves their retries.
    const order: ServiceName[] = ['store', 'gateway', 'supervisor', 'handshake']
    for (const service of order) {
      const count = layout[service] ?? 0
      const started = await Promise.all(
        Array.from({ length: count }, async (_, index) => {
          const dir = mkdtempSync(join(tmpdir(), `ub-${service}-`))
          dirs.push(dir)
          const proc = await launchProcess({
            args: [
              ...['--services', service, '--data-dir', dir],
              ...['--http-host', host, '--http-port', '0', '--mqtt-host', host, '--mqtt-port', '0'],
              ...extraArgs,
              ...argsFor(service, index, members),
            ],
            env: {
              NATS_URL: natsUrl,
              DATABASE_URL: databaseUrl,
              UB_BUS_PREFIX: busPrefix,
              UB_ADMIN_TOKEN: adminToken,
              UB_SECRET_KEY: secretKey,
            },
          })
          return {
            service,
            index,
            process: proc,
            httpUrl: proc.ready.http as string,
            mqttUrl: (proc.ready.mqtt as string | null) ?? null,
          }
        })
      )
      members.push(...started)
    }
  } catch (err) {
    await close()
    throw err
  }
  return {
    members,
    of: (service) => members.filter((m) => m.service === service),
    close,
    [Symbol.asyncDispose]: close,
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const natsUrl = process.env.NATS_URL ?? 'nats://127.0.0.1:4222'
  const databaseUrl = process.env.DATABASE_URL
  const adminToken = process.env.UB_ADMIN_TOKEN
  const secretKey = process.env.UB_SECRET_KEY
  if (!databaseUrl || !adminToken || !secretKey) {
    console.error(
      'set DATABASE_URL, UB_ADMIN_TOKEN and UB_SECRET_KEY (and NATS_URL if not nats://127.0.0.1:4222)'
    )
    process.exit(2)
  }
  const cluster = await startCluster({
    natsUrl,
    databaseUrl,
    adminToken,
    secretKey,
    busPrefix: process.env.UB_BUS_PREFIX ?? 'ub',
  })
  for (const m of cluster.members) {
    console.log(`${m.service}#${m.index}  ${m.httpUrl}${m.mqttUrl ? '  ' + m.mqttUrl : ''}`)
  }
  const stop = () => void cluster.close().then(() => process.exit(0))
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}
