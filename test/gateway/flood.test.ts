import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { silentLogger } from '../../services/common/log.ts'
import { createStoreClient, type StoreClient } from '../../services/contracts/store-client.ts'
import { hashPassword } from '../../services/gateway/index.ts'
import { startStore } from '../../services/store/index.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { acceptedBridge } from './fixture.ts'
import { connackAfter, proxyV1 } from './front-door.ts'

const FLOOD = 500
const FLOODER = proxyV1('198.51.100.7') // every bad CONNECT comes from here (through the proxy)

describe('a flood of bad CONNECTs', () => {
  let bus: Bus
  let testDb: TestDb
  let store: Awaited<ReturnType<typeof startStore>>
  let gw: TestGateway
  const storeCalls = { authenticate: 0 }

  beforeAll(async () => {
    bus = createInProcessBus({ prefix: uniquePrefix('flood') })
    testDb = await createTestDb('postgres')
    store = await startStore({ bus, db: testDb.db, log: silentLogger() })
    const real = createStoreClient({ bus, timeoutMs: 5_000 })
    const counting: StoreClient = {
      call(verb, input) {
        if (verb === 'request.authenticate') storeCalls.authenticate++
        return real.call(verb, input)
      },
    }
    // The real cost (N=2^15, 32 MiB): what a flood would make the gateway pay.
    const users = await Promise.all(
      ['alice', 'bob', 'carol'].map(async (username) => ({
        username,
        passwordHash: await hashPassword(`${username}-secret`),
      }))
    )
    gw = await startTestGateway({ bus, store: counting, users, trustProxy: true })
  })
  afterAll(async () => {
    await gw?.close()
    await store?.close()
    await testDb?.close()
    await bus?.close()
  })

  const user = (name: string, from: string) =>
    timed(() =>
      connackAfter(
        gw.ports.mqtt,
        proxyV1(from),
        {
          username: name,
          password: Buffer.from(`${name}-secret`),
        },
        { timeoutMs: 20_000 }
      )
    )

  it('costs a bounded number of checks, and a good client still gets in promptly', async () => {
    const bridge = await acceptedBridge(bus, ['plant1'])
    const bridgeLogin = (from: string) =>
      timed(() =>
        connackAfter(
          gw.ports.mqtt,
          proxyV1(from),
          {
            clientId: bridge.instanceId,
            username: bridge.instanceId,
            password: Buffer.from(bridge.secret),
          },
          { timeoutMs: 20_000 }
        )
      )
    // Quiet baselines, measured now on this machine: a cold scrypt login, a cold bridge login.
    const quietUser = await user('bob', '198.51.100.8')
    expect(quietUser.outcome).toBe(0)
    const quietBridge = await bridgeLogin('198.51.100.9')
    expect(quietBridge.outcome).toBe(0)
    const scryptBefore = gw.stats().scryptChecks
    const storeBefore = storeCalls.authenticate

    // Half wrong local-user passwords (scrypt), half unknown bridges (a store query), all distinct.
    const flood = Array.from({ length: FLOOD }, (_, i) =>
      connackAfter(
        gw.ports.mqtt,
        FLOODER,
        i % 2
          ? { username: 'alice', password: Buffer.from(`guess-${i}`) }
          : { username: `UB_nobody${i}`, password: Buffer.from(`guess-${i}`) },
        { timeoutMs: 20_000 }
      )
    )
    await new Promise((r) => setTimeout(r, 50)) // the flood is in flight
    const [floodedUser, floodedBridge] = await Promise.all([
      user('carol', '198.51.100.8'),
      // A second login of the same bridge: a new source, and answered from the cache.
      bridgeLogin('198.51.100.10'),
    ])
    const outcomes = await Promise.all(flood)

    expect(floodedUser.outcome).toBe(0)
    expect(floodedBridge.outcome).toBe(0)
    // Generous: twenty quiet logins' worth, or eight seconds (the flood's own 500 sockets are in
    // this process too, and the machine is shared), whichever is more.
    expect(floodedUser.ms).toBeLessThan(Math.max(8_000, 20 * quietUser.ms))
    expect(floodedBridge.ms).toBeLessThan(Math.max(8_000, 20 * quietBridge.ms))
    // Every bad CONNECT got an answer: refused credentials (4), or closed for now (rate limited:
    // no CONNACK, so that a client retries), never left waiting.
    expect(outcomes.every((o) => o === 'closed' || o === 4)).toBe(true)
    // The flooder's checks are bounded by its burst (50), not by how many it sent.
    const scrypts = gw.stats().scryptChecks - scryptBefore
    const queries = storeCalls.authenticate - storeBefore
    expect(scrypts + queries).toBeLessThanOrEqual(50 + 1) // + carol's scrypt
    const stats = gw.stats()
    expect(stats.connectRateLimited).toBeGreaterThan(FLOOD / 2)
    const text = await gw.metrics.metrics()
    expect(text).toMatch(/ub_gateway_connect_rate_limited_total\{gateway="[^"]+"\} [1-9]/)
    expect(text).toMatch(/ub_gateway_scrypt_checks_total\{gateway="[^"]+"\} [1-9]/)
  })

  it('answers a repeated bad password from the cache: one check, not one per CONNECT', async () => {
    const before = { scrypt: gw.stats().scryptChecks, store: storeCalls.authenticate }
    for (let i = 0; i < 10; i++) {
      const from = `192.0.2.${i + 1}` // other sources, so the budget is not what stops them
      const wrong = { username: 'alice', password: Buffer.from('same-wrong') }
      expect(await connackAfter(gw.ports.mqtt, proxyV1(from), wrong)).toBe(4)
      const unknown = { username: 'UB_ghost', password: Buffer.from('same-wrong') }
      expect(await connackAfter(gw.ports.mqtt, proxyV1(from), unknown)).toBe(4)
    }
    expect(gw.stats().scryptChecks - before.scrypt).toBe(1)
    expect(storeCalls.authenticate - before.store).toBe(1)
    expect(gw.stats().authCacheHits).toBeGreaterThanOrEqual(18)
  })
})

async function timed<T>(fn: () => Promise<T>): Promise<{ outcome: T; ms: number }> {
  const t0 = performance.now()
  const outcome = await fn()
  return { outcome, ms: performance.now() - t0 }
}

describe('per-source CONNECT budgets', () => {
  it('are bounded: past connectRateSources the least recently seen is forgotten, and counted', async () => {
    const bus = createInProcessBus({ prefix: uniquePrefix('srcs') })
    const gw = await startTestGateway({
      bus,
      trustProxy: true,
      anonymous: 'always',
      auth: { connectRateSources: 2 },
    })
    try {
      for (const src of ['198.51.100.1', '198.51.100.2', '198.51.100.3', '198.51.100.4']) {
        expect(await connackAfter(gw.ports.mqtt, proxyV1(src))).toBe(0)
      }
      expect(gw.stats().connectSourcesEvicted).toBe(2)
    } finally {
      await gw.close()
      await bus.close()
    }
  })
})
