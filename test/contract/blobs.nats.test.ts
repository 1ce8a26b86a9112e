import { createHash, randomBytes } from 'node:crypto'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { afterEach, describe, expect, it } from 'vitest'
import { bucketName, type Bus } from '../../services/common/bus/bus.ts'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import { sleep } from '../helpers/gateway.ts'
import { freePort } from '../helpers/mosquitto.ts'
import {
  createTestNatsBus,
  natsUrl,
  startNatsServer,
  uniquePrefix,
  type NatsServer,
} from '../helpers/nats.ts'
import { blobsContract } from './blobs.contract.ts'

const MiB = 1_024 * 1_024

async function streamInfo(servers: string | string[], stream: string) {
  const nc = await connect({ servers })
  try {
    const jsm = await jetstreamManager(nc)
    return {
      info: await jsm.streams.info(stream),
      consumers: await jsm.consumers.list(stream).next(),
    }
  } finally {
    await nc.close()
  }
}

// Every bus gets a fresh prefix unless it is a replica; what a bucket keeps is its stream's state.
blobsContract(
  'nats',
  ({ prefix } = {}) => createTestNatsBus(prefix ? { prefix } : {}),
  async (bus, bucket) => {
    const { info } = await streamInfo(natsUrl(), `OBJ_${bucketName(bus.prefix, bucket)}`)
    return { bytes: info.state.bytes, items: info.state.messages }
  }
)

/** `size` bytes in 64 KiB pieces made on the fly (a 1 MiB random pool, shifted), and their hash. */
function generated(size: number) {
  const pool = randomBytes(MiB + 64 * 1_024)
  const hash = createHash('sha256')
  async function* body() {
    for (let at = 0, i = 0; at < size; i++) {
      const n = Math.min(64 * 1_024, size - at)
      const piece = pool.subarray((i * 4_099) % MiB, ((i * 4_099) % MiB) + n)
      hash.update(piece)
      yield piece
      at += n
    }
  }
  return { body: body(), digest: () => hash.digest('hex') }
}

describe('nats blobs', () => {
  const closers: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close().catch(() => {})
  })
  async function testBus(): Promise<Bus> {
    const bus = await createTestNatsBus()
    closers.push(() => bus.close())
    return bus
  }

  it('leaves no consumer behind after reads, whole, ranged and abandoned', async () => {
    const bus = await testBus()
    const b = await bus.blobs('consumers')
    await b.put('f', generated(MiB).body)
    for (const range of [{}, { start: MiB / 2 }, { start: 300_000, end: 400_000 }]) {
      for await (const _ of (await b.read('f', range))!.body) break
      for await (const _ of (await b.read('f', range))!.body);
    }
    const { consumers } = await streamInfo(natsUrl(), `OBJ_${bucketName(bus.prefix, 'consumers')}`)
    expect(consumers).toEqual([])
  })

  it('puts and reads 64 MiB with flat memory', async () => {
    const b = await (await testBus()).blobs('memory')
    const SIZE = 64 * MiB
    const start = process.memoryUsage().rss
    let peak = start
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20)
    try {
      const src = generated(SIZE)
      const t0 = Date.now()
      const info = await b.put('big', src.body)
      const t1 = Date.now()
      expect(info).toMatchObject({ size: SIZE, sha256: src.digest() })
      const hash = createHash('sha256')
      let read = 0
      for await (const c of (await b.read('big'))!.body) {
        hash.update(c)
        read += c.length
      }
      console.log(`64 MiB: put ${t1 - t0} ms, read ${Date.now() - t1} ms`)
      expect(read).toBe(SIZE)
      expect(hash.digest('hex')).toBe(info.sha256)
    } finally {
      clearInterval(sampler)
    }
    console.log(`RSS growth ${((peak - start) / MiB).toFixed(1)} MiB`)
    expect(peak - start).toBeLessThan(48 * MiB)
  }, 120_000)
})

describe('blob buckets on a three-node NATS cluster', () => {
  const closers: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close().catch(() => {})
  })
  async function retry<T>(fn: () => Promise<T>, ms = 60_000): Promise<T> {
    const deadline = Date.now() + ms
    for (;;) {
      try {
        return await fn()
      } catch (err) {
        if (Date.now() > deadline) throw err
        await sleep(250)
      }
    }
  }
  async function openBus(nodes: NatsServer[], prefix: string): Promise<Bus> {
    const bus = await retry(() =>
      connectNatsBus({ servers: nodes.map((n) => n.url), prefix, replicas: 3 })
    )
    closers.push(() => bus.close())
    return bus
  }

  it('reads a file back byte for byte after the node leading its stream is killed', async () => {
    const name = `ubb${Math.random().toString(36).slice(2, 8)}`
    // JetStream clustering wants every node to have its routes from the start.
    const ports = [await freePort(), await freePort(), await freePort()]
    const routes = ports.map((p) => `nats://127.0.0.1:${p}`)
    const nodes = await Promise.all(
      ports.map((port) => startNatsServer({ cluster: { name, port, routes } }))
    )
    for (const n of nodes) closers.push(() => n.stop('SIGKILL'))
    const prefix = uniquePrefix('b3')
    const writer = await openBus(nodes, prefix)
    const b = await retry(() => writer.blobs('files'))
    const data = randomBytes(5 * MiB + 321)
    const put = await b.put(
      'dir/file.bin',
      (async function* () {
        for (let at = 0; at < data.length; at += 100_000) yield data.subarray(at, at + 100_000)
      })()
    )

    const stream = `OBJ_${bucketName(prefix, 'files')}`
    const { info } = await streamInfo(
      nodes.map((n) => n.url),
      stream
    )
    expect(info.config.num_replicas).toBe(3)
    const leader = nodes.find((n) => info.cluster?.leader === `${info.cluster?.name}-${n.port}`)
    expect(leader).toBeDefined()
    await leader!.stop('SIGKILL')

    const survivors = nodes.filter((n) => n !== leader)
    const reader = await openBus(survivors, prefix)
    // A new stream leader is elected first; what is asserted is that nothing is lost.
    const got = await retry(async () => {
      const r = await (await reader.blobs('files')).read('dir/file.bin')
      const parts: Uint8Array[] = []
      for await (const c of r!.body) parts.push(c)
      return { info: r!.info, bytes: Buffer.concat(parts) }
    })
    expect(got.info).toEqual(put)
    expect(Buffer.compare(got.bytes, data)).toBe(0)
  }, 180_000)
})
