import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus, createInProcessHub } from '../../services/common/bus/in-process.ts'
import { silentLogger } from '../../services/common/log.ts'
import type { StoreClient } from '../../services/contracts/store-client.ts'
import type { TeEntity } from '../../services/contracts/te-entities.ts'
import { createStoreClient, startStore } from '../../services/store/index.ts'
import { acceptedBridge } from '../gateway/fixture.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { connectMqtt, eventually, startTestGateway, type TestGateway } from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'

/**
 * Downstreams' thin-edge.io entities in our twin (issue 11), on a real gateway and store: what a
 * downstream's bridge publishes under its mount is listed as that downstream's, keyed apart from
 * another downstream's and from ours; nobody else's messages count; a mount stays inside the
 * grants; entities go with a deregistration, a mount taken back and a revoked request.
 */
describe("downstreams' thin-edge.io entities in the twin", () => {
  let bus: Bus
  let testDb: TestDb
  let store: Awaited<ReturnType<typeof startStore>>
  let gw: TestGateway
  let call: StoreClient['call']
  const clients: MqttClient[] = []
  const WAIT = 15_000 // the gateway reads the mounts every 2 s

  beforeAll(async () => {
    bus = createInProcessBus({ prefix: uniquePrefix('te-down'), hub: createInProcessHub() })
    testDb = await createTestDb('pglite')
    store = await startStore({ bus, db: testDb.db, log: silentLogger() })
    gw = await startTestGateway({ bus, gatewayId: 'a' })
    call = createStoreClient({ bus }).call
  }, 60_000)
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)))
    await gw?.close()
    await store?.close()
    await testDb?.close()
    await bus?.close()
  })

  /** A downstream's bridge logged in with its request's credentials. */
  async function downstream(grants: string[], target: string | null) {
    const d = await acceptedBridge(bus, grants)
    if (target) {
      const set = await call('te.mount.set', {
        requestId: d.requestId,
        mounts: [{ target, path: '' }],
      })
      expect(set.mounts).toEqual([{ target, path: '' }])
    }
    const client = await connectMqtt(gw.url, {
      clientId: d.instanceId,
      username: d.instanceId,
      password: d.secret,
    })
    clients.push(client)
    const pub = (topic: string, body: unknown) =>
      client.publishAsync(topic, body === '' ? '' : JSON.stringify(body), { qos: 1, retain: true })
    return { ...d, client, pub }
  }

  const LINK = 'device/main/service/ub-link'
  /** The entities, the links' own service (asserted on its own) left out. */
  const list = async (downstream?: string): Promise<TeEntity[]> =>
    (await call('te.entity.list', downstream === undefined ? {} : { downstream })).items.filter(
      (e) => e['@topic-id'] !== LINK
    )
  const link = async (downstream: string) =>
    (await call('te.entity.get', { topicId: LINK, downstream }).catch(() => null))?.health
  const ids = (items: TeEntity[]) => items.map((e) => e['@topic-id'])

  it('lists the same child of two downstreams apart from each other and from ours', async () => {
    const one = await downstream(['acme/site1'], 'acme/site1/te')
    const two = await downstream(['acme/site2'], 'acme/site2/te')
    const user = await connectMqtt(gw.url)
    clients.push(user)
    await one.pub('acme/site1/te/device/child01//', { '@type': 'child-device', name: 'one' })
    await one.pub('acme/site1/te/device/child01/service/agent', {
      '@type': 'service',
      '@parent': 'device/child01//',
    })
    await one.pub('acme/site1/te/device/child01/service/agent/status/health', { status: 'up' })
    await two.pub('acme/site2/te/device/child01//', { '@type': 'child-device', name: 'two' })
    // Under a mount, but not published by its downstream's bridge: not that downstream's.
    await user.publishAsync(
      'acme/site1/te/device/intruder//',
      JSON.stringify({ '@type': 'child-device' }),
      { qos: 1, retain: true }
    )
    await user.publishAsync('te/device/child01//', JSON.stringify({ '@type': 'child-device' }), {
      qos: 1,
      retain: true,
    })
    await eventually(async () => {
      const all = await list()
      const health = all.find((e) => e.downstream === one.instanceId && e.health === 'up')
      return all.length >= 4 && health !== undefined
    }, WAIT)

    // Live as well: a user's message under the mount before the bridge's next one is not fed.
    await user.publishAsync(
      'acme/site1/te/device/intruder2//',
      JSON.stringify({ '@type': 'child-device' }),
      { qos: 1, retain: true }
    )
    await one.pub('acme/site1/te/device/child02//', { '@type': 'child-device' })
    await eventually(async () => ids(await list(one.instanceId)).includes('device/child02//'), WAIT)
    await one.pub('acme/site1/te/device/child02//', '')
    await eventually(async () => (await list(one.instanceId)).length === 2, WAIT)

    expect(ids(await list(''))).toEqual(['device/child01//'])
    expect((await list(''))[0]).not.toHaveProperty('downstream')
    const ofOne = await list(one.instanceId)
    expect(ofOne.map((e) => [e['@topic-id'], e.downstream, e.topic, e.health])).toEqual([
      ['device/child01//', one.instanceId, 'acme/site1/te/device/child01//', null],
      [
        'device/child01/service/agent',
        one.instanceId,
        'acme/site1/te/device/child01/service/agent',
        'up',
      ],
    ])
    const ofTwo = await call('te.entity.get', {
      topicId: 'device/child01//',
      downstream: two.instanceId,
    })
    expect(ofTwo).toMatchObject({ topic: 'acme/site2/te/device/child01//', twin: { name: 'two' } })
    expect(ids(await list())).not.toContain('device/intruder//')
    expect(ids(await list())).not.toContain('device/intruder2//')
    // Paged across the downstreams: every entity once, ours first.
    const seen: string[] = []
    let cursor: string | undefined
    do {
      const page = await call('te.entity.list', { limit: 1, ...(cursor ? { cursor } : {}) })
      for (const e of page.items)
        if (e['@topic-id'] !== LINK) seen.push(`${e.downstream ?? ''}:${e['@topic-id']}`)
      cursor = page.next ?? undefined
    } while (cursor)
    expect(seen).toHaveLength(new Set(seen).size)
    expect(seen[0]).toBe(':device/child01//')
    expect(seen).toHaveLength(4)

    // The link, as this gateway sees the downstream's bridge connection.
    expect(await link(one.instanceId)).toBe('up')
    expect(
      await call('te.entity.get', { topicId: LINK, downstream: one.instanceId })
    ).toMatchObject({
      '@type': 'service',
      '@parent': 'device/main//',
      topic: `acme/site1/te/${LINK}`,
    })

    // A deregistration on the downstream (mirrored here) removes its entity and descendants.
    await one.pub('acme/site1/te/device/child01//', '')
    await eventually(async () => (await list(one.instanceId)).length === 0, WAIT)
    expect(ids(await list(two.instanceId))).toEqual(['device/child01//'])
    // A mount taken back takes its entities along.
    const gone = await call('te.mount.set', { requestId: two.requestId, mounts: [] })
    expect(gone).toMatchObject({ changed: true, removed: 2 }) // its child and its link
    expect((await call('te.entity.list', { downstream: two.instanceId })).items).toEqual([])
  }, 60_000)

  it('keeps a mount only inside the grants, and at most 16', async () => {
    const three = await downstream(['acme/site3'], null)
    const set = await call('te.mount.set', {
      requestId: three.requestId,
      mounts: [
        { target: 'acme/site1/te', path: '' },
        { target: 'acme/site3/te', path: '' },
      ],
    })
    expect(set.mounts).toEqual([{ target: 'acme/site3/te', path: '' }])
    expect(set.refused).toEqual([
      { mount: { target: 'acme/site1/te', path: '' }, reason: 'outside the grants' },
    ])
    const many = Array.from({ length: 17 }, (_, i) => ({ target: `acme/site3/t${i}`, path: '' }))
    await expect(
      call('te.mount.set', { requestId: three.requestId, mounts: many })
    ).rejects.toMatchObject({ code: 'invalid_request' })
    // The store never lists an entity for a downstream without a mount.
    await expect(
      call('te.entity.upsert', {
        topicId: 'device/x//',
        downstream: 'nobody',
        type: 'child-device',
        parent: null,
        twin: {},
      })
    ).rejects.toMatchObject({ code: 'not_found' })
  }, 30_000)

  it('reads what was retained before the mount came, and forgets a revoked downstream', async () => {
    const four = await downstream(['acme/site4'], null)
    await four.pub('acme/site4/te/device/early//', { '@type': 'child-device' })
    await call('te.mount.set', {
      requestId: four.requestId,
      mounts: [{ target: 'acme/site4/te', path: '' }],
    })
    await eventually(async () => ids(await list(four.instanceId)).includes('device/early//'), WAIT)
    expect(await link(four.instanceId)).toBe('up')
    await four.client.endAsync(true)
    await eventually(async () => (await link(four.instanceId)) === 'down', WAIT)
    await call('event', {
      machine: 'request',
      id: four.requestId,
      event: { type: 'request.revoke' },
      actor: { kind: 'operator' },
    })
    expect((await call('te.entity.list', { downstream: four.instanceId })).items).toEqual([])
    expect((await call('te.mount.list', {})).items.map((i) => i.instanceId)).not.toContain(
      four.instanceId
    )
  }, 30_000)
})
