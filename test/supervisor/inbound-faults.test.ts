import { connectAsync, type MqttClient } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { startTestGateway } from '../helpers/gateway.ts'
import { createTestNatsBus, natsUrl, uniquePrefix } from '../helpers/nats.ts'
import { startMosquitto } from '../helpers/mosquitto.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'
import { collect, waitFor, type Received } from './aedes.ts'
import { startRig } from './rig.ts'
import { startFakeStore, testContext } from './fake-store.ts'
import { LOCAL_TRANSPORTS, localBroker } from './local-transports.ts'
import { spawnSupervisor } from './process.ts'

/**
 * A binding coming in (`in`) through the faults a binding going out is proved against
 * (link-cut.test.ts, no-loss.test.ts): every QoS 1 message published upstream reaches the local
 * gateway, in order, because the upstream's persistent session keeps what the link has not
 * acknowledged, and the link acknowledges only what the local gateway acknowledged.
 */
const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

// The link is down 10 s in the suite, 30 s (issue 11) with UB_LINK_CUT_MS=30000; the cloud-cut fault of
// `npm run chaos` cuts a loaded link for 30 s.
const CUT_MS = Number(process.env.UB_LINK_CUT_MS ?? 10_000)
const BINDINGS = [{ source: 'cmd', target: 'down/cmd', direction: 'in' as const }]

/**
 * Every number published, 0 … n−1, arrived, and their first arrivals are in order; the
 * duplicates are returned. (Loaded suite runs once reported "out of order" here: a jump from
 * 10,090 to 10,907. It was a loss at the upstream Mosquitto, whose queue for the link's session
 * holds 10,000 (`max_queued_messages`) while the test published without a pause until the link
 * was back; the check compared arrivals with themselves and could not see it.)
 */
function checkSequence(got: Received[], n: number): number {
  const seq = got.filter((m) => m.topic === 'cmd/seq').map((m) => Number(m.payload))
  const seen = new Set<number>()
  const firsts = seq.filter((v) => !seen.has(v) && seen.add(v))
  const missing = Array.from({ length: n }, (_, i) => i).filter((i) => !seen.has(i))
  expect(missing.slice(0, 20), `${missing.length} of ${n} never arrived`).toEqual([])
  const wrong = firsts.findIndex((v, i) => v !== i)
  const at = seq.indexOf(firsts[wrong] ?? -1)
  expect(
    wrong,
    `first arrivals out of order: ${JSON.stringify(seq.slice(Math.max(0, at - 20), at + 20))}`
  ).toBe(-1)
  return seq.length - n
}

/** Publishes the next `count` numbers, in order; `published()` says how many so far. */
async function upstreamPublisher(
  url: string,
  auth: { username?: string; password?: string } = {}
): Promise<((count: number) => Promise<void>) & { published(): number }> {
  const p: MqttClient = await connectAsync(url, { protocolVersion: 4, ...auth })
  cleanups.push(() => p.endAsync(true))
  let n = 0
  const publish = async (count: number) => {
    for (let i = 0; i < count; i++) await p.publishAsync('down/cmd/seq', String(n++), { qos: 1 })
  }
  return Object.assign(publish, { published: () => n })
}

describe('a binding coming in', () => {
  describe.each(LOCAL_TRANSPORTS)('%s local link', (transport) => {
    it('delivers every QoS 1 message published upstream while the link was cut for 30 s', async () => {
      const bus = createInProcessBus({ prefix: 't' })
      const local = await startTestGateway({ bus, anonymous: 'always' })
      // The upstream is Mosquitto, which keeps a persistent session's queue in order and honours
      // the bridge flag as no-local; plain aedes lets live messages overtake a resumed session's
      // queue, which breaks the order before the link sees it.
      // Its queue per session holds 1,000 by default: an operator sizes it for the outages to ride.
      const remote = await startMosquitto({
        users: { plant: 's3cret' },
        config: 'max_queued_messages 10000',
      })
      const proxy = await startTcpProxy({ targetPort: remote.port })
      const store = await startFakeStore(bus, {
        credentials: { username: 'plant', password: 's3cret' },
      })
      cleanups.push(
        () => bus.close(),
        () => local.close(),
        () => remote.stop(),
        () => proxy.close(),
        () => store.close()
      )
      store.put({ id: 'U1', brokerPort: proxy.port, bindings: BINDINGS })
      const sup = await startSupervisor(testContext(bus), {
        ...localBroker(transport, local),
        backoffBaseMs: 100,
        backoffMaxMs: 2_000,
      })
      cleanups.push(() => sup.close())
      const sub = await collect(local.url, 'cmd/#')
      cleanups.push(() => sub.close())
      await waitFor(() => sup.links().get('U1')?.state === 'Forwarding', {
        what: 'Forwarding',
      }).catch((err) => {
        throw new Error(`${err.message}: ${JSON.stringify(sup.links().get('U1'))}`)
      })

      const publish = await upstreamPublisher(remote.url, { username: 'plant', password: 's3cret' })
      await publish(100)
      proxy.cut()
      await waitFor(() => sup.links().get('U1')?.state === 'Backoff', { what: 'Backoff' })
      const cutAt = Date.now()
      while (Date.now() - cutAt < CUT_MS) {
        await publish(10)
        await new Promise((r) => setTimeout(r, 100))
        expect(sup.links().get('U1')?.state).not.toBe('Forwarding')
      }
      proxy.restore()
      // At the same pace until the link is back: the upstream's queue for it is bounded too.
      while (sup.links().get('U1')?.state !== 'Forwarding') {
        await publish(10)
        await new Promise((r) => setTimeout(r, 100))
      }
      await publish(200)
      const n = publish.published()
      await waitFor(() => new Set(sub.got.map((m) => m.payload.toString())).size >= n, {
        timeoutMs: 20_000,
        what: `${n} messages`,
      })
      await new Promise((r) => setTimeout(r, 300))
      const duplicates = checkSequence(sub.got, n)
      console.log(`in, link cut ${CUT_MS} ms: ${n} delivered, ${duplicates} duplicates`)
    }, 70_000)
  })

  it('loses nothing when the supervisor running the link is SIGKILLed and another takes over', async () => {
    const prefix = uniquePrefix('inb')
    const bus = await createTestNatsBus({ prefix })
    const { local, remote, store } = await startRig(bus, cleanups)
    store.put({ id: 'U1', brokerPort: remote.port, bindings: BINDINGS })
    const spawnOne = (supervisorId: string) => {
      const p = spawnSupervisor({ natsUrl: natsUrl(), prefix, localUrl: local.url, supervisorId })
      cleanups.push(() => p.kill())
      return p
    }
    const sub = await collect(local.url, 'cmd/#')
    cleanups.push(() => sub.close())
    const first = spawnOne('sup-a')
    await first.ready
    await waitFor(() => first.links().U1?.state === 'Forwarding', { what: 'Forwarding' })

    const N = 1_500
    const publish = await upstreamPublisher(remote.url)
    await publish(500)
    await first.kill('SIGKILL')
    const publishing = publish(N - 500)
    const second = spawnOne('sup-b')
    await second.ready
    await publishing
    await waitFor(() => new Set(sub.got.map((m) => m.payload.toString())).size >= N, {
      timeoutMs: 20_000,
      what: `${N} messages`,
    })
    const duplicates = checkSequence(sub.got, N)
    console.log(`in, supervisor SIGKILL: ${N} delivered, ${duplicates} duplicates`)
    // Redelivered: what the killed link had published locally and not yet acknowledged upstream.
    expect(duplicates).toBeLessThanOrEqual(3 * 64)
  }, 60_000)
})
