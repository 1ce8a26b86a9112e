import { afterEach, describe, expect, it } from 'vitest'
import { Registry } from 'prom-client'
import { encodeJson, type Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus, createInProcessHub } from '../../services/common/bus/index.ts'
import { silentLogger } from '../../services/common/log.ts'
import {
  openPresenceBucket,
  PRESENCE_REFUSED_METRIC,
  readCluster,
  startPresence,
  type MemberFacts,
  type Presence,
} from '../../services/common/presence.ts'
import { sleep } from '../helpers/gateway.ts'
import { connectNatsBus } from '../../services/common/bus/nats.ts'
import { createTestNatsBus, natsUrl, uniquePrefix } from '../helpers/nats.ts'

const INTERVAL_MS = 200 // TTL 600 ms
const TTL_MS = 3 * INTERVAL_MS

/** Two connections to one bus server, as two processes have: one announces, one reads. */
interface BusPair {
  announcer(): Promise<Bus>
  reader(): Promise<Bus>
}

const closers: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close().catch(() => {})
})

function inProcessPair(): BusPair {
  const hub = createInProcessHub()
  const open = async () => {
    const bus = createInProcessBus({ hub, prefix: 'pres' })
    closers.push(() => bus.close())
    return bus
  }
  return { announcer: open, reader: open }
}

function natsPair(): BusPair {
  const prefix = uniquePrefix('presence')
  // The reader's connection destroys the buckets when it closes, so it closes last.
  const reader = createTestNatsBus({ prefix }).then((bus) => {
    closers.unshift(() => bus.close())
    return bus
  })
  return {
    reader: () => reader,
    announcer: async () => {
      const bus = await connectNatsBus({ servers: natsUrl(), prefix })
      closers.push(() => bus.close())
      return bus
    },
  }
}

async function presenceOn(bus: Bus, extra: { maxMembers?: number; metrics?: Registry } = {}) {
  const presence = await startPresence({
    bus,
    log: silentLogger(),
    intervalMs: INTERVAL_MS,
    ...extra,
  })
  closers.push(() => presence.close())
  return presence
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, what: string) {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

describe.each([
  ['in-process', inProcessPair],
  ['NATS', natsPair],
] as const)('presence on the %s bus', (_, makePair) => {
  it('lists each joined service with its identity and facts, sorted, and counts them', async () => {
    const pair = makePair()
    const reader = await pair.reader()
    const presence = await presenceOn(await pair.announcer())
    let clients = 3
    presence.join('handshake')
    presence.join('gateway', () => ({
      gateway: { gatewayId: 'gw-a', clients, ports: { mqtt: 1883, ws: 8083 } },
    }))
    presence.join('store')
    const before = Date.now()
    await presence.announce()

    const view = await readCluster(reader, { intervalMs: INTERVAL_MS })
    expect(view.members.map((m) => m.service)).toEqual(['store', 'gateway', 'handshake'])
    expect(view.counts).toEqual({ store: 1, gateway: 1, supervisor: 0, handshake: 1 })
    expect(view.omitted).toBe(0)
    const gateway = view.members[1]!
    expect(gateway).toMatchObject({
      host: expect.any(String),
      pid: process.pid,
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      gateway: { gatewayId: 'gw-a', clients: 3, ports: { mqtt: 1883, ws: 8083 } },
    })
    expect(gateway.memberId).toMatch(/^gateway-[0-9a-f]{8}$/)
    expect(Date.parse(gateway.lastSeenAt)).toBeGreaterThanOrEqual(before - 5)
    // One process: every member shares its run id.
    expect(new Set(view.members.map((m) => m.memberId.split('-')[1])).size).toBe(1)

    // The facts are read again at every announcement.
    clients = 4
    await waitUntil(
      async () =>
        (await readCluster(reader, { intervalMs: INTERVAL_MS })).members[1]?.gateway?.clients === 4,
      5_000,
      'the new client count'
    )
  })

  it('is gone at once after close, and after the TTL when the process stops announcing', async () => {
    const pair = makePair()
    const reader = await pair.reader()
    const stopping = await presenceOn(await pair.announcer())
    stopping.join('gateway')
    await stopping.announce()
    // A member that announced once and died: nothing deletes its record, the TTL does.
    const kv = await openPresenceBucket(reader, INTERVAL_MS)
    await kv.put('supervisor-deadbeef', encodeJson(deadSupervisor()))
    const services = async () =>
      (await readCluster(reader, { intervalMs: INTERVAL_MS })).members.map((m) => m.service)
    expect(await services()).toEqual(['gateway', 'supervisor'])

    await stopping.close()
    expect(await services()).toEqual(['supervisor'])

    const cut = Date.now()
    expect(await services()).toEqual(['supervisor'])
    await waitUntil(async () => (await services()).length === 0, TTL_MS + 5_000, 'the expiry')
    expect(Date.now() - cut).toBeGreaterThanOrEqual(TTL_MS - INTERVAL_MS - 50)
  })
})

function deadSupervisor() {
  const now = new Date().toISOString()
  return {
    service: 'supervisor',
    memberId: 'supervisor-deadbeef',
    host: 'gone',
    pid: 1,
    version: '0.0.0',
    startedAt: now,
    lastSeenAt: now,
    uptimeMs: 0,
  }
}

describe('presence bounds and records', () => {
  it('keeps at most maxMembers: a process past it is refused and counted, and joins once there is room', async () => {
    const pair = inProcessPair()
    const reader = await pair.reader()
    const first = await presenceOn(await pair.announcer(), { maxMembers: 2 })
    first.join('store')
    first.join('gateway')
    await first.announce()
    const metrics = new Registry()
    const late = await presenceOn(await pair.announcer(), { maxMembers: 2, metrics })
    late.join('supervisor')
    await late.announce()
    expect((await readCluster(reader)).members.map((m) => m.service)).toEqual(['store', 'gateway'])
    const refused = await metrics.getSingleMetric(PRESENCE_REFUSED_METRIC)!.get()
    expect(refused.values[0]!.value).toBeGreaterThanOrEqual(1)

    await first.close()
    await late.announce()
    expect((await readCluster(reader)).members.map((m) => m.service)).toEqual(['supervisor'])
  })

  it('lists at most maxMembers on read and says how many it left out', async () => {
    const bus = await inProcessPair().reader()
    const presence = await presenceOn(bus)
    for (const service of ['store', 'gateway', 'supervisor']) presence.join(service)
    await presence.announce()
    const view = await readCluster(bus, { maxMembers: 2 })
    expect(view.members).toHaveLength(2)
    expect(view.omitted).toBe(1)
  })

  it('skips records that are not member records, and bounds a supervisor’s listed bridges', async () => {
    const bus = await inProcessPair().reader()
    const kv = await openPresenceBucket(bus, INTERVAL_MS)
    await kv.put('junk', new TextEncoder().encode('not json'))
    await kv.put('partial', encodeJson({ service: 'gateway' }))
    const presence = await presenceOn(bus)
    const bridges = Array.from({ length: 600 }, (_, i) => ({
      upstreamId: `up_${String(599 - i).padStart(3, '0')}`,
      host: 'mqtt://cloud',
      state: 'Forwarding',
    }))
    const facts: MemberFacts = { supervisor: { supervisorId: 'sup-1', bridges } }
    presence.join('supervisor', () => facts)
    await presence.announce()
    const { members } = await readCluster(bus)
    expect(members).toHaveLength(1)
    const supervisor = members[0]!.supervisor!
    expect(supervisor.bridgeCount).toBe(600)
    expect(supervisor.bridges).toHaveLength(500)
    expect(supervisor.bridges[0]!.upstreamId).toBe('up_000')
  })

  it('refuses a service name that cannot be a KV key', async () => {
    const presence: Presence = await presenceOn(await inProcessPair().reader())
    expect(() => presence.join('gate way')).toThrow(/invalid KV key/)
  })
})
