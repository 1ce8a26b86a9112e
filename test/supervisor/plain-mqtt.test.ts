import { connectAsync } from 'mqtt'
import { afterEach, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { startMosquitto } from '../helpers/mosquitto.ts'
import { collect, startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

it('bridges to a plain Mosquitto with a username and password, no handshake', async () => {
  const mosq = await startMosquitto({ users: { plant: 's3cret' } })
  const bus = createInProcessBus({ prefix: 't' })
  const local = await startAedes()
  const store = await startFakeStore(bus, {
    credentials: { username: 'plant', password: 's3cret' },
  })
  cleanups.push(
    () => mosq.stop(),
    () => bus.close(),
    () => local.close(),
    () => store.close()
  )
  store.put({
    id: 'M1',
    kind: 'mqtt',
    brokerPort: mosq.port,
    bindings: [{ source: 'plant1', target: 'site/plant1' }],
  })
  const sup = await startSupervisor(testContext(bus), { localBrokerUrl: local.url })
  cleanups.push(() => sup.close())
  await waitFor(() => sup.links().get('M1')?.state === 'Forwarding', { what: 'Forwarding' })
  const sub = await collect(mosq.url, 'site/#', {}, { username: 'plant', password: 's3cret' })
  cleanups.push(() => sub.close())
  const p = await connectAsync(local.url, { protocolVersion: 4 })
  cleanups.push(() => p.endAsync(true))
  await p.publishAsync('plant1/line1/temp', Buffer.from([1, 2, 3]), { qos: 1, retain: true })
  await p.publishAsync('plant1/line1/speed', '42', { qos: 0 })
  await waitFor(() => sub.got.length === 2, { what: 'two messages' })
  expect(sub.got).toEqual([
    { topic: 'site/plant1/line1/temp', payload: Buffer.from([1, 2, 3]), qos: 1, retain: false },
    { topic: 'site/plant1/line1/speed', payload: Buffer.from('42'), qos: 0, retain: false },
  ])
  // The retain flag went across: Mosquitto keeps the message for a late subscriber.
  const late = await collect(
    mosq.url,
    'site/plant1/line1/temp',
    {},
    { username: 'plant', password: 's3cret' }
  )
  cleanups.push(() => late.close())
  await waitFor(() => late.got.length === 1, { what: 'retained copy' })
  expect(late.got[0]).toMatchObject({ retain: true, payload: Buffer.from([1, 2, 3]) })
})

it('stops for good when Mosquitto refuses the credential (CONNACK 5)', async () => {
  const mosq = await startMosquitto({ users: { plant: 's3cret' } })
  const bus = createInProcessBus({ prefix: 't' })
  const local = await startAedes()
  const store = await startFakeStore(bus, { credentials: { username: 'plant', password: 'wrong' } })
  cleanups.push(
    () => mosq.stop(),
    () => bus.close(),
    () => local.close(),
    () => store.close()
  )
  store.put({
    id: 'M2',
    kind: 'mqtt',
    brokerPort: mosq.port,
    bindings: [{ source: 'a', target: 'b' }],
  })
  const sup = await startSupervisor(testContext(bus), {
    localBrokerUrl: local.url,
    backoffBaseMs: 20,
  })
  cleanups.push(() => sup.close())
  await waitFor(() => sup.links().get('M2')?.state === 'Stopped', { what: 'Stopped' })
  expect(sup.links().get('M2')!.lastError).toMatch(/not authorized|bad user name/i)
})
