import { createServer as createHttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import { Aedes } from 'aedes'
import { connectAsync } from 'mqtt'
import { selfSigned } from '../helpers/tls.ts'
import { afterEach, describe, expect, it } from 'vitest'
import { createWebSocketStream, WebSocketServer } from 'ws'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import type { TlsOptions } from '../../services/contracts/store.ts'
import { startSupervisor } from '../../services/supervisor/index.ts'
import { startAedes, waitFor } from './aedes.ts'
import { startFakeStore, testContext } from './fake-store.ts'

const cleanups: Array<() => Promise<unknown> | void> = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** An aedes upstream behind TLS or WebSocket; records what reaches it. */
async function upstreamOver(kind: 'mqtts' | 'ws', tls?: { cert: string; key: string }) {
  const broker = await Aedes.createBroker()
  const published: string[] = []
  broker.on('publish', (p, client) => client && published.push(`${p.topic} ${p.payload}`))
  const server =
    kind === 'mqtts'
      ? createTlsServer({ cert: tls!.cert, key: tls!.key }, broker.handle)
      : createHttpServer()
  if (kind === 'ws') {
    const wss = new WebSocketServer({ server: server as ReturnType<typeof createHttpServer> })
    wss.on('connection', (ws) => broker.handle(createWebSocketStream(ws)))
    cleanups.push(() => new Promise((r) => wss.close(() => r(undefined))))
  }
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  cleanups.push(
    () => new Promise((r) => broker.close(() => r(undefined))),
    () => {
      ;(server as { closeAllConnections?: () => void }).closeAllConnections?.()
      return new Promise((r) => server.close(() => r(undefined)))
    }
  )
  return { port: (server.address() as AddressInfo).port, published }
}

async function bridgeTo(host: string, brokerPort: number, tls: TlsOptions | null) {
  const bus = createInProcessBus({ prefix: 't' })
  const local = await startAedes()
  const store = await startFakeStore(bus)
  cleanups.push(
    () => bus.close(),
    () => local.close(),
    () => store.close()
  )
  store.put({ id: 'T1', host, brokerPort, tls, bindings: [{ source: 'a', target: 'b' }] })
  const sup = await startSupervisor(testContext(bus), { localBrokerUrl: local.url })
  cleanups.push(() => sup.close())
  return { sup, local }
}

describe('upstream transports', () => {
  it('mqtts:// with a CA and server name', async () => {
    const tls = selfSigned()
    const up = await upstreamOver('mqtts', tls)
    const { sup, local } = await bridgeTo('mqtts://127.0.0.1', up.port, {
      ca: tls.cert,
      servername: 'localhost',
    })
    await waitFor(() => sup.links().get('T1')?.state === 'Forwarding', { what: 'Forwarding' })
    const p = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => p.endAsync(true))
    await p.publishAsync('a/x', 'over tls', { qos: 1 })
    await waitFor(() => up.published.length === 1, { what: 'message over TLS' })
    expect(up.published).toEqual(['b/x over tls'])
  })

  it('mqtts:// refuses a server whose certificate the CA did not sign', async () => {
    const up = await upstreamOver('mqtts', selfSigned())
    const { sup } = await bridgeTo('mqtts://127.0.0.1', up.port, {
      ca: selfSigned().cert,
      servername: 'localhost',
    })
    await waitFor(() => sup.links().get('T1')?.state === 'Backoff', { what: 'Backoff' })
    expect(sup.links().get('T1')!.lastError).toMatch(/certificate|self.signed/i)
  })

  it('ws://', async () => {
    const up = await upstreamOver('ws')
    const { sup, local } = await bridgeTo('ws://127.0.0.1', up.port, null)
    await waitFor(() => sup.links().get('T1')?.state === 'Forwarding', { what: 'Forwarding' })
    const p = await connectAsync(local.url, { protocolVersion: 4 })
    cleanups.push(() => p.endAsync(true))
    await p.publishAsync('a/y', 'over ws', { qos: 1 })
    await p.publishAsync('a/z', 'qos 0', { qos: 0 })
    await waitFor(() => up.published.length === 2, { what: 'messages over WebSocket' })
    // Different topics: no order between them (aedes lets QoS 0 overtake QoS 1).
    expect([...up.published].sort()).toEqual(['b/y over ws', 'b/z qos 0'])
  })
})
