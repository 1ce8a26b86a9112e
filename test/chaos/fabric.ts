import { randomBytes } from 'node:crypto'
import { rm } from 'node:fs/promises'
import type { ServiceName } from '../../services/common/config.ts'
import type { Mosquitto } from '../helpers/mosquitto.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { startLinkProxy, type LinkProxy } from './link-proxy.ts'
import { startNatsCluster, type NatsCluster } from './nats-cluster.ts'
import { createNetns } from './netns.ts'
import { startCloudInNetns, type NetnsHandles } from './partition-faults.ts'
import { startPrivatePostgres, type PrivatePostgres } from './private-postgres.ts'
import { sleep } from './wait.ts'
import { defineService, type ServiceProcess, type ServiceSettings } from './services.ts'

export const LAYOUT: Record<ServiceName, number> = {
  store: 2,
  gateway: 2,
  supervisor: 2,
  handshake: 1,
}
const START_ORDER: ServiceName[] = ['store', 'gateway', 'supervisor', 'handshake']
const LEASE_TTL_MS = 3_000
const DATABASE = 'ub_chaos'

/**
 * The distributed fabric under test: a three-node NATS cluster (every bucket with 3 copies), a
 * Postgres of its own, 2 stores, 2 gateways, 2 supervisors (each given both gateways), 1 handshake
 * API, each its own process; a Mosquitto stands in for the cloud upstream, reached through a
 * proxy that can cut the link.
 */
export interface Fabric {
  nats: NatsCluster
  cloud: Mosquitto
  /** Between the supervisors and the cloud: every upstream to the cloud goes through it. */
  cloudLink: LinkProxy
  /** An upstream's `host` and `brokerPort` for the cloud, through `cloudLink`. */
  cloudUpstream: { host: string; brokerPort: number }
  /** The cloud broker's namespace and gateway#0's: what the partition faults cut. */
  netns: NetnsHandles
  /** Restarted by the Postgres faults, so private (the machine's 5432 serves other tests). */
  postgres: PrivatePostgres
  /** The stores' database on it. */
  database: string
  prefix: string
  adminToken: string
  services: ServiceProcess[]
  of(service: ServiceName): ServiceProcess[]
  /** The stream behind the gateways' persistent-session queues. */
  outgoingStream: string
  /** The operator API (the handshake process), with the admin token. */
  api(path: string, init?: RequestInit): Promise<{ status: number; body: any }>
  /** Every process's output, by label. */
  logs(): Record<string, string>
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export async function startFabric(): Promise<Fabric> {
  const prefix = uniquePrefix('chaos')
  const adminToken = 'ubt_chaos_' + randomBytes(12).toString('hex')
  const closers: Array<() => Promise<unknown>> = []
  const services: ServiceProcess[] = []
  const close = async () => {
    // SIGTERM, and SIGKILL for a process that has not exited 15 s later.
    await Promise.all(services.map((s) => Promise.race([s.stop(), sleep(15_000).then(s.kill)])))
    await Promise.all(services.map((s) => rm(s.dataDir, { recursive: true, force: true })))
    for (const c of closers.splice(0).reverse()) await c().catch(() => {})
  }
  try {
    // The partition faults' namespaces: the cloud broker in one, gateway#0 in the other.
    const cloudNs = await createNetns()
    closers.push(() => cloudNs.destroy())
    const gatewayNs = await createNetns()
    closers.push(() => gatewayNs.destroy())
    // On the gateway namespace's host-side address: reached from inside it over its data link.
    const nats = await startNatsCluster(3, { host: gatewayNs.hostAddress })
    closers.push(() => nats.close())
    // `cloud.url` (the counter's) is its control link; the proxy reaches it over the data link.
    const cloud = await startCloudInNetns(cloudNs)
    closers.push(() => cloud.stop())
    const cloudLink = await startLinkProxy({
      targetHost: cloudNs.nsAddress,
      targetPort: cloud.port,
    })
    closers.push(() => cloudLink.close())
    const pg = await startPrivatePostgres()
    closers.push(() => pg.close())
    // The stores migrate it themselves (two at once: the advisory lock serialises them).
    const databaseUrl = await pg.createDatabase(DATABASE)
    const settings: ServiceSettings = {
      env: {
        NATS_URL: nats.urls,
        DATABASE_URL: databaseUrl,
        UB_BUS_PREFIX: prefix,
        UB_ADMIN_TOKEN: adminToken,
        UB_SECRET_KEY: randomBytes(32).toString('base64'),
        // The lifecycle faults send handshake requests to this fabric's own API, all from
        // 127.0.0.1: more than the default 10 a minute.
        UB_HANDSHAKE_RATE_PER_MIN: '600',
        // The lifecycle lanes bridge the fabric to its own handshake API (lifecycle.ts).
        UB_ALLOW_SELF_UPSTREAM: 'true',
        // CHAOS_LOG_LEVEL=debug: the services' debug lines in the --logs files.
        ...(process.env.CHAOS_LOG_LEVEL ? { UB_LOG_LEVEL: process.env.CHAOS_LOG_LEVEL } : {}),
      },
      args: ['--bus-replicas', '3', '--lease-ttl-ms', String(LEASE_TTL_MS)],
    }
    for (const service of START_ORDER) {
      for (let i = 0; i < LAYOUT[service]; i++) {
        services.push(
          await defineService(
            service,
            i,
            settings,
            supervisorArgs(service, i, services),
            service === 'gateway' && i === 0 ? gatewayNs : undefined
          )
        )
      }
    }
    for (const service of START_ORDER) {
      await Promise.all(services.filter((s) => s.service === service).map((s) => s.start()))
    }
    const of = (service: ServiceName) => services.filter((s) => s.service === service)
    const fabric: Fabric = {
      nats,
      cloud,
      cloudLink,
      cloudUpstream: { host: 'mqtt://127.0.0.1', brokerPort: cloudLink.port },
      netns: { cloud: cloudNs, gateway: { process: of('gateway')[0]!, ns: gatewayNs } },
      postgres: pg,
      database: DATABASE,
      prefix,
      adminToken,
      services,
      of,
      outgoingStream: `KV_${prefix}_gw_outgoing`,
      api: (path, init = {}) => callApi(of('handshake')[0]!.httpUrl, adminToken, path, init),
      logs: () => ({
        ...Object.fromEntries(services.map((s) => [s.label, s.output()])),
        postgres: pg.log(),
      }),
      close,
      [Symbol.asyncDispose]: close,
    }
    return fabric
  } catch (err) {
    await close()
    throw err
  }
}

/** Supervisor i lists every gateway, starting with gateway i (as a load balancer would spread them). */
function supervisorArgs(service: ServiceName, index: number, defined: ServiceProcess[]) {
  return () => {
    if (service !== 'supervisor') return []
    const gateways = defined.filter((s) => s.service === 'gateway').map((s) => s.mqttUrl!)
    const rotated = [...gateways.slice(index), ...gateways.slice(0, index)]
    return ['--local-broker-url', rotated.join(',')]
  }
}

/** An operator API call with the admin token; the body parsed as JSON when it is. */
export async function callApi(base: string, token: string, path: string, init: RequestInit) {
  const res = await fetch(`${base}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    // Longer than a store call with its two retries (3 × 5 s): a slow answer is not a lost one.
    signal: AbortSignal.timeout(30_000),
  })
  const text = await res.text()
  let body: any = text
  try {
    body = JSON.parse(text)
  } catch {
    // not JSON: keep the text, for the error message
  }
  return { status: res.status, body }
}
