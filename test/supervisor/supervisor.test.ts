import { connectAsync } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { decodeJson, type Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { connectMqttSession } from '../../services/supervisor/mqtt-session.ts'
import { LINKS_BUCKET, localClientId, type LinkStatus } from '../../services/contracts/links.ts'
import { startSupervisor, type Supervisor } from '../../services/supervisor/index.ts'
import { collect, freePort, startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext, type FakeStore } from './fake-store.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function setup() {
  const bus: Bus = createInProcessBus({ prefix: 't' })
  const local = await startAedes()
  const remote = await startAedes()
  const store: FakeStore = await startFakeStore(bus)
  cleanups.push(
    () => bus.close(),
    () => local.close(),
    () => remote.close(),
    () => store.close()
  )
  const start = async (opts = {}) => {
    const sup: Supervisor = await startSupervisor(testContext(bus), {
      localBrokerUrl: local.url,
      leaseTtlMs: 1_500,
      backoffBaseMs: 50,
      ...opts,
    })
    cleanups.push(() => sup.close())
    return sup
  }
  return { bus, local, remote, store, start }
}

describe('bridge supervisor', () => {
  it('bridges every Active upstream, follows binding changes, and reports the link in KV', async () => {
    const { bus, local, remote, store, start } = await setup()
    store.put({
      id: 'U1',
      brokerPort: remote.port,
      bindings: [{ source: 'plant1', target: 'acme/plant1' }],
    })
    const sup = await start()
    await waitFor(() => sup.links().get('U1')?.state === 'Forwarding', { what: 'Forwarding' })
    const sub = await collect(remote.url, 'acme/#')
    cleanups.push(() => sub.close())
    const p = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => p.endAsync(true))
    await p.publishAsync('plant1/a', 'one', { qos: 1 })
    await waitFor(() => sub.got.length === 1, { what: 'first message' })

    store.set('U1', {
      bindings: [
        { source: 'plant1', target: 'acme/plant1' },
        { source: 'plant2', target: 'acme/plant2' },
      ],
    })
    await new Promise((r) => setTimeout(r, 200))
    await p.publishAsync('plant2/b', 'two', { qos: 1 })
    await waitFor(() => sub.got.length === 2, { what: 'new binding' })
    expect(sub.got.map((m) => m.topic)).toEqual(['acme/plant1/a', 'acme/plant2/b'])

    const links = await bus.kv(LINKS_BUCKET)
    await new Promise((r) => setTimeout(r, 1_200)) // status is written at most once a second
    const status = decodeJson<LinkStatus>((await links.get('U1'))!.value)
    expect(status).toMatchObject({
      state: 'Forwarding',
      lastError: null,
      forwarded: 2,
      waiting: 0,
      lagMs: 0,
      owner: sup.supervisorId,
    })
  })

  it('stops forwarding within a second of deactivation and forgets the session on delete', async () => {
    const { local, remote, store, start } = await setup()
    store.put({ id: 'U2', brokerPort: remote.port, bindings: [{ source: 'x', target: 'y' }] })
    const sup = await start()
    await waitFor(() => sup.links().get('U2')?.state === 'Forwarding', { what: 'Forwarding' })
    const sub = await collect(remote.url, 'y/#')
    cleanups.push(() => sub.close())
    const p = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => p.endAsync(true))

    store.set('U2', { status: 'Approved', active: false })
    await waitFor(() => !sup.links().has('U2'), { timeoutMs: 1_000, what: 'stopped in 1 s' })
    await p.publishAsync('x/while-inactive', '1', { qos: 1 })
    await new Promise((r) => setTimeout(r, 200))
    expect(sub.got).toEqual([])
    expect(store.patches).toEqual([]) // a deactivation is not an error to show the operator

    // Reactivated: what arrived while inactive waited in the session.
    store.set('U2', { status: 'Active', active: true })
    await waitFor(() => sub.got.length === 1, { what: 'queued message' })
    expect(sub.got[0]!.topic).toBe('y/while-inactive')

    store.set('U2', { status: 'Deleted' })
    await waitFor(() => !sup.links().has('U2'), { what: 'stopped' })
    await new Promise((r) => setTimeout(r, 200))
    const probe = await connectMqttSession({
      url: local.url,
      clientId: localClientId('U2'),
      clean: false,
      onMessage: () => {},
      onClose: () => {},
    })
    expect(probe.sessionPresent).toBe(false)
    await probe.close()
    expect(store.patches).toEqual([])
  })

  it('keeps its leases while the store is slow: a second supervisor does not take the bridge', async () => {
    const { local, remote, store, start } = await setup()
    store.put({ id: 'U5', brokerPort: remote.port, bindings: [{ source: 'x', target: 'y' }] })
    const first = await start()
    await waitFor(() => first.links().get('U5')?.state === 'Forwarding', { what: 'Forwarding' })
    // Every reconcile now waits on the store (its calls time out after 2 s), longer than the
    // 1.5 s lease lives; the renewals must not wait with it.
    store.listDelayMs = 4_000
    store.set('U5', { lastError: null }) // an event: the first supervisor reconciles, and waits
    const second = await start()
    const sub = await collect(remote.url, 'y/#')
    cleanups.push(() => sub.close())
    const p = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => p.endAsync(true))
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 500))
      await p.publishAsync('x/n', String(i), { qos: 1 })
      expect(second.links().has('U5')).toBe(false)
      expect(first.links().get('U5')?.state).toBe('Forwarding')
    }
    await waitFor(() => sub.got.length === 6, { what: 'all six, once' })
    expect(sub.got.map((m) => m.payload.toString())).toEqual(['0', '1', '2', '3', '4', '5'])
    store.listDelayMs = 0
  })

  it('stops retrying once the upstream refuses the credential (CONNACK 5), and records why', async () => {
    const { remote, store, start } = await setup()
    let attempts = 0
    remote.broker.authenticate = (_client, _user, _pass, done) => {
      attempts++
      done(Object.assign(new Error('revoked'), { returnCode: 5 }) as never, false)
    }
    store.put({ id: 'U3', brokerPort: remote.port, bindings: [{ source: 'x', target: 'y' }] })
    const sup = await start()
    await waitFor(() => sup.links().get('U3')?.state === 'Stopped', { what: 'Stopped' })
    await new Promise((r) => setTimeout(r, 500))
    expect(attempts).toBe(1)
    expect(sup.links().get('U3')!.lastError).toMatch(/not authorized/i)
    await waitFor(() => store.patches.length === 1, { what: 'lastError patch' })
  })

  it('backs off while the upstream is down and delivers what waited once it is back', async () => {
    const { local, store, start } = await setup()
    const port = await freePort()
    store.put({ id: 'U4', brokerPort: port, bindings: [{ source: 'x', target: 'y' }] })
    const sup = await start()
    await waitFor(() => sup.links().get('U4')?.state === 'Backoff', { what: 'Backoff' })
    expect(sup.links().get('U4')!.lastError).toMatch(/ECONNREFUSED/)
    let remote = await startAedes({}, port)
    await waitFor(() => sup.links().get('U4')?.state === 'Forwarding', { what: 'Forwarding' })
    await remote.close() // the upstream restarts
    await waitFor(() => sup.links().get('U4')?.state !== 'Forwarding', { what: 'link down' })
    const p = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => p.endAsync(true))
    for (let i = 0; i < 50; i++) await p.publishAsync('x/n', String(i), { qos: 1 })
    remote = await startAedes({}, port)
    cleanups.push(() => remote.close())
    await waitFor(() => remote.published.length === 50, { what: '50 queued messages' })
    expect(remote.published.map((m) => Number(m.payload))).toEqual(
      Array.from({ length: 50 }, (_, i) => i)
    )
  })
})
