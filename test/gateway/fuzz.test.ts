import fc from 'fast-check'
import type { MqttClient } from 'mqtt'
import * as mqttPacket from 'mqtt-packet'
import { connect as netConnect } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { WebSocket, createWebSocketStream } from 'ws'
import type { Duplex } from 'node:stream'
import type { Bus } from '../../services/common/bus/bus.ts'
import { createInProcessBus } from '../../services/common/bus/in-process.ts'
import { collect, connectMqtt, startTestGateway, type TestGateway } from '../helpers/gateway.ts'
import { uniquePrefix } from '../helpers/nats.ts'
import { connectPacket } from './raw.ts'

const SEED = 20_240_611 // fixed: a failure names its seed and path, and replays
const RUNS = 25
const BATCH = 8 // connections fuzzed at once per run: 200 malformed clients in all
const MAX_PACKET_BYTES = 65_536

/** A malformed input, and whether the spec says the server must close the connection. */
interface Case {
  kind: string
  bytes: readonly number[]
  mustClose: boolean
  /** Sent instead of a CONNECT (else after a good CONNECT and its CONNACK). */
  first: boolean
  ws: boolean
}

const gen = (p: mqttPacket.Packet) => [...mqttPacket.generate(p)]
/** A PUBLISH with the topic's bytes as given (mqtt-packet would encode a JS string). */
const publishRaw = (topic: number[], qos: 0 | 1 = 0) => {
  const body = [topic.length >> 8, topic.length & 255, ...topic, ...(qos ? [0, 1] : []), 0x61]
  return [0x30 | (qos << 1), body.length, ...body]
}
const topicBytes = fc.array(fc.integer({ min: 0x61, max: 0x7a }), { minLength: 1, maxLength: 8 })
const BAD_UTF8 = [[0xc3, 0x28], [0xff], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xc0, 0xaf]]

const caseArb = fc.oneof(
  fc
    .uint8Array({ minLength: 1, maxLength: 200 })
    .map((b) => ({ kind: 'random bytes', bytes: [...b], mustClose: false, first: false })),
  fc
    .uint8Array({ minLength: 1, maxLength: 60 })
    .map((b) => ({ kind: 'random bytes first', bytes: [...b], mustClose: false, first: true })),
  fc.tuple(topicBytes, fc.nat()).map(([t, cut]) => {
    const whole = gen({
      cmd: 'publish',
      topic: String.fromCharCode(...t),
      payload: Buffer.from('xyz'),
      qos: 1,
      messageId: 7,
      retain: false,
      dup: false,
    })
    const bytes = whole.slice(0, 1 + (cut % (whole.length - 1)))
    return { kind: 'truncated publish', bytes, mustClose: false, first: false }
  }),
  fc.integer({ min: MAX_PACKET_BYTES + 1, max: 268_435_455 }).map((len) => {
    const enc: number[] = []
    do {
      enc.push((len % 128) | (len >= 128 ? 0x80 : 0))
      len = Math.floor(len / 128)
    } while (len > 0)
    return { kind: 'oversized length', bytes: [0x30, ...enc], mustClose: true, first: false }
  }),
  fc.constant({
    kind: 'five-byte length',
    bytes: [0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
    mustClose: true,
    first: false,
  }),
  fc
    .tuple(topicBytes, fc.constantFrom(...BAD_UTF8), fc.constantFrom(0, 1) as fc.Arbitrary<0 | 1>)
    .map(([t, bad, qos]) => ({
      kind: 'invalid UTF-8 topic',
      bytes: publishRaw([...t, ...bad], qos),
      mustClose: true,
      first: false,
    })),
  topicBytes.map((t) => ({
    kind: 'U+0000 in topic',
    bytes: publishRaw([...t, 0, ...t]),
    mustClose: true,
    first: false,
  })),
  fc
    .constantFrom(
      // [MQTT-2.2.2-2]: wrong fixed-header flags close the connection.
      { kind: 'SUBSCRIBE flags 0000', bytes: [0x80, 6, 0, 1, 0, 1, 0x61, 0] },
      { kind: 'UNSUBSCRIBE flags 0000', bytes: [0xa0, 5, 0, 1, 0, 1, 0x61] },
      { kind: 'PUBREL flags 0000', bytes: [0x60, 2, 0, 1] },
      { kind: 'PUBLISH QoS 3', bytes: [0x36, 6, 0, 1, 0x61, 0, 1, 0x62] },
      { kind: 'reserved type 15', bytes: [0xf0, 0] },
      { kind: 'reserved type 0', bytes: [0x00, 0] },
      { kind: 'second CONNECT', bytes: gen(connectPacket()) }
    )
    .map((c) => ({ ...c, mustClose: true, first: false })),
  fc.constant({
    kind: 'CONNECT reserved flag',
    bytes: (() => {
      const b = gen(connectPacket({ clientId: 'z' }))
      b[9] = b[9]! | 1 // connect flags: bit 0 is reserved [MQTT-3.1.2-3]
      return b
    })(),
    mustClose: true,
    first: true,
  })
)

describe('malformed packets over the TCP and WebSocket listeners (fast-check fuzzer)', () => {
  let bus: Bus
  let gw: TestGateway
  let pub: MqttClient, sub: MqttClient
  const crashes: unknown[] = []
  const onCrash = (err: unknown) => void crashes.push(err)

  beforeAll(async () => {
    process.on('uncaughtException', onCrash)
    process.on('unhandledRejection', onCrash)
    bus = createInProcessBus({ prefix: uniquePrefix('fuzz') })
    gw = await startTestGateway({ bus, wsPort: 0, limits: { maxPacketSize: MAX_PACKET_BYTES } })
    sub = await connectMqtt(gw.url, { clientId: 'fuzz-sub', clean: false })
    await sub.subscribeAsync('fuzz/good', { qos: 1 })
    pub = await connectMqtt(`ws://127.0.0.1:${gw.ports.ws}/mqtt`, { clientId: 'fuzz-pub' })
  })
  afterAll(async () => {
    pub?.end(true)
    sub?.end(true)
    await gw?.close()
    await bus?.close()
    process.off('uncaughtException', onCrash)
    process.off('unhandledRejection', onCrash)
  })

  /** One malformed client: connect, CONNECT unless the case is its own first packet, send. */
  async function run(c: Case): Promise<void> {
    const conn = await open(c.ws)
    // A WebSocket stream only ends when the server closes; a TCP socket closes.
    const closed = new Promise<void>((r) => {
      conn.once('close', () => r())
      conn.once('end', () => r())
    })
    conn.resume() // read (and drop) what is not parsed, so 'end' can come
    conn.on('error', () => {})
    if (!c.first) {
      const got = new Promise<void>((resolve, reject) => {
        const parser = mqttPacket.parser({ protocolVersion: 4 })
        parser.once('packet', (p) => (p.cmd === 'connack' ? resolve() : reject(new Error(p.cmd))))
        conn.on('data', (d: Buffer) => parser.parse(d))
        void closed.then(() => reject(new Error('closed before CONNACK')))
      })
      conn.write(mqttPacket.generate(connectPacket()))
      await got
    }
    conn.write(Buffer.from(c.bytes))
    if (c.mustClose) {
      const timeout = new Promise<string>((r) => setTimeout(() => r('open'), 3_000))
      const outcome = await Promise.race([closed.then(() => 'closed'), timeout])
      if (outcome !== 'closed') {
        conn.destroy()
        throw new Error(
          `${c.kind} over ${c.ws ? 'ws' : 'tcp'} left the connection open: [${c.bytes}]`
        )
      }
    } else {
      await Promise.race([closed, new Promise((r) => setTimeout(r, 50))])
      conn.destroy()
    }
  }

  async function open(ws: boolean): Promise<Duplex> {
    if (ws) {
      const socket = new WebSocket(`ws://127.0.0.1:${gw.ports.ws}/mqtt`, 'mqtt')
      await new Promise<void>((resolve, reject) => {
        socket.once('open', () => resolve())
        socket.once('error', reject)
      })
      return createWebSocketStream(socket)
    }
    const socket = netConnect(gw.ports.mqtt, '127.0.0.1')
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('error', reject)
    })
    return socket
  }

  it('closes only the offending client; a QoS 1 pair connected throughout loses nothing', async () => {
    const got = collect(sub)
    let sent = 0
    let publishing = true
    const publisher = (async () => {
      while (publishing) {
        await pub.publishAsync('fuzz/good', String(sent), { qos: 1 })
        sent++
        await new Promise((r) => setTimeout(r, 5))
      }
    })()
    const arb = fc.array(
      fc.tuple(caseArb, fc.boolean()).map(([c, ws]): Case => ({ ...c, ws })),
      { minLength: BATCH, maxLength: BATCH }
    )
    await fc.assert(
      fc.asyncProperty(arb, async (cases) => {
        await Promise.all(cases.map(run))
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true }
    )
    publishing = false
    await publisher
    await got.waitFor(sent, 10_000)
    expect(got.messages.map((m) => Number(m.payload))).toEqual([...Array(sent).keys()])
    expect(sent).toBeGreaterThan(10)
    expect(pub.connected && sub.connected).toBe(true)
    expect(crashes).toEqual([])
  })

  it('closes a client whose CONNECT holds broken UTF-8 (client id, will topic, username)', async () => {
    const base = mqttPacket.generate(connectPacket({ clientId: 'utf8-AAAA' }))
    for (const bad of [
      Buffer.from([0xc3, 0x28]), // a two-byte sequence cut short
      Buffer.from([0x41, 0x00]), // U+0000
    ]) {
      const bytes = Buffer.from(base)
      bytes.set(bad, bytes.indexOf('AAAA') + 1) // inside the client id
      const socket = netConnect(gw.ports.mqtt, '127.0.0.1')
      const replies: Buffer[] = []
      socket.on('data', (d) => replies.push(d))
      socket.on('error', () => {})
      await new Promise<void>((r) => socket.once('connect', () => r()))
      socket.write(bytes)
      await new Promise<void>((r) => socket.once('close', () => r()))
      // Closed without a CONNACK that accepted it.
      expect(Buffer.concat(replies).subarray(0, 4)).not.toEqual(
        Buffer.from([0x20, 0x02, 0x00, 0x00])
      )
    }
  })
})
