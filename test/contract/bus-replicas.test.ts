import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { afterEach, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import { sleep } from '../helpers/gateway.ts'
import { freePort } from '../helpers/mosquitto.ts'
import { startNatsServer, uniquePrefix, type NatsServer } from '../helpers/nats.ts'

/**
 * Every KV bucket takes `busReplicas` copies (ARCHITECTURE.md §7): on a three-node cluster with
 * 3, a node's loss, even the one leading the bucket's stream, loses no acknowledged write. Before,
 * every bucket had one copy on one node, whatever the deployment's NATS config said.
 */
const ELECTION_MS = 60_000

describe('KV buckets on a three-node NATS cluster', () => {
  const closers: Array<() => Promise<unknown>> = []
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close().catch(() => {})
  })

  async function cluster(): Promise<NatsServer[]> {
    const name = `ubr${Math.random().toString(36).slice(2, 8)}`
    // JetStream clustering wants every node to have its routes from the start.
    const ports = [await freePort(), await freePort(), await freePort()]
    const routes = ports.map((p) => `nats://127.0.0.1:${p}`)
    const nodes = await Promise.all(
      ports.map((port) => startNatsServer({ cluster: { name, port, routes } }))
    )
    for (const n of nodes) closers.push(() => n.stop('SIGKILL'))
    return nodes
  }

  /** JetStream needs its meta leader before a bucket can be made: retry until it has one. */
  async function openBus(nodes: NatsServer[], prefix: string, replicas: number): Promise<Bus> {
    const bus = await retry(() =>
      connectNatsBus({ servers: nodes.map((n) => n.url), prefix, replicas })
    )
    closers.push(() => bus.close())
    return bus
  }
  async function retry<T>(fn: () => Promise<T>, ms = 20_000): Promise<T> {
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

  async function streamInfo(nodes: NatsServer[], stream: string) {
    const nc = await connect({ servers: nodes.map((n) => n.url) })
    try {
      return await (await jetstreamManager(nc)).streams.info(stream)
    } finally {
      await nc.close()
    }
  }

  it('keeps every acknowledged write when the node leading the bucket is killed', async () => {
    const nodes = await cluster()
    const prefix = uniquePrefix('r3')
    const bus = await openBus(nodes, prefix, 3)
    const kv = await retry(() => bus.kv('r3'))
    const COUNT = 200
    for (let i = 0; i < COUNT; i++) await kv.put(`k.${i}`, new TextEncoder().encode(String(i)))

    const info = await streamInfo(nodes, `KV_${prefix}_r3`)
    expect(info.config.num_replicas).toBe(3)
    const leader = nodes.find((n) => info.cluster?.leader === `${info.cluster?.name}-${n.port}`)
    expect(leader).toBeDefined()
    await leader!.stop('SIGKILL')

    const survivors = nodes.filter((n) => n !== leader)
    const reader = await openBus(survivors, prefix, 3)
    // The stream elects a new leader first: ~10 s here on nats-server 2.9, more on a loaded machine.
    // What is asserted is that no write is lost, not how fast the election is.
    const after = await retry(() => reader.kv('r3'), ELECTION_MS)
    const keys = await retry(async () => {
      const ks = await after.keys('k.>')
      if (ks.length < COUNT) throw new Error(`${ks.length} keys so far`)
      return ks
    }, ELECTION_MS)
    expect(new Set(keys).size).toBe(COUNT)
    const last = await after.get(`k.${COUNT - 1}`)
    expect(new TextDecoder().decode(last!.value)).toBe(String(COUNT - 1))
  }, 180_000)

  it('changes a bucket made with one copy to busReplicas at start', async () => {
    const nodes = await cluster()
    const prefix = uniquePrefix('r1to3')
    const before = await openBus(nodes, prefix, 1)
    await retry(() => before.kv('grow'))
    expect((await streamInfo(nodes, `KV_${prefix}_grow`)).config.num_replicas).toBe(1)
    const after = await openBus(nodes, prefix, 3)
    await retry(() => after.kv('grow'))
    expect((await streamInfo(nodes, `KV_${prefix}_grow`)).config.num_replicas).toBe(3)
  }, 90_000)

  // On a cluster (not a single server), a purge of another key under the filter (a queue entry
  // erased once acknowledged) moved the default listing's consumer past last values it had not
  // delivered yet (nats-server 2.9.10): the list came back short, often empty, and a gateway's
  // drain left queued messages undelivered (the chaos rolling-restart loss).
  it('lists every queue entry while others are erased and new ones written', async () => {
    const nodes = await cluster()
    const bus = await openBus(nodes, uniquePrefix('erase'), 3)
    const kv = await retry(() => bus.kv('erasing'))
    const value = new TextEncoder().encode('x')
    let short = 0
    for (let round = 0; round < 8; round++) {
      const kept: string[] = []
      const erased: string[] = []
      for (let i = 0; i < 300; i++) {
        await kv.put(`q${round}.k${i}`, value)
        ;(i % 3 === 0 ? kept : erased).push(`q${round}.k${i}`)
      }
      let writing = true
      const churn = Promise.all([
        (async () => {
          for (const key of erased) await kv.erase(key)
        })(),
        (async () => {
          for (let n = 0; writing; n++) await kv.put(`q${round}.new${n}`, value)
        })(),
      ])
      try {
        for (let listing = 0; listing < 5; listing++) {
          const listed = new Set(await kv.keys(`q${round}.>`, { withDeleted: true }))
          if (kept.some((k) => !listed.has(k))) short++
        }
      } finally {
        writing = false
        await churn
      }
    }
    expect(short).toBe(0)
  }, 120_000)

  it('names busReplicas when the cluster has fewer JetStream servers than it asks for', async () => {
    await using single = await startNatsServer()
    const bus = await connectNatsBus({
      servers: single.url,
      prefix: uniquePrefix('r3x'),
      replicas: 3,
    })
    closers.push(() => bus.close())
    const err = await bus.kv('nope').catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'bus_replicas' })
    expect((err as Error).message).toMatch(/busReplicas/)
  })
})
