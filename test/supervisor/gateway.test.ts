import { connectAsync } from 'mqtt'
import { afterEach, describe, expect, it } from 'vitest'
import { decodeJson } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { LINKS_BUCKET, type LinkStatus } from '../../services/contracts/links.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { startTestGateway } from '../helpers/gateway.ts'
import { startTcpProxy } from '../helpers/tcp-proxy.ts'
import { startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'
import { LOCAL_TRANSPORTS, localBroker } from './local-transports.ts'

const cleanups: Array<() => Promise<unknown>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/**
 * A real gateway on an in-process bus, an upstream aedes behind a TCP proxy (to cut or stall),
 * and upstream `id` binding `x` → `up/x` through it in the store the supervisor reads.
 */
async function upstreamBehindProxy(id: string) {
  const bus = createInProcessBus({ prefix: 't' })
  const gw = await startTestGateway({ bus, anonymous: 'always' })
  const remote = await startAedes()
  const proxy = await startTcpProxy({ targetPort: remote.port })
  const store = await startFakeStore(bus)
  cleanups.push(
    () => bus.close(),
    () => gw.close(),
    () => remote.close(),
    () => proxy.close(),
    () => store.close()
  )
  store.put({ id, brokerPort: proxy.port, bindings: [{ source: 'x', target: 'up/x' }] })
  return { bus, gw, remote, proxy }
}

describe.each(LOCAL_TRANSPORTS)('%s local link', (transport) => {
  /**
   * The real gateway as the local side: the supervisor logs in with the internal credential, and
   * the gateway keeps the bridge's persistent session while the upstream is unreachable.
   */
  it('through the real gateway: the internal credential, queued QoS 1 kept, QoS 0 dropped, retain kept', async () => {
    const { bus, gw, remote, proxy } = await upstreamBehindProxy('G1')
    const sup = await startSupervisor(testContext(bus), {
      ...localBroker(transport, gw),
      backoffBaseMs: 50,
      backoffMaxMs: 500,
    })
    cleanups.push(() => sup.close())
    await waitFor(() => sup.links().get('G1')?.state === 'Forwarding', { what: 'Forwarding' })

    const p = await connectAsync(gw.url, { protocolVersion: 4 })
    cleanups.push(() => p.endAsync(true))
    await p.publishAsync('x/retained', 'r', { qos: 1, retain: true })
    await waitFor(() => remote.published.length === 1, { what: 'retained message' })
    expect(remote.published[0]).toMatchObject({ topic: 'up/x/retained', retain: true })

    proxy.cut()
    await waitFor(() => sup.links().get('G1')?.state !== 'Forwarding', { what: 'link down' })
    for (let i = 0; i < 20; i++) await p.publishAsync('x/q1', String(i), { qos: 1 })
    await p.publishAsync('x/q0', 'lost', { qos: 0 })
    proxy.restore()
    await waitFor(() => remote.published.filter((m) => m.topic === 'up/x/q1').length >= 20, {
      what: '20 queued QoS 1 messages',
    })
    const q1 = remote.published.filter((m) => m.topic === 'up/x/q1').map((m) => Number(m.payload))
    expect(q1).toEqual(Array.from({ length: 20 }, (_, i) => i))
    expect(remote.published.filter((m) => m.topic === 'up/x/q0')).toEqual([])
  })

  /**
   * Link health while the link is down: the backlog queued for its local session on the gateway
   * and the age of the oldest unsent message, in the link status (what the API shows) and on
   * /metrics; both back to nothing once the link drains.
   */
  it('shows the backlog and the oldest unsent age of a link that is down, then drained', async () => {
    const { bus, gw, remote, proxy } = await upstreamBehindProxy('B1')
    const ctx = testContext(bus)
    const sup = await startSupervisor(ctx, {
      ...localBroker(transport, gw),
      backoffBaseMs: 50,
      backoffMaxMs: 500,
      backlogIntervalMs: 100,
    })
    cleanups.push(() => sup.close())
    await waitFor(() => sup.links().get('B1')?.state === 'Forwarding', { what: 'Forwarding' })
    const links = await bus.kv(LINKS_BUCKET)
    const status = async () => decodeJson<LinkStatus>((await links.get('B1'))!.value)
    await waitFor(async () => (await status()).backlog === 0, { what: 'an empty backlog read' })

    proxy.cut()
    await waitFor(() => sup.links().get('B1')?.state !== 'Forwarding', { what: 'link down' })
    const p = await connectAsync(gw.url, { protocolVersion: 4 })
    cleanups.push(() => p.endAsync(true))
    const firstAt = Date.now()
    for (let i = 0; i < 7; i++) await p.publishAsync('x/q1', String(i), { qos: 1 })
    await new Promise((r) => setTimeout(r, 300))
    await waitFor(async () => (await status()).backlog === 7, { what: 'backlog 7' })
    const down = await status()
    const oldestAt = Date.parse(down.oldestUnsentAt!)
    expect(oldestAt).toBeGreaterThanOrEqual(firstAt - 50)
    expect(oldestAt).toBeLessThanOrEqual(Date.parse(down.updatedAt))
    expect(down.oldestUnsentMs).toBe(Date.parse(down.updatedAt) - oldestAt)
    const scrape = await ctx.metrics.metrics()
    expect(scrape).toMatch(/ub_bridge_backlog\{upstream="B1"\} 7/)
    expect(scrape).toMatch(/ub_bridge_oldest_unsent_ms\{upstream="B1"\} [1-9]\d*/)

    proxy.restore()
    await waitFor(() => remote.published.filter((m) => m.topic === 'up/x/q1').length >= 7, {
      what: 'the backlog delivered',
    })
    await waitFor(
      async () => {
        const s = await status()
        return s.backlog === 0 && s.oldestUnsentMs === null && s.oldestUnsentAt === null
      },
      { what: 'backlog drained' }
    )
  })

  /**
   * The end-to-end canary: a link that stays connected while nothing it sends is acknowledged (the
   * path to the upstream stalls) is flagged silent, though its state still says Forwarding; it
   * comes back to normal once the path carries again. Ordinary subscribers never see the canary.
   */
  it('flags a connected link that carries nothing as silent (end-to-end canary)', async () => {
    const { bus, gw, remote, proxy } = await upstreamBehindProxy('C1')
    const ctx = testContext(bus)
    const sup = await startSupervisor(ctx, {
      ...localBroker(transport, gw),
      canaryMs: 200,
      backlogIntervalMs: 100,
    })
    cleanups.push(() => sup.close())
    const watcher = await connectAsync(gw.url, { protocolVersion: 4 })
    cleanups.push(() => watcher.endAsync(true))
    const seenByWildcard: string[] = []
    watcher.on('message', (topic) => seenByWildcard.push(topic))
    await watcher.subscribeAsync('#', { qos: 1 })

    const links = await bus.kv(LINKS_BUCKET)
    const status = async () => decodeJson<LinkStatus>((await links.get('C1'))!.value)
    await waitFor(async () => (await status()).canaryOkAt != null, { what: 'a canary through' })
    const ok = await status()
    expect(ok).toMatchObject({ state: 'Forwarding', silent: false })
    expect(ok.canaryRoundTripMs).toBeGreaterThanOrEqual(0)

    proxy.stall()
    await watcher.publishAsync('x/t', 'stuck', { qos: 1 })
    await waitFor(async () => (await status()).silent === true, { what: 'silent' })
    expect(sup.links().get('C1')?.state).toBe('Forwarding')
    expect(await ctx.metrics.metrics()).toMatch(/ub_bridge_silent\{upstream="C1"\} 1/)

    proxy.unstall()
    await waitFor(async () => (await status()).silent === false, { what: 'carrying again' })
    await waitFor(() => remote.published.some((m) => m.topic === 'up/x/t'), {
      what: 'x/t upstream',
    })
    expect(seenByWildcard.filter((t) => t.startsWith('$'))).toEqual([])
    expect(remote.published.filter((m) => m.topic.includes('canary'))).toEqual([])
  })
})
