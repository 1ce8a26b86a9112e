import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { silentLogger } from '../../services/common/log.ts'
import { createStoreClient, type StoreClient } from '../../services/contracts/store-client.ts'
import { transitionSubject } from '../../services/contracts/store.ts'
import { startStore } from '../../services/store/index.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { connectMqtt, sleep, startTestGateway, type TestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus, uniquePrefix } from '../helpers/nats.ts'
import { acceptedBridge } from './fixture.ts'

const actor = { kind: 'operator' as const }

/**
 * A real store client whose next `request.authenticate` answer is held after the store gave it:
 * the answer is computed, and in flight, while the test revokes.
 */
function holdingStore(bus: Bus) {
  const real = createStoreClient({ bus, timeoutMs: 2_000 })
  let next: { answered: () => void; release: Promise<void> } | undefined
  const store: StoreClient = {
    async call(verb, input) {
      const out = await real.call(verb, input)
      const held = verb === 'request.authenticate' ? next : undefined
      if (held) {
        next = undefined
        held.answered()
        await held.release
      }
      return out
    },
  }
  return {
    store,
    /** Hold the next answer; `answered` resolves once the store has given it. */
    holdNext() {
      let release!: () => void
      let answered!: () => void
      const gotAnswer = new Promise<void>((r) => (answered = r))
      next = { answered, release: new Promise<void>((r) => (release = r)) }
      return { answered: gotAnswer, release }
    },
  }
}

/** The bus as a gateway that never hears request transitions sees it (a missed event). */
function deafToRevocations(bus: Bus): Bus {
  return Object.assign(Object.create(bus) as Bus, {
    subscribe: ((subject: string, ...rest: unknown[]) =>
      subject.startsWith('evt.request.')
        ? Promise.resolve({ unsubscribe: async () => {} })
        : (bus.subscribe as (...a: unknown[]) => unknown).call(
            bus,
            subject,
            ...rest
          )) as Bus['subscribe'],
  })
}

describe('revocation wins every race (real store on Postgres, NATS)', () => {
  let bus: Bus
  let testDb: TestDb
  let store: Awaited<ReturnType<typeof startStore>>
  let gw: TestGateway
  let deaf: TestGateway
  let holding: ReturnType<typeof holdingStore>
  const clients: MqttClient[] = []
  const call = () => createStoreClient({ bus }).call
  const revoke = (id: string) =>
    call()('event', { machine: 'request', id, event: { type: 'request.revoke' }, actor })
  const login = (gateway: TestGateway, b: { instanceId: string; secret: string }) =>
    connectMqtt(gateway.url, { clientId: b.instanceId, username: b.instanceId, password: b.secret })

  beforeAll(async () => {
    bus = await createTestNatsBus({ prefix: uniquePrefix('revoke') })
    testDb = await createTestDb('postgres')
    store = await startStore({ bus, db: testDb.db, log: silentLogger() })
    holding = holdingStore(bus)
    gw = await startTestGateway({
      bus,
      gatewayId: 'gw',
      store: holding.store,
      bridgeRevalidateMs: 0,
    })
    deaf = await startTestGateway({
      bus: deafToRevocations(bus),
      gatewayId: 'deaf',
      bridgeRevalidateMs: 250,
    })
  })
  afterAll(async () => {
    for (const c of clients) c.end(true)
    await gw?.close()
    await deaf?.close()
    await store?.close()
    await testDb?.close()
    await bus?.close()
  })

  it('refuses a bridge whose positive answer was in flight when the revoke landed', async () => {
    const bridge = await acceptedBridge(bus, ['plant1'])
    let heard!: () => void
    const wasHeard = new Promise<void>((r) => (heard = r))
    const sub = await bus.subscribe(transitionSubject('request', bridge.requestId), () => heard())
    const held = holding.holdNext()
    const connecting = login(gw, bridge).then(
      (c) => (clients.push(c), 'admitted'),
      (err: { code?: number }) => err.code
    )
    await held.answered // the store said yes, before the revoke
    await revoke(bridge.requestId)
    await wasHeard
    await sub.unsubscribe()
    await sleep(100) // the gateway heard it too (same subject, same server)
    held.release()
    expect(await connecting).toBe(4)
    await expect(login(gw, bridge)).rejects.toMatchObject({ code: 4 })
  })

  it('disconnects a connected bridge within a second and refuses it after, cache or not', async () => {
    const bridge = await acceptedBridge(bus, ['plant1'])
    ;(await login(gw, bridge)).end(true)
    const before = gw.stats()
    const c = await login(gw, bridge) // answered from the cache
    clients.push(c)
    expect(gw.stats().authCacheHits).toBe(before.authCacheHits + 1)
    const closed = new Promise<number>((r) => c.once('close', () => r(Date.now())))
    const at = Date.now()
    await revoke(bridge.requestId)
    expect((await closed) - at).toBeLessThan(1_000)
    await expect(login(gw, bridge)).rejects.toMatchObject({ code: 4 })
    expect(gw.stats().revokedDisconnects).toBeGreaterThan(before.revokedDisconnects)
  })

  it('re-checks connected bridges periodically, so a missed revocation event still ends one', async () => {
    const bridge = await acceptedBridge(bus, ['plant1'])
    const c = await login(deaf, bridge)
    clients.push(c)
    const closed = new Promise<number>((r) => c.once('close', () => r(Date.now())))
    const at = Date.now()
    await revoke(bridge.requestId)
    expect((await closed) - at).toBeLessThan(1_000) // bridgeRevalidateMs 250
    expect(deaf.stats().revokedDisconnects).toBe(1)
  })
})
