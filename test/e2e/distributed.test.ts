import { randomBytes } from 'node:crypto'
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster, type Cluster } from '../../deploy/cluster.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { startMosquitto, type Mosquitto } from '../helpers/mosquitto.ts'
import { destroyBucketsWithPrefix, natsUrl, uniquePrefix } from '../helpers/nats.ts'

async function eventually<T>(
  fn: () => Promise<T | undefined>,
  timeoutMs: number,
  what: string
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await fn().catch(() => undefined)
    if (value !== undefined) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/**
 * The distributed fabric as production runs it: every service in its own process (two stores,
 * two gateways, two supervisors, one handshake API) on one real NATS and one real Postgres.
 */
describe('distributed fabric (one process per service, NATS + Postgres)', () => {
  const prefix = uniquePrefix('dist')
  const adminToken = 'ubt_dist_' + randomBytes(12).toString('hex')
  let testDb: TestDb
  let cluster: Cluster
  let upstreamBroker: Mosquitto
  const clients: mqtt.MqttClient[] = []

  beforeAll(async () => {
    // The stores migrate it themselves, two at once: the advisory lock must serialize them.
    testDb = await createTestDb('postgres', { migrate: false })
    upstreamBroker = await startMosquitto()
    cluster = await startCluster({
      natsUrl: natsUrl(),
      databaseUrl: testDb.databaseUrl!,
      busPrefix: prefix,
      adminToken,
      secretKey: randomBytes(32).toString('base64'),
      layout: { store: 2, gateway: 2, supervisor: 2, handshake: 1 },
      extraArgs: ['--lease-ttl-ms', '3000'],
    })
  }, 180_000)

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)))
    await cluster?.close()
    await upstreamBroker?.stop()
    await testDb?.close()
    await destroyBucketsWithPrefix(prefix)
  }, 60_000)

  const api = async (path: string, init: RequestInit = {}) => {
    const [handshake] = cluster.of('handshake')
    const res = await fetch(`${handshake!.httpUrl}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    })
    return { status: res.status, body: (await res.json()) as Record<string, any> }
  }

  const connect = async (url: string, clientId: string) => {
    const client = await mqtt.connectAsync(url, { clientId, reconnectPeriod: 200 })
    clients.push(client)
    return client
  }

  it('serves health on every process and answers as one instance', async () => {
    for (const member of cluster.members) {
      const res = await fetch(`${member.httpUrl}/healthz`)
      expect(res.status, `${member.service}#${member.index}`).toBe(200)
    }
    const ids = new Set(cluster.members.map((m) => m.process.ready.instanceId))
    expect(ids.size).toBe(1)
  })

  it('asks for the admin token on /metrics of every process, with or without the handshake API', async () => {
    for (const member of cluster.members) {
      const who = `${member.service}#${member.index}`
      const bare = await fetch(`${member.httpUrl}/metrics`)
      expect(bare.status, who).toBe(401)
      expect(await bare.json(), who).toMatchObject({ error: { code: 'unauthorized' } })
      const wrong = await fetch(`${member.httpUrl}/metrics`, {
        headers: { authorization: `Bearer ${adminToken}x` },
      })
      expect(wrong.status, who).toBe(401)
      const ok = await fetch(`${member.httpUrl}/metrics`, {
        headers: { authorization: `Bearer ${adminToken}` },
      })
      expect(ok.status, who).toBe(200)
      expect(await ok.text(), who).toMatch(/^# HELP /m)
    }
  })

  it('bridges a bound namespace from either gateway to a plain MQTT upstream, and fails over when its supervisor is killed', async () => {
    const created = await api('/api/v1/upstreams', {
      method: 'POST',
      body: JSON.stringify({
        kind: 'mqtt',
        host: 'mqtt://127.0.0.1',
        brokerPort: upstreamBroker.port,
      }),
    })
    expect(created.status).toBe(201)
    const id = created.body.id as string
    expect(created.body.status).toBe('Approved')
    expect(
      (
        await api(`/api/v1/upstreams/${id}/bindings`, {
          method: 'PUT',
          body: JSON.stringify([{ source: 'plant1', target: 'acme/plant1' }]),
        })
      ).status
    ).toBe(200)
    expect((await api(`/api/v1/upstreams/${id}/activate`, { method: 'POST' })).status).toBe(200)

    const cloud = await connect(upstreamBroker.url, 'cloud-sub')
    const seen = new Map<string, number>()
    cloud.on('message', (topic, payload) => {
      const key = `${topic} ${payload.toString()}`
      seen.set(key, (seen.get(key) ?? 0) + 1)
    })
    await cloud.subscribeAsync('acme/#', { qos: 1 })

    const link = await eventually(
      async () => {
        const { body } = await api(`/api/v1/upstreams/${id}`)
        return body.link?.state === 'Forwarding' ? body.link : undefined
      },
      30_000,
      'the link to forward'
    )
    const [gw1, gw2] = cluster.of('gateway')
    const pub1 = await connect(gw1!.mqttUrl!, 'plant-pub-1')
    const pub2 = await connect(gw2!.mqttUrl!, 'plant-pub-2')
    const expected: string[] = []
    const publishBatch = async (tag: string, count: number) => {
      for (let i = 0; i < count; i++) {
        const via = i % 2 === 0 ? pub1 : pub2
        const payload = `${tag}-${i}`
        await via.publishAsync(`plant1/line${i % 3}/temp`, payload, { qos: 1 })
        expected.push(`acme/plant1/line${i % 3}/temp ${payload}`)
      }
    }
    await publishBatch('before', 60)
    await eventually(
      async () => (expected.every((k) => seen.has(k)) ? true : undefined),
      20_000,
      'first batch'
    )

    // Kill the owning supervisor with SIGKILL: its lease expires and the other takes over.
    const owner = cluster
      .of('supervisor')
      .find((m) => String(link.owner).includes(`-${m.process.child.pid}-`))
    expect(owner, `owner ${link.owner} is one of the supervisors`).toBeDefined()
    await owner!.process.kill()
    await publishBatch('during-failover', 60)
    await eventually(
      async () => {
        const { body } = await api(`/api/v1/upstreams/${id}`)
        return body.link?.state === 'Forwarding' && body.link.owner !== link.owner
          ? true
          : undefined
      },
      30_000,
      'another supervisor to take the link'
    )
    await eventually(
      async () => (expected.every((k) => seen.has(k)) ? true : undefined),
      30_000,
      'every message'
    )
    const missing = expected.filter((k) => !seen.has(k))
    expect(missing).toEqual([])
  }, 120_000)
})
