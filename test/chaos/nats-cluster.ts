import { jetstreamManager, type StreamInfo } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../helpers/mosquitto.ts'
import { startNatsServer, type NatsServer } from '../helpers/nats.ts'
import { retry } from './wait.ts'

/** One node of the chaos cluster: fixed ports and store folder, so it can crash and come back. */
export interface NatsNode {
  readonly name: string
  readonly url: string
  readonly running: boolean
  /** SIGKILL (a crash) by default; SIGTERM is a graceful stop. */
  stop(signal?: NodeJS.Signals): Promise<void>
  start(): Promise<void>
}

export interface NatsCluster {
  nodes: NatsNode[]
  /** Every node's client URL, comma-separated: what each service process is given. */
  urls: string
  /** The server name leading a stream now, or undefined while it has none. */
  leaderOf(stream: string): Promise<string | undefined>
  /** The streams (names without `streamPrefix`) a node leads now. */
  ledBy(node: string, streamPrefix: string): Promise<string[]>
  /** Wait until every stream whose name starts with `streamPrefix` has a leader and all replicas current. */
  settled(streamPrefix: string, timeoutMs?: number): Promise<void>
  close(): Promise<void>
}

/**
 * Three nats-servers with JetStream, routed to each other from the start (JetStream clustering
 * wants every route at boot), each on its own ports and its own store folder.
 */
export async function startNatsCluster(
  size = 3,
  /** The client listen address: a namespace's host-side address lets what runs inside reach it. */
  { host = '127.0.0.1' }: { host?: string } = {}
): Promise<NatsCluster> {
  const clusterName = `chaos${Math.random().toString(36).slice(2, 8)}`
  const ports = await Promise.all(
    Array.from({ length: size }, async () => ({
      client: await freePort(),
      route: await freePort(),
    }))
  )
  const routes = ports.map((p) => `nats://127.0.0.1:${p.route}`)
  const dirs = await Promise.all(ports.map(() => mkdtemp(join(tmpdir(), 'ub-chaos-nats-'))))
  const nodes = ports.map((p, i) =>
    makeNode(clusterName, host, p.client, p.route, routes, dirs[i]!)
  )
  let admin: NatsConnection | undefined
  const urls = nodes.map((n) => n.url).join(',')
  const manager = async () => {
    admin ??= await connect({ servers: nodes.map((n) => n.url), name: 'chaos admin' })
    return jetstreamManager(admin, { timeout: 3_000 })
  }
  const close = async () => {
    await admin?.close().catch(() => {})
    await Promise.all(nodes.map((n) => n.stop()))
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })))
  }
  try {
    await Promise.all(nodes.map((n) => n.start()))
  } catch (err) {
    await close()
    throw err
  }
  return {
    nodes,
    urls,
    async leaderOf(stream) {
      const info = await (await manager()).streams.info(stream)
      return info.cluster?.leader
    },
    async ledBy(node, streamPrefix) {
      const led: string[] = []
      for await (const info of (await manager()).streams.list()) {
        const name = info.config.name
        if (name.startsWith(streamPrefix) && info.cluster?.leader === node) {
          led.push(name.slice(streamPrefix.length))
        }
      }
      return led
    },
    async settled(streamPrefix, timeoutMs = 60_000) {
      await retry(
        async () => {
          const jsm = await manager()
          const lagging: string[] = []
          for await (const info of jsm.streams.list()) {
            if (info.config.name.startsWith(streamPrefix) && !isSettled(info)) {
              lagging.push(info.config.name)
            }
          }
          if (lagging.length) throw new Error(`streams not settled: ${lagging.join(', ')}`)
        },
        { timeoutMs, what: 'every stream to have a leader and current replicas' }
      )
    },
    close,
  }
}

function isSettled(info: StreamInfo): boolean {
  const c = info.cluster
  if (!c?.leader) return false
  const replicas = c.replicas ?? []
  return (
    replicas.length + 1 >= info.config.num_replicas &&
    replicas.every((r) => r.current && !r.offline)
  )
}

function makeNode(
  clusterName: string,
  host: string,
  port: number,
  routePort: number,
  routes: string[],
  storeDir: string
): NatsNode {
  let server: NatsServer | undefined
  const node: NatsNode = {
    // startNatsServer names a node `<cluster>-<client port>`: the same name after a restart.
    name: `${clusterName}-${port}`,
    url: `nats://${host}:${port}`,
    get running() {
      return server !== undefined
    },
    async stop(signal = 'SIGKILL') {
      const s = server
      server = undefined
      await s?.stop(signal)
    },
    async start() {
      if (server) return
      // The killed process's ports may linger for a moment: retry until they are free.
      server = await retry(
        () =>
          startNatsServer({
            host,
            port,
            storeDir,
            cluster: { name: clusterName, port: routePort, routes },
          }),
        { timeoutMs: 20_000, what: `nats node ${port} to start` }
      )
    },
  }
  return node
}
