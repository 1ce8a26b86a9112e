import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { afterAll, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { collect, connectMqtt, eventually, sleep } from '../helpers/gateway.ts'
import { createTestNatsBus, natsUrl, uniquePrefix } from '../helpers/nats.ts'

interface GatewayProcess {
  child: ChildProcess
  url: string
}

const ENTRY = new URL('./gateway-process.ts', import.meta.url).pathname
const GATEWAY_BUCKETS = ['gw_retained', 'gw_subs', 'gw_outgoing', 'gw_wills', 'internal']

async function spawnGateway(prefix: string, id: string): Promise<GatewayProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', ENTRY], {
    env: { ...process.env, NATS_URL: natsUrl(), UB_BUS_PREFIX: prefix, UB_GATEWAY_ID: id },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve)
    child.once('exit', (code) => reject(new Error(`gateway process exited with ${code}`)))
  })
  const { port } = JSON.parse(line) as { port: number }
  return { child, url: `mqtt://127.0.0.1:${port}` }
}

describe('a gateway killed with SIGKILL', () => {
  const prefix = uniquePrefix('gwkill')
  const procs: GatewayProcess[] = []
  const clients: MqttClient[] = []
  afterAll(async () => {
    for (const c of clients) c.end(true)
    for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL')
    const bus = await createTestNatsBus({ prefix })
    for (const b of GATEWAY_BUCKETS) await bus.kv(b) // opened through the helper: destroyed on close
    await bus.close()
  })

  it('loses no QoS 1 message to a persistent session that reconnects to the survivor, and fires a will once', async () => {
    const [g1, g2] = await Promise.all([spawnGateway(prefix, 'g1'), spawnGateway(prefix, 'g2')])
    procs.push(g1!, g2!)
    const topic = 'kill/data'
    const sub = await connectMqtt(g1!.url, { clientId: 'kill-sub', clean: false })
    clients.push(sub)
    const got = collect(sub)
    await sub.subscribeAsync(topic, { qos: 1 })
    const doomed = await connectMqtt(g1!.url, {
      clientId: 'kill-will',
      will: { topic: 'kill/will', payload: Buffer.from('gone'), qos: 1, retain: false },
    })
    clients.push(doomed)
    const watcher = await connectMqtt(g2!.url)
    clients.push(watcher)
    const wills = collect(watcher)
    await watcher.subscribeAsync('kill/will', { qos: 1 })
    const pub = await connectMqtt(g2!.url)
    clients.push(pub)

    const TOTAL = 300
    let sent = 0
    const publishSome = async (n: number) => {
      for (let i = 0; i < n; i++) await pub.publishAsync(topic, String(sent++), { qos: 1 })
    }
    await publishSome(100) // live, across gateways
    const lost = new Promise<void>((r) => sub.once('close', () => r()))
    g1!.child.kill('SIGKILL')
    await lost
    await publishSome(100) // while the subscriber is away: queued in KV by g2
    let gotBack!: ReturnType<typeof collect>
    const back = await connectMqtt(g2!.url, { clientId: 'kill-sub', clean: false }, (c) => {
      gotBack = collect(c)
    })
    clients.push(back)
    await publishSome(TOTAL - 200) // live again, on the survivor

    await eventually(() => {
      const ids = new Set([...got.messages, ...gotBack.messages].map((m) => m.payload))
      return ids.size === TOTAL
    }, 10_000)
    const ids = new Set([...got.messages, ...gotBack.messages].map((m) => Number(m.payload)))
    expect([...ids].sort((x, y) => x - y)).toEqual([...Array(TOTAL).keys()])

    // The survivor publishes the dead gateway's wills after 3 missed heartbeats, once.
    await wills.waitFor(1, 8_000)
    await sleep(2_500) // another will sweep (4 heartbeats) must not publish it again
    expect(wills.messages.map((m) => m.payload)).toEqual(['gone'])
  })

  it('fires each will of a dead gateway once when two survivors contend for them', async () => {
    const [g1, g2, g3] = await Promise.all(['h1', 'h2', 'h3'].map((id) => spawnGateway(prefix, id)))
    procs.push(g1!, g2!, g3!)
    const watchers = await Promise.all([g2!, g3!].map((g) => connectMqtt(g.url)))
    clients.push(...watchers)
    const seen = watchers.map((w) => collect(w))
    await Promise.all(watchers.map((w) => w.subscribeAsync('kill3/will/#', { qos: 1 })))
    const WILLS = 12 // several per survivor: each sweep publishes a few
    for (let i = 0; i < WILLS; i++) {
      clients.push(
        await connectMqtt(g1!.url, {
          clientId: `kill3-${i}`,
          will: { topic: `kill3/will/${i}`, payload: Buffer.from(`w${i}`), qos: 1, retain: false },
        })
      )
    }
    g1!.child.kill('SIGKILL')
    await Promise.all(seen.map((s) => s.waitFor(WILLS, 10_000)))
    await sleep(2_500) // a further sweep by either survivor must not publish any again
    for (const s of seen) {
      expect(s.messages.map((m) => m.payload).sort()).toEqual(
        Array.from({ length: WILLS }, (_, i) => `w${i}`).sort()
      )
    }
  })
})
