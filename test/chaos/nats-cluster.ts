import { jetstreamManager, type StreamInfo } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import {
  startNatsCluster as startNodes,
  type NatsCluster as Nodes,
  type NatsNode,
} from '../../deploy/nats-cluster.ts'
import { retry } from './wait.ts'

/** One node of the chaos cluster (deploy/nats-cluster.ts): fixed ports and store folder, so it can crash and come back. */
export type { NatsNode }

/** The deploy launcher's cluster, with what the faults ask about its streams. */
export interface NatsCluster extends Nodes {
  /** The server name leading a stream now, or undefined while it has none. */
  leaderOf(stream: string): Promise<string | undefined>
  /** The streams (names without `streamPrefix`) a node leads now. */
  ledBy(node: string, streamPrefix: string): Promise<string[]>
  /** Wait until every stream whose name starts with `streamPrefix` has a leader and all replicas current. */
  settled(streamPrefix: string, timeoutMs?: number): Promise<void>
}

/** Three nats-servers with JetStream, each on its own ports and its own store folder. */
export async function startNatsCluster(
  size = 3,
  /** The client listen address: a namespace's host-side address lets what runs inside reach it. */
  { host = '127.0.0.1' }: { host?: string } = {}
): Promise<NatsCluster> {
  const clusterName = `chaos${Math.random().toString(36).slice(2, 8)}`
  const nodes = await startNodes({ size, host, clusterName })
  let admin: NatsConnection | undefined
  const manager = async () => {
    admin ??= await connect({ servers: nodes.nodes.map((n) => n.url), name: 'chaos admin' })
    return jetstreamManager(admin, { timeout: 3_000 })
  }
  const close = async () => {
    await admin?.close().catch(() => {})
    await nodes.close()
  }
  return {
    ...nodes,
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
    [Symbol.asyncDispose]: close,
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
