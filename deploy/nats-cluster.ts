/**
 * A NATS cluster with JetStream on one machine: one nats-server process per node, each with its
 * own folder holding its config file (`nats.conf`: server name, client and cluster ports, routes,
 * JetStream store) and its JetStream store. `deploy/cluster.ts` starts one when it is given no
 * NATS_URL; the chaos harness crashes and restarts its nodes.
 */
import { jetstreamManager } from '@nats-io/jetstream'
import { connect as natsConnect } from '@nats-io/transport-node'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { connect as netConnect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './free-port.ts'

const NATS_SERVER_BIN = process.env.NATS_SERVER_BIN ?? 'nats-server'
const START_TIMEOUT_MS = 20_000 // a killed node's ports may linger for a moment
const STOP_TIMEOUT_MS = 5_000 // then SIGKILL
const OUTPUT_TAIL_CHARS = 4_000

export interface NatsNode {
  readonly name: string
  /** `nats://<host>:<client port>` */
  readonly url: string
  readonly clientPort: number
  readonly clusterPort: number
  /** Its folder: `nats.conf` and the JetStream store, kept across stop and start. */
  readonly dir: string
  readonly running: boolean
  /** SIGTERM (a clean stop, SIGKILL after 5 s) by default; SIGKILL is a crash. */
  stop(signal?: NodeJS.Signals): Promise<void>
  /** Start it again on the same ports and store: it rejoins with its data. */
  start(): Promise<void>
  /** The tail of its log (stderr). */
  output(): string
}

export interface NatsCluster {
  nodes: NatsNode[]
  /** Every node's client URL, comma-separated: what each service process is given as NATS_URL. */
  urls: string
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export interface NatsClusterOptions {
  /** How many nodes: 3 keeps R3 buckets through one node's loss. */
  size?: number
  /** Where clients connect; routes stay on 127.0.0.1. */
  host?: string
  clusterName?: string
  /** Fixed ports per node; free ones when absent. */
  ports?: Array<{ client: number; cluster: number }>
  /** The nodes' folders go here and stay; a temp folder, removed on close, when absent. */
  dataDir?: string
}

/**
 * Start every node at once (JetStream clustering wants every route at boot) and resolve once the
 * cluster answers JetStream requests, i.e. it has elected its metadata leader.
 */
export async function startNatsCluster({
  size = 3,
  host = '127.0.0.1',
  clusterName = 'ub',
  ports,
  dataDir,
}: NatsClusterOptions = {}): Promise<NatsCluster> {
  const chosen =
    ports ??
    (await Promise.all(
      Array.from({ length: size }, async () => ({
        client: await freePort(),
        cluster: await freePort(),
      }))
    ))
  const root = dataDir ?? mkdtempSync(join(tmpdir(), 'ub-nats-cluster-'))
  const routes = chosen.map((p) => `nats://127.0.0.1:${p.cluster}`)
  const nodes = chosen.map((p, i) => {
    const name = `${clusterName}-${i + 1}`
    const dir = join(root, name)
    mkdirSync(dir, { recursive: true })
    const config = nodeConfig({
      name,
      clusterName,
      host,
      ports: p,
      routes,
      storeDir: join(dir, 'jetstream'),
    })
    writeFileSync(join(dir, 'nats.conf'), config)
    return makeNode({ name, host, ports: p, dir })
  })
  const close = async () => {
    await Promise.all(nodes.map((n) => n.stop()))
    if (!dataDir) rmSync(root, { recursive: true, force: true })
  }
  const urls = nodes.map((n) => n.url).join(',')
  try {
    await Promise.all(nodes.map((n) => n.start()))
    await untilJetStreamAnswers(urls)
  } catch (err) {
    await close()
    throw err
  }
  return { nodes, urls, close, [Symbol.asyncDispose]: close }
}

function nodeConfig({
  name,
  clusterName,
  host,
  ports,
  routes,
  storeDir,
}: {
  name: string
  clusterName: string
  host: string
  ports: { client: number; cluster: number }
  routes: string[]
  storeDir: string
}): string {
  const q = (s: string) => JSON.stringify(s) // NATS config takes JSON-style quoted strings
  return [
    '# Written by deploy/nats-cluster.ts: one node of a NATS cluster with JetStream.',
    `server_name: ${q(name)}`,
    `listen: ${q(`${host}:${ports.client}`)}`,
    `jetstream { store_dir: ${q(storeDir)} }`,
    'cluster {',
    `  name: ${q(clusterName)}`,
    `  listen: ${q(`127.0.0.1:${ports.cluster}`)}`,
    `  routes: [${routes.map(q).join(', ')}]`,
    '}',
    '',
  ].join('\n')
}

function accepts(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, host)
    s.once('connect', () => (s.destroy(), resolve(true)))
    s.once('error', () => resolve(false))
  })
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

function makeNode({
  name,
  host,
  ports,
  dir,
}: {
  name: string
  host: string
  ports: { client: number; cluster: number }
  dir: string
}): NatsNode {
  let child: ChildProcess | undefined
  let log = ''
  let spawnError: Error | undefined
  const alive = (c: ChildProcess) => c.exitCode === null && c.signalCode === null && !spawnError
  const spawnOnce = async (deadline: number): Promise<ChildProcess | undefined> => {
    const c = spawn(NATS_SERVER_BIN, ['-c', join(dir, 'nats.conf')], {
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    c.stderr!.on('data', (d: Buffer) => (log = (log + d.toString()).slice(-OUTPUT_TAIL_CHARS)))
    c.once('error', (err) => (spawnError = err)) // no binary (ENOENT): no retry helps
    // Alive after it accepts: a port someone else took would accept too.
    while (alive(c) && Date.now() < deadline) {
      if ((await accepts(ports.client, host)) && alive(c)) return c
      await sleep(30)
    }
    c.kill('SIGKILL')
    return undefined
  }
  return {
    name,
    url: `nats://${host}:${ports.client}`,
    clientPort: ports.client,
    clusterPort: ports.cluster,
    dir,
    get running() {
      return child !== undefined
    },
    output: () => log,
    async start() {
      if (child) return
      const deadline = Date.now() + START_TIMEOUT_MS
      // A process that exits at once found its ports still held (a killed node's): try again.
      while (!(child = await spawnOnce(deadline))) {
        if (spawnError) throw new Error(`${NATS_SERVER_BIN}: ${spawnError.message}`)
        if (Date.now() >= deadline) {
          throw new Error(`nats-server ${name} (${dir}/nats.conf) did not start:\n${log}`)
        }
        await sleep(250)
      }
    },
    async stop(signal = 'SIGTERM') {
      const c = child
      child = undefined
      if (!c || !alive(c)) return
      const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()))
      c.kill(signal)
      const timer = setTimeout(() => c.kill('SIGKILL'), STOP_TIMEOUT_MS)
      await exited
      clearTimeout(timer)
    },
  }
}

/** JetStream answers once the nodes have elected a metadata leader (within a second, usually). */
async function untilJetStreamAnswers(urls: string, timeoutMs = 20_000): Promise<void> {
  const nc = await natsConnect({ servers: urls.split(','), name: 'nats-cluster readiness' })
  try {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 2_000 })
        await jsm.getAccountInfo()
        return
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`JetStream did not answer on ${urls}: ${err}`)
        await sleep(200)
      }
    }
  } finally {
    await nc.close()
  }
}
