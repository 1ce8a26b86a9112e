import { jetstreamManager } from '@nats-io/jetstream'
import { connect as natsConnect } from '@nats-io/transport-node'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { describeCluster, startCluster, type Cluster } from '../../deploy/cluster.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { collect, connectMqtt, eventually } from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'

/**
 * deploy/cluster.ts as an operator runs it: its own three-node NATS cluster with JetStream, two
 * processes of each service on one Postgres, and the TCP balancer in front of the gateways' MQTT.
 */
describe('deploy/cluster.ts: own NATS cluster, two replicas each, MQTT behind the balancer', () => {
  const prefix = uniquePrefix('launcher')
  const adminToken = 'ubt_launch_' + randomBytes(12).toString('hex')
  let testDb: TestDb
  let cluster: Cluster
  const clients: MqttClient[] = []

  beforeAll(async () => {
    testDb = await createTestDb('postgres', { migrate: false })
    cluster = await startCluster({
      databaseUrl: testDb.databaseUrl!,
      busPrefix: prefix,
      adminToken,
      secretKey: randomBytes(32).toString('base64'),
    })
  }, 150_000)

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)))
    await cluster?.close()
    await testDb?.close()
  }, 60_000)

  const viaBalancer = async (clientId: string) => {
    const client = await connectMqtt(cluster.balancer!.url(), { clientId })
    clients.push(client)
    return client
  }

  it('runs three NATS nodes from their own config files, and the buckets keep three copies', async () => {
    const nodes = cluster.nats!.nodes
    expect(nodes).toHaveLength(3)
    expect(cluster.natsUrls.split(',')).toEqual(nodes.map((n) => n.url))
    for (const node of nodes) {
      const conf = readFileSync(join(node.dir, 'nats.conf'), 'utf8')
      expect(conf).toContain(`listen: "127.0.0.1:${node.clientPort}"`)
      expect(conf).toContain(`store_dir: "${join(node.dir, 'jetstream')}"`)
      for (const peer of nodes) expect(conf).toContain(`nats://127.0.0.1:${peer.clusterPort}`)
    }
    const nc = await natsConnect({ servers: cluster.natsUrls.split(',') })
    try {
      const jsm = await jetstreamManager(nc)
      const buckets: Array<[string, number]> = []
      for await (const info of jsm.streams.list()) {
        if (info.config.name.startsWith(`KV_${prefix}_`)) {
          buckets.push([info.config.name, info.config.num_replicas])
        }
      }
      expect(buckets.length).toBeGreaterThan(3)
      expect(buckets.filter(([, replicas]) => replicas !== 3)).toEqual([])
    } finally {
      await nc.close()
    }
    const printed = describeCluster(cluster)
    expect(printed).toContain(`mqtt  ${cluster.balancer!.url()}`)
    expect(printed).toContain(`nats  ${cluster.natsUrls}`)
    for (const m of cluster.of('handshake')) expect(printed).toContain(`${m.httpUrl}/api/v1`)
  })

  it('lists every process from GET /api/v1/cluster on either handshake API', async () => {
    const pids = cluster.members.map((m) => m.process.child.pid).sort()
    expect(pids).toHaveLength(8)
    for (const handshake of cluster.of('handshake')) {
      const view = async () => {
        const res = await fetch(`${handshake.httpUrl}/api/v1/cluster`, {
          headers: { authorization: `Bearer ${adminToken}` },
        })
        expect(res.status).toBe(200)
        return (await res.json()) as { counts: unknown; members: Array<{ pid: number }> }
      }
      // A record renewed late on a loaded machine is missing for a moment: asked again.
      await eventually(
        async () =>
          (await view()).members
            .map((m) => m.pid)
            .sort()
            .join() === pids.join(),
        15_000
      ).catch(() => {})
      const body = await view()
      expect(body.counts).toEqual({ store: 2, gateway: 2, supervisor: 2, handshake: 2 })
      expect(body.members.map((m) => m.pid).sort()).toEqual(pids)
    }
  })

  it('keeps a console session made on one handshake API good on the other, and ends it on both', async () => {
    const [one, two] = cluster.of('handshake')
    const signIn = await fetch(`${one!.httpUrl}/console/session`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ token: adminToken }),
    })
    expect(signIn.status).toBe(200)
    const cookie = signIn.headers.get('set-cookie')!.split(';')[0]!
    const { csrfToken } = (await signIn.json()) as { csrfToken: string }
    // A load balancer may send the next request to the other replica.
    const onTwo = () => fetch(`${two!.httpUrl}/api/v1/upstreams`, { headers: { cookie } })
    expect((await onTwo()).status).toBe(200)
    const signOut = await fetch(`${two!.httpUrl}/console/session`, {
      method: 'DELETE',
      headers: { cookie, 'x-csrf-token': csrfToken },
    })
    expect(signOut.status).toBe(204)
    const onOne = () => fetch(`${one!.httpUrl}/api/v1/upstreams`, { headers: { cookie } })
    await eventually(async () => (await onOne()).status === 401, 5_000)
    expect((await onOne()).status).toBe(401)
  })

  it('puts two clients on different gateways and carries a message from one to the other', async () => {
    const publisher = await viaBalancer('launcher-pub')
    const subscriber = await viaBalancer('launcher-sub')
    expect(cluster.balancer!.stats().backends.map((b) => b.open)).toEqual([1, 1])
    const got = collect(subscriber)
    await subscriber.subscribeAsync('launcher/across', { qos: 1 })
    // The subscription reaches the other gateway over NATS: publish until one arrives.
    await eventually(async () => {
      await publisher.publishAsync('launcher/across', 'hello', { qos: 1 })
      return got.messages.length > 0
    }, 10_000)
    expect(got.messages[0]).toMatchObject({ topic: 'launcher/across', payload: 'hello' })
  })

  it('skips a killed gateway: its client is dropped, a new connection reaches the live one', async () => {
    const [publisher, subscriber] = clients as [MqttClient, MqttClient]
    const dropped = new Promise<void>((resolve) => publisher.once('close', () => resolve()))
    await cluster.of('gateway')[0]!.process.kill()
    await dropped // publisher was on gateway#0: the balancer closed its side too
    await eventually(() => cluster.balancer!.stats().backends[0]!.open === 0)
    expect(subscriber.connected).toBe(true)

    // Gateway#0 has the fewest open connections, so it is tried first: refused, marked down.
    const late = await viaBalancer('launcher-late')
    const [dead, live] = cluster.balancer!.stats().backends as [any, any]
    expect(dead).toMatchObject({ up: false, open: 0, failures: 1 })
    expect(live.open).toBe(2)
    // Down: the next connection goes straight to the live gateway.
    await viaBalancer('launcher-later')
    expect(cluster.balancer!.stats().backends[0]!.failures).toBe(1)
    expect(cluster.balancer!.stats().backends[1]!.open).toBe(3)

    const got = collect(subscriber)
    await late.publishAsync('launcher/across', 'after the kill', { qos: 1 })
    await eventually(() => got.messages.some((m) => m.payload === 'after the kill'), 10_000)
  })
})
