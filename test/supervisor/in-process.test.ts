import type { Duplex } from 'node:stream'
import { connectAsync } from 'mqtt'
import { afterEach, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { INTERNAL_USERNAME, internalCredential } from '../../services/common/internal-credential.ts'
import { localClientId } from '../../services/contracts/links.ts'
import { inProcessDialer, type Gateway } from '../../services/gateway/index.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { connectMqttSession, type MqttMessage } from '../../services/supervisor/mqtt-session.ts'
import { startTestGateway } from '../helpers/gateway.ts'
import { startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'

/**
 * The co-located link's own connection (gateway/in-process.ts): the same front door as TCP (login,
 * principal), real backpressure, and a dropped or closed connection behaving as a dropped socket.
 * The link's delivery guarantees over it are the contract suite's (local-transports.ts).
 */
const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {})
})

async function setup() {
  const bus = createInProcessBus({ prefix: 't' })
  const gw = await startTestGateway({ bus, anonymous: 'never' })
  const remote = await startAedes()
  const store = await startFakeStore(bus)
  cleanups.push(
    () => bus.close(),
    () => gw.close(),
    () => remote.close(),
    () => store.close()
  )
  // Every end handed out, to look at what it buffers.
  const ends: Duplex[] = []
  const base = inProcessDialer(gw)
  const dial = () => {
    const end = base()
    ends.push(end)
    return end
  }
  return { bus, gw, remote, store, dial, ends }
}

const principalOf = (gw: Gateway, clientId: string) => {
  const clients = (gw.broker.aedes as unknown as { clients: Record<string, never> }).clients
  const client = clients[clientId]
  return client ? gw.broker.principal(client) : undefined
}

it('logs the link in through the front door: its principal as over TCP, a bad password refused', async () => {
  const { bus, gw, remote, store, dial } = await setup()
  store.put({ id: 'P1', brokerPort: remote.port, bindings: [{ source: 'x', target: 'up/x' }] })
  const sup = await startSupervisor(testContext(bus), { localBrokerUrl: gw.url, localDialer: dial })
  cleanups.push(() => sup.close())
  await waitFor(() => sup.links().get('P1')?.state === 'Forwarding', { what: 'Forwarding' })
  expect(principalOf(gw, localClientId('P1'))).toEqual({
    kind: 'internal',
    username: INTERNAL_USERNAME,
  })
  expect(gw.stats().clients).toBeGreaterThan(0) // counted as any connection is

  const login = (password: string | undefined) =>
    connectMqttSession({
      url: 'mqtt://unused',
      dial,
      clientId: 'ub-bridge-probe',
      ...(password === undefined ? {} : { username: INTERNAL_USERNAME, password }),
      clean: true,
      onClose: () => {},
    })
  await expect(login('wrong')).rejects.toMatchObject({ returnCode: 4 })
  await expect(login(undefined)).rejects.toMatchObject({ returnCode: 5 })
  const ok = await login(await internalCredential(bus))
  await ok.close()
}, 30_000)

it('holds the gateway back while the reader is paused, then delivers every message', async () => {
  const { bus, gw, dial, ends } = await setup()
  const got: MqttMessage[] = []
  const session = await connectMqttSession({
    url: 'mqtt://unused',
    dial,
    clientId: 'ub-bridge-slow',
    username: INTERNAL_USERNAME,
    password: await internalCredential(bus),
    clean: true,
    onMessage: (msg, s) => {
      got.push(msg)
      if (msg.messageId) s.ack(msg.messageId)
    },
    onClose: () => {},
  })
  cleanups.push(() => session.close())
  await session.subscribe(['slow/#'])
  session.pause()
  const N = 4_000
  const payload = Buffer.alloc(1_024, 1)
  const p = await connectAsync(gw.url, {
    protocolVersion: 4,
    username: INTERNAL_USERNAME,
    password: await internalCredential(bus),
  })
  cleanups.push(() => p.endAsync(true))
  await Promise.all(Array.from({ length: N }, () => p.publishAsync('slow/t', payload, { qos: 1 })))
  await new Promise((r) => setTimeout(r, 300))
  // 4 MB were published; the paused end holds its 1 MiB and what crossed it in the last write, the
  // rest waits in the gateway (counted there against maxPendingMessages and maxPendingBytes).
  const end = ends.at(-1)!
  expect(end.readableLength).toBeLessThanOrEqual(2 * 1_048_576)
  expect(got.length).toBeLessThan(N)
  session.resume()
  await waitFor(() => got.length >= N, { what: `${N} messages (got ${got.length})` })
  expect(got.length).toBe(N)
}, 30_000)

it('takes a connection the gateway drops as a dropped socket: reconnects and loses nothing', async () => {
  const { bus, gw, remote, store, dial, ends } = await setup()
  store.put({ id: 'R1', brokerPort: remote.port, bindings: [{ source: 'x', target: 'up/x' }] })
  const sup = await startSupervisor(testContext(bus), {
    localBrokerUrl: gw.url,
    localDialer: dial,
    backoffBaseMs: 50,
    backoffMaxMs: 200,
  })
  cleanups.push(() => sup.close())
  await waitFor(() => sup.links().get('R1')?.state === 'Forwarding', { what: 'Forwarding' })
  const p = await connectAsync(gw.url, {
    protocolVersion: 4,
    username: INTERNAL_USERNAME,
    password: await internalCredential(bus),
  })
  cleanups.push(() => p.endAsync(true))
  let n = 0
  const publish = async (count: number) => {
    for (let i = 0; i < count; i++) await p.publishAsync('x/seq', String(n++), { qos: 1 })
  }
  await publish(200)
  const dialled = ends.length
  expect(gw.broker.disconnect((principal) => principal.kind === 'internal')).toBeGreaterThan(0)
  await publish(200)
  await waitFor(() => ends.length > dialled && sup.links().get('R1')?.state === 'Forwarding', {
    what: 'a new connection',
  })
  await publish(200)
  await waitFor(() => new Set(remote.published.map((m) => m.payload.toString())).size >= n, {
    what: `${n} messages upstream`,
  })
  const seq = remote.published.filter((m) => m.topic === 'up/x/seq').map((m) => Number(m.payload))
  expect(new Set(seq).size).toBe(n)

  // A closed gateway ends the link's connections and refuses new ones: the link backs off.
  await gw.close()
  await waitFor(() => sup.links().get('R1')?.state !== 'Forwarding', { what: 'the link down' })
  await waitFor(() => /refused|closed|reset/.test(sup.links().get('R1')?.lastError ?? ''), {
    what: 'the reason',
  })
  expect(ends.every((e) => e.destroyed)).toBe(true)
}, 30_000)
