import { sql } from 'drizzle-orm'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { DbKind } from '../../db/client.ts'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { silentLogger } from '../../services/common/log.ts'
import {
  createStoreClient,
  startStore,
  TE_ENTITIES_FULL,
  TE_MAX_ENTITIES,
  type Store,
  type StoreClient,
} from '../../services/store/index.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { uniquePrefix } from '../helpers/nats.ts'

/** The `te.entity.*` verbs over the bus, against PGlite and real Postgres. */
export function teEntitiesContract(kind: DbKind): void {
  describe(`thin-edge.io digital twin on ${kind}`, () => {
    let t: TestDb
    let bus: Bus
    let store: Store
    let client: StoreClient

    beforeAll(async () => {
      t = await createTestDb(kind)
      bus = createInProcessBus({ prefix: uniquePrefix('twin') })
      store = await startStore({ bus, db: t.db, log: silentLogger() })
      client = createStoreClient({ bus })
    })
    afterAll(async () => {
      await store?.close()
      await bus?.close()
      await t?.close()
    })

    const register = (
      topicId: string,
      type: 'device' | 'child-device' | 'service',
      parent: string | null,
      twin = {}
    ) => client.call('te.entity.upsert', { topicId, type, parent, twin })
    const ids = async (query = {}) =>
      (await client.call('te.entity.list', query)).items.map((e) => e['@topic-id'])

    it('registers, merges twin keys on re-registration, and reads back thin-edge fields', async () => {
      expect(await register('device/main//', 'device', null, { name: 'gw' })).toEqual({
        created: true,
      })
      expect(
        await register('device/c1//', 'child-device', 'device/main//', { name: 'c1' })
      ).toEqual({
        created: true,
      })
      await client.call('te.entity.upsert', {
        topicId: 'device/c1',
        type: 'child-device',
        parent: 'device/main',
        externalId: 'ext-c1',
        twin: { model: 'x' },
      })
      const c1 = await client.call('te.entity.get', { topicId: 'device/c1//' })
      expect(c1).toMatchObject({
        '@topic-id': 'device/c1//',
        '@type': 'child-device',
        '@parent': 'device/main//',
        '@id': 'ext-c1',
        health: null,
        lastMeasurementAt: null,
        alarms: {},
        commands: {},
        twin: { name: 'c1', model: 'x' },
      })
      const main = await client.call('te.entity.get', { topicId: 'device/main//' })
      expect(main).not.toHaveProperty('@parent')
    })

    it('records health, measurements, alarms, commands and twin fragments', async () => {
      const id = 'device/c1//'
      const observe = (o: object) =>
        client.call('te.entity.observe', { topicId: id, ...o } as never)
      expect(await observe({ kind: 'health', status: 'up' })).toEqual({ found: true })
      await observe({ kind: 'measurement', at: '2026-01-02T03:04:05.000Z' })
      await observe({ kind: 'measurement', at: '2026-01-01T00:00:00.000Z' }) // older: kept later one
      await observe({
        kind: 'alarm',
        alarmType: 'temp',
        alarm: { severity: 'major', text: 'hot', time: null },
      })
      await observe({
        kind: 'alarm',
        alarmType: 'door',
        alarm: { severity: null, text: null, time: null },
      })
      await observe({ kind: 'alarm', alarmType: 'door', alarm: null })
      await observe({ kind: 'command', command: 'restart/1', status: 'executing' })
      await observe({ kind: 'command', command: 'restart/2', status: 'init' })
      await observe({ kind: 'command', command: 'restart/2', status: null })
      await observe({ kind: 'twin', fragment: 'hardware', value: { serial: '42' } })
      await observe({ kind: 'twin', fragment: 'model', value: null })
      const c1 = await client.call('te.entity.get', { topicId: id })
      expect(c1).toMatchObject({
        health: 'up',
        lastMeasurementAt: '2026-01-02T03:04:05.000Z',
        alarms: { temp: { severity: 'major', text: 'hot', time: null } },
        commands: { 'restart/1': 'executing' },
        twin: { name: 'c1', hardware: { serial: '42' } },
      })
      expect(Object.keys(c1.alarms)).toEqual(['temp'])
      expect(
        await client.call('te.entity.observe', {
          kind: 'health',
          topicId: 'device/none//',
          status: 'up',
        })
      ).toEqual({ found: false })
    })

    it("lists by thin-edge's root, parent and type filters, paged by topic id", async () => {
      await register('device/c1/service/agent', 'service', 'device/c1//')
      await register('device/c2//', 'child-device', 'device/c1//')
      await register('device/c2/service/s', 'service', 'device/c2//')
      await register('device/c3//', 'child-device', 'device/main//')
      expect(await ids({ root: 'device/c1//' })).toEqual([
        'device/c1//',
        'device/c1/service/agent',
        'device/c2//',
        'device/c2/service/s',
      ])
      expect(await ids({ parent: 'device/main' })).toEqual(['device/c1//', 'device/c3//'])
      expect(await ids({ type: 'service' })).toEqual([
        'device/c1/service/agent',
        'device/c2/service/s',
      ])
      const first = await client.call('te.entity.list', { limit: 2 })
      expect(first.items).toHaveLength(2)
      const second = await client.call('te.entity.list', { limit: 10, cursor: first.next! })
      expect([...first.items, ...second.items].map((e) => e['@topic-id'])).toEqual(await ids())
      expect(second.next).toBeNull()
      await expect(client.call('te.entity.list', { root: 'device/nope//' })).rejects.toMatchObject({
        code: 'not_found',
      })
      await expect(
        client.call('te.entity.list', { root: 'device/c1//', parent: 'device/main//' })
      ).rejects.toMatchObject({ code: 'invalid_request' })
      await expect(client.call('te.entity.get', { topicId: 'device/+//' })).rejects.toMatchObject({
        code: 'invalid_request',
      })
    })

    it('deletes an entity with its descendants, and only those', async () => {
      const { deleted } = await client.call('te.entity.delete', { topicId: 'device/c1//' })
      expect(deleted).toEqual([
        'device/c1//',
        'device/c1/service/agent',
        'device/c2//',
        'device/c2/service/s',
      ])
      expect(await ids()).toEqual(['device/c3//', 'device/main//'])
      await expect(client.call('te.entity.get', { topicId: 'device/c2//' })).rejects.toMatchObject({
        code: 'not_found',
      })
      expect(await client.call('te.entity.delete', { topicId: 'device/c1//' })).toEqual({
        deleted: [],
      })
    })

    it(`refuses a new entity past ${TE_MAX_ENTITIES}, still updating known ones`, async () => {
      const have = (await ids()).length
      await t.db.execute(
        sql`insert into te_entities (topic_id, type, parent)
            select 'device/bulk' || i || '//', 'child-device', 'device/main//'
            from generate_series(1, ${TE_MAX_ENTITIES - have}) as i`
      )
      await expect(
        register('device/one-more//', 'child-device', 'device/main//')
      ).rejects.toMatchObject({
        code: TE_ENTITIES_FULL,
      })
      expect(await register('device/c3//', 'child-device', 'device/main//', { x: 1 })).toEqual({
        created: false,
      })
      await t.db.execute(sql`delete from te_entities where topic_id like 'device/bulk%'`)
      expect(await register('device/one-more//', 'child-device', 'device/main//')).toEqual({
        created: true,
      })
    })
  })
}
