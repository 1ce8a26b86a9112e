import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, expect, it } from 'vitest'
import { FLUSH_DELAY_MS } from '../../services/common/bus/kv-journal.ts'
import { collect, connectMqtt, eventually } from '../helpers/gateway.ts'
import { apiRequest, startInstance, type Instance } from '../helpers/instance.ts'
import { startAedes, type TestBroker } from '../supervisor/aedes.ts'

const cleanups: Array<() => Promise<unknown> | void> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/**
 * The edge case the embedded default exists for: the cloud is unreachable, the plant keeps
 * publishing, and the edge process dies (power cut, update). What the bridge had not delivered
 * waits in its persistent session on the local gateway, which the in-process bus keeps on disk.
 */
it('delivers the QoS 1 backlog of a bridge whose upstream was down when the process was SIGKILLed', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ub-restart-'))
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  let cloud: TestBroker = await startAedes()
  cleanups.push(() => cloud.close())
  const cloudPort = cloud.port
  const start = async () => {
    const inst = await startInstance({ dataDir: dir, args: ['--backoff-max-ms', '500'] })
    cleanups.push(() => inst.stop())
    return inst
  }
  const linkState = async (inst: Instance, id: string) =>
    (await apiRequest(inst, 'GET', `/api/v1/upstreams/${id}`)).body.link?.state as
      string | undefined

  const edge = await start()
  const created = await apiRequest(edge, 'POST', '/api/v1/upstreams', {
    kind: 'mqtt',
    host: 'mqtt://127.0.0.1',
    brokerPort: cloudPort,
  })
  expect(created.status).toBe(201)
  const id = created.body.id as string
  const bound = await apiRequest(edge, 'PUT', `/api/v1/upstreams/${id}/bindings`, [
    { source: 'plant1', target: 'acme/plant1' },
  ])
  expect(bound.status).toBe(200)
  expect((await apiRequest(edge, 'POST', `/api/v1/upstreams/${id}/activate`)).status).toBe(200)
  await eventually(async () => (await linkState(edge, id)) === 'Forwarding', 30_000)

  const seq = (b: TestBroker) =>
    b.published.filter((m) => m.topic === 'acme/plant1/seq').map((m) => Number(m.payload))
  const pub = await connectMqtt(edge.mqttUrl!)
  // Sees each message only after the gateway queued its copy for the bridge's session.
  const witness = await connectMqtt(edge.mqttUrl!)
  const live = collect(witness)
  await witness.subscribeAsync('plant1/#', { qos: 1 })
  for (let i = 0; i < 10; i++) await pub.publishAsync('plant1/seq', String(i), { qos: 1 })
  await eventually(() => seq(cloud).length >= 10)

  await cloud.close()
  await eventually(async () => (await linkState(edge, id)) !== 'Forwarding')
  for (let i = 10; i < 60; i++) await pub.publishAsync('plant1/seq', String(i), { qos: 1 })
  await live.waitFor(60)
  pub.end(true)
  witness.end(true)
  await new Promise((r) => setTimeout(r, FLUSH_DELAY_MS * 25)) // the KV journal's batch
  await edge.kill()

  cloud = await startAedes({}, cloudPort)
  const again = await start()
  await eventually(() => new Set(seq(cloud)).size >= 50, 30_000)
  const arrived = seq(cloud)
  const firsts = arrived.filter((v, i) => arrived.indexOf(v) === i)
  expect(firsts).toEqual(Array.from({ length: 50 }, (_, i) => 10 + i))
  expect(await linkState(again, id)).toBe('Forwarding')
}, 90_000)
