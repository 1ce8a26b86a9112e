import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { hashPassword } from '../../services/gateway/index.ts'
import { connectMqtt, startTestGateway, type TestGateway } from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { selfSigned } from '../helpers/tls.ts'
import { connackAfter, proxyV1, proxyV2 } from './front-door.ts'

const CHEAP = { N: 2 ** 10, r: 8, p: 1 } as const // the test is about addresses, not scrypt's cost
const TEST_NET = [203, 0, 113, 9] // RFC 5737: an address that is nobody's loopback
const V6_DOC = [0x20, 0x01, 0x0d, 0xb8, ...new Array<number>(11).fill(0), 7] // 2001:db8::7
const V6_LOOPBACK = [...new Array<number>(15).fill(0), 1]
const MAPPED_LOOPBACK = [...new Array<number>(10).fill(0), 0xff, 0xff, 127, 0, 0, 1]

describe('the real client address behind a proxy (trustProxy)', () => {
  let bus: Bus
  let proxied: TestGateway // trustProxy on
  let direct: TestGateway // trustProxy off
  const clients: MqttClient[] = []
  const ws = async (gw: TestGateway, xff?: string, opts: Record<string, unknown> = {}) => {
    const c = await connectMqtt(`ws://127.0.0.1:${gw.ports.ws}/mqtt`, {
      ...opts,
      ...(xff === undefined ? {} : { wsOptions: { headers: { 'X-Forwarded-For': xff } } }),
    })
    clients.push(c)
    return c
  }

  beforeAll(async () => {
    const pem = selfSigned()
    const users = [{ username: 'alice', passwordHash: await hashPassword('wonderland', CHEAP) }]
    bus = createInProcessBus({ prefix: uniquePrefix('proxy') })
    const tls = { cert: pem.cert, key: pem.key }
    proxied = await startTestGateway({
      bus,
      gatewayId: 'proxied',
      users,
      trustProxy: true,
      proxyHeaderTimeoutMs: 500,
      wsPort: 0,
      tlsPort: 0,
      wssPort: 0,
      tls,
    })
    direct = await startTestGateway({ bus, gatewayId: 'direct', users, wsPort: 0, tlsPort: 0, tls })
  })
  afterAll(async () => {
    for (const c of clients) c.end(true)
    await proxied?.close()
    await direct?.close()
    await bus?.close()
  })

  it('PROXY v1 gives the real address to the anonymous-from-loopback decision', async () => {
    const port = proxied.ports.mqtt
    expect(await connackAfter(port, proxyV1('127.0.0.1'))).toBe(0)
    expect(await connackAfter(port, proxyV1('::1', 'TCP6'))).toBe(0)
    expect(await connackAfter(port, proxyV1('203.0.113.9'))).toBe(5)
    expect(await connackAfter(port, proxyV1('2001:db8::7', 'TCP6'))).toBe(5)
    // Credentials do not depend on the address.
    const login = { username: 'alice', password: Buffer.from('wonderland') }
    expect(await connackAfter(port, proxyV1('203.0.113.9'), login)).toBe(0)
  })

  it('PROXY v2 (binary, with TLVs) likewise; LOCAL names no client, so it is not loopback', async () => {
    const port = proxied.ports.mqtt
    const tlv = Buffer.from([0x05, 0x00, 0x03, 0x61, 0x62, 0x63]) // PP2_TYPE_UNIQUE_ID "abc"
    expect(await connackAfter(port, proxyV2([127, 0, 0, 1], tlv))).toBe(0)
    expect(await connackAfter(port, proxyV2(V6_LOOPBACK))).toBe(0)
    expect(await connackAfter(port, proxyV2(MAPPED_LOOPBACK))).toBe(0)
    expect(await connackAfter(port, proxyV2(TEST_NET, tlv))).toBe(5)
    expect(await connackAfter(port, proxyV2(V6_DOC))).toBe(5)
    expect(await connackAfter(port, proxyV2('local'))).toBe(5)
  })

  it('reads the PROXY header before the TLS handshake on the TLS listener', async () => {
    const port = proxied.ports.tls!
    expect(await connackAfter(port, proxyV1('127.0.0.1'), {}, { tls: true })).toBe(0)
    expect(await connackAfter(port, proxyV2(TEST_NET), {}, { tls: true })).toBe(5)
    expect(await connackAfter(port, undefined, {}, { tls: true })).toBe(5)
  })

  it('a TCP connection without a PROXY header is not loopback; a malformed one is closed', async () => {
    const port = proxied.ports.mqtt
    const before = proxied.stats().proxyRefused
    expect(await connackAfter(port, undefined)).toBe(5)
    const login = { username: 'alice', password: Buffer.from('wonderland') }
    expect(await connackAfter(port, undefined, login)).toBe(0) // the supervisor's case
    expect(await connackAfter(port, Buffer.from('PROXY TCP4 nonsense\r\n'))).toBe('closed')
    expect(await connackAfter(port, Buffer.from('PROXY TCP4 1.2.3.4 5.6.7.8 1'))).toBe('closed')
    const bad = proxyV2(TEST_NET)
    bad[12] = 0x31 // version 3
    expect(await connackAfter(port, bad)).toBe('closed')
    expect(proxied.stats().proxyRefused - before).toBe(3)
  })

  it('WebSocket: the last X-Forwarded-For entry decides; without one, not loopback', async () => {
    await ws(proxied, '127.0.0.1')
    await ws(proxied, '198.51.100.1, 127.0.0.1') // earlier entries are the client's claim
    await expect(ws(proxied, '203.0.113.9')).rejects.toMatchObject({ code: 5 })
    await expect(ws(proxied, '127.0.0.1, 203.0.113.9')).rejects.toMatchObject({ code: 5 })
    await expect(ws(proxied, 'not-an-ip')).rejects.toMatchObject({ code: 5 })
    await expect(ws(proxied)).rejects.toMatchObject({ code: 5 })
    await ws(proxied, undefined, { username: 'alice', password: 'wonderland' })
  })

  it('without trustProxy nothing changes: a PROXY header is bad bytes, X-Forwarded-For is ignored', async () => {
    expect(await connackAfter(direct.ports.mqtt, undefined)).toBe(0)
    // 'P' reads as a PUBREC before CONNECT; aedes closes it, or waits for its bytes: no CONNACK.
    const quick = { timeoutMs: 1_000 }
    expect(['closed', 'timeout']).toContain(
      await connackAfter(direct.ports.mqtt, proxyV1('127.0.0.1'), {}, quick)
    )
    expect(['closed', 'timeout']).toContain(
      await connackAfter(direct.ports.mqtt, proxyV2([127, 0, 0, 1]), {}, quick)
    )
    expect(await connackAfter(direct.ports.tls!, undefined, {}, { tls: true })).toBe(0)
    await ws(direct, '203.0.113.9') // the socket's peer is 127.0.0.1
  })
})
