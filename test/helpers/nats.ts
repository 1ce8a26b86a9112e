import { freePort, spawnServer } from './server-process.ts'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import type { Bus, KvBucket } from '../../services/common/bus/bus.ts'
import type { BlobBucket, BlobBucketOptions } from '../../services/common/bus/blobs.ts'

const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? '/usr/sbin/nats-server'

/** The shared test server (CI runs one on 4222). */
export function natsUrl(): string {
  return process.env.NATS_URL ?? 'nats://127.0.0.1:4222'
}

/** The run id `npm test` sets once (test/helpers/global-setup.ts); its workers inherit it. */
export const TEST_RUN_ENV = 'UB_TEST_RUN'

/** `t_<run id>_`: what every bus prefix of one `npm test` run starts with. */
export const runPrefix = (): string => `t_${process.env[TEST_RUN_ENV] ?? 'norun'}_`

/** A per-run name that is valid as a NATS token and inside a KV bucket name. */
export function uniquePrefix(tag: string): string {
  const safe = tag.replace(/[^A-Za-z0-9]/g, '').slice(0, 16)
  return `${runPrefix()}${safe}_${Math.random().toString(36).slice(2, 10)}`
}

/**
 * A NATS bus on the shared server under a fresh prefix. Its close() also destroys every bucket
 * it opened, so test runs leave nothing behind.
 */
export async function createTestNatsBus({
  prefix = uniquePrefix('bus'),
  url = natsUrl(),
}: { prefix?: string; url?: string } = {}): Promise<Bus> {
  const bus = await connectNatsBus({ servers: url, prefix, name: `test ${prefix}` })
  const opened = new Map<string, KvBucket>()
  const openedBlobs = new Map<string, BlobBucket>()
  let closing: Promise<void> | undefined
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await Promise.all([...opened.values()].map((b) => b.destroy()))
      // A test may have destroyed it already (the stream is gone): that is not a failure.
      await Promise.all([...openedBlobs.values()].map((b) => b.destroy().catch(() => {})))
      await bus.close()
    })())
  return Object.assign(Object.create(bus) as Bus, {
    async kv(bucket: string, options?: { ttlMs?: number }) {
      const kv = await bus.kv(bucket, options)
      opened.set(kv.name, kv)
      return kv
    },
    async blobs(bucket: string, options?: BlobBucketOptions) {
      const blobs = await bus.blobs(bucket, options)
      openedBlobs.set(blobs.name, blobs)
      return blobs
    },
    close,
    [Symbol.asyncDispose]: close,
  })
}

export interface ClusterOptions {
  name: string
  /** Cluster listen port; a free one when absent. */
  port?: number
  /** Peers' cluster URLs, e.g. `nats://127.0.0.1:6222`. */
  routes?: string[]
}

export interface NatsServer {
  url: string
  port: number
  /** Cluster listen URL, when started with `cluster`. */
  clusterUrl?: string
  /** SIGTERM drains (lame duck is SIGUSR2); SIGKILL models a crash. Resolves once it exited. */
  stop(signal?: NodeJS.Signals): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export interface NatsServerOptions {
  cluster?: ClusterOptions
  jetstream?: boolean
  /** A fixed client port (a restart on the same port); a free one when absent. */
  port?: number
  /**
   * A JetStream store folder the caller owns: kept when the server stops, so a server started
   * again on it (same ports, so the same name) rejoins with its data, as a crashed node would.
   * A temp folder, removed on stop, when absent.
   */
  storeDir?: string
  /** The client listen address: 127.0.0.1 when absent. */
  host?: string
}

/**
 * Spawn a private nats-server with JetStream on free ports and a temp store dir, for failover
 * tests that must stop a server. Resolves once it accepts connections.
 */
export async function startNatsServer({
  cluster,
  jetstream = true,
  port: fixedPort,
  storeDir,
  host = '127.0.0.1',
}: NatsServerOptions = {}): Promise<NatsServer> {
  const port = fixedPort ?? (await freePort())
  // spawnServer removes its folder on stop: with a caller's store it gets an empty one of its own.
  const dir = await mkdtemp(join(tmpdir(), 'ub-nats-'))
  const store = storeDir ?? dir
  const args = ['-a', host, '-p', String(port), ...(jetstream ? ['-js', '-sd', store] : [])]
  let clusterUrl: string | undefined
  if (cluster) {
    const cport = cluster.port ?? (await freePort())
    clusterUrl = `nats://127.0.0.1:${cport}`
    args.push(
      '--cluster_name',
      cluster.name,
      '--cluster',
      clusterUrl,
      '-n',
      `${cluster.name}-${port}`
    )
    if (cluster.routes?.length) args.push('--routes', cluster.routes.join(','))
  }
  const { stop } = await spawnServer({ bin: NATS_SERVER_BIN, args, port, dir, host })
  return {
    url: `nats://${host}:${port}`,
    port,
    ...(clusterUrl ? { clusterUrl } : {}),
    stop,
    [Symbol.asyncDispose]: () => stop(),
  }
}

/**
 * Delete every KV bucket and blob bucket (Object Store, `OBJ_` stream) under a prefix: for tests
 * whose buckets were opened by other processes (a cluster of service processes), so the shared
 * server keeps nothing of the run.
 */
export async function destroyBucketsWithPrefix(prefix: string, url = natsUrl()): Promise<string[]> {
  const nc = await connect({ servers: url, name: `cleanup ${prefix}` })
  try {
    const jsm = await jetstreamManager(nc)
    const removed: string[] = []
    for await (const info of jsm.streams.list()) {
      const name = info.config.name
      if (name.startsWith(`KV_${prefix}_`) || name.startsWith(`OBJ_${prefix}_`)) {
        await jsm.streams.delete(name)
        removed.push(name)
      }
    }
    return removed
  } finally {
    await nc.close()
  }
}
