import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/index.ts'
import { silentLogger } from '../../services/common/log.ts'
import { createRemoteClient, startPoller } from '../../services/handshake/index.ts'
import { createStoreClient, startStore, type EventActor } from '../../services/store/index.ts'
import { createTestDb } from '../helpers/db.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { waitFor } from './fixture.ts'

const operator: EventActor = { kind: 'operator', id: 'admin' }
const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** An upstream server that is up but busy: it counts handshake requests and answers 503. */
async function busyServer(): Promise<{ port: number; hits: number[] }> {
  const hits: number[] = []
  const server: Server = createServer((req, res) => {
    if (req.url === '/api/v1/handshake/requests') hits.push(performance.now())
    res.writeHead(503, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: { code: 'busy', message: 'come back later' } }))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  cleanups.push(() => new Promise((r) => server.close(() => r())))
  return { port: (server.address() as AddressInfo).port, hits }
}

const upstreamAt = (httpPort: number) => ({
  host: 'mqtt://127.0.0.1',
  brokerPort: 1883,
  httpPort,
  secret: 'downstream-secret',
  actor: operator,
})

async function startDownstream(pollMs: number) {
  const delays: number[] = []
  const t = await createTestDb('pglite')
  const bus = createInProcessBus({ prefix: uniquePrefix('poll') })
  const log = silentLogger()
  const storeSvc = await startStore({ bus, db: t.db, log })
  const store = createStoreClient({ bus })
  const poller = await startPoller({
    store,
    bus,
    remote: createRemoteClient({ timeoutMs: 2_000 }),
    log,
    instanceId: storeSvc.instance.instanceId,
    pollMs,
    slowPollMs: 60_000,
    random: () => 0.5, // no jitter: the intervals are exactly the backoff
    // Real timers; the delays asked for are recorded, since wall-clock gaps between requests
    // also hold the store's own time, which a loaded machine stretches.
    setTimer: (run, delayMs) => (delays.push(delayMs), setTimeout(run, delayMs)),
  })
  cleanups.push(async () => {
    await poller.close()
    await storeSvc.close()
    await bus.close()
    await t.close()
  })
  return { store, poller, delays }
}

describe('handshake poller (downstream side)', () => {
  it('keeps asking an unavailable upstream server, backing off, with the last error shown', async () => {
    const server = await busyServer()
    const { store, delays } = await startDownstream(100)
    const up = await store.call('upstream.create', upstreamAt(server.port))
    await waitFor(() => server.hits.length >= 5, { timeoutMs: 15_000 })
    // Every poll reached the server, and each waited 1.5× the one before: 100, 150, 225, 337.5 ms.
    expect(delays.slice(0, 4)).toEqual([100, 150, 225, 337.5])
    const seen = await store.call('upstream.get', { id: up.id })
    expect(seen).toMatchObject({ status: 'Pending', remoteRequestId: null })
    expect(seen.lastError).toMatch(/answered 503 \(busy: come back later\)/)
  })

  it('asks at once on pollNow, from the first interval again', async () => {
    const server = await busyServer()
    const { store, poller } = await startDownstream(5_000)
    const up = await store.call('upstream.create', upstreamAt(server.port))
    expect(server.hits).toHaveLength(0) // the first scheduled poll is 5 s away
    const after = await poller.pollNow(up.id)
    expect(server.hits).toHaveLength(1)
    expect(after.lastError).toMatch(/answered 503/)
  })
})
