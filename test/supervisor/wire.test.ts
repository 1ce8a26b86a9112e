import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import { generate, parser as createParser, type Packet } from 'mqtt-packet'
import { describe, expect, it } from 'vitest'
import { createWireReader, createWireWriter } from '../../services/supervisor/wire.ts'

type Seen =
  | { publish: [string, string, number, boolean, number] }
  | { ack: [string, number] }
  | { connack: [boolean, number] }
  | { error: string }

function reader() {
  const seen: Seen[] = []
  const read = createWireReader({
    publish: (t, p, q, r, id) => seen.push({ publish: [t, p.toString(), q, r, id] }),
    ack: (kind, id) => seen.push({ ack: [kind, id] }),
    connack: (sp, rc) => seen.push({ connack: [sp, rc] }),
    error: (err) => seen.push({ error: err.message }),
  })
  return { seen, read }
}

const enc = (p: object) => generate(p as Packet, { protocolVersion: 4 })

const stream = Buffer.concat([
  enc({ cmd: 'connack', sessionPresent: true, returnCode: 0 }),
  enc({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'), qos: 1, messageId: 7 }),
  enc({ cmd: 'publish', topic: 'ä/ü', payload: Buffer.alloc(20_000, 0x62), qos: 0, retain: true }),
  enc({ cmd: 'puback', messageId: 65_535 }),
  enc({ cmd: 'pingresp' }),
  enc({ cmd: 'suback', messageId: 3, granted: [1] }),
  enc({ cmd: 'unsuback', messageId: 4 }),
  enc({ cmd: 'publish', topic: 't', payload: Buffer.alloc(0), qos: 2, messageId: 9 }),
])

const expected: Seen[] = [
  { connack: [true, 0] },
  { publish: ['a/b', 'x', 1, false, 7] },
  { publish: ['ä/ü', 'b'.repeat(20_000), 0, true, 0] },
  { ack: ['puback', 65_535] },
  { ack: ['suback', 3] },
  { ack: ['unsuback', 4] },
  { publish: ['t', '', 2, false, 9] },
]

describe('wire reader', () => {
  it('reads a stream in one chunk, byte by byte, and in random splits alike', () => {
    const whole = reader()
    whole.read(stream)
    expect(whole.seen).toEqual(expected)

    const bytes = reader()
    for (let i = 0; i < stream.length; i++) bytes.read(stream.subarray(i, i + 1))
    expect(bytes.seen).toEqual(expected)

    for (let round = 0; round < 50; round++) {
      const r = reader()
      let o = 0
      while (o < stream.length) {
        const n = 1 + Math.floor(Math.random() * 3_000)
        r.read(stream.subarray(o, o + n))
        o += n
      }
      expect(r.seen).toEqual(expected)
    }
  })

  it('rejects a remaining length over four bytes and then reads nothing more', () => {
    const r = reader()
    r.read(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))
    r.read(enc({ cmd: 'puback', messageId: 1 }))
    expect(r.seen).toEqual([{ error: expect.stringMatching(/remaining length/) }])
  })
})

describe('wire writer', () => {
  it('writes one buffer per turn that mqtt-packet parses back, in order', async () => {
    const writes: Buffer[] = []
    const socket = Object.assign(new EventEmitter(), {
      destroyed: false,
      write: (b: Buffer) => writes.push(Buffer.from(b)),
      cork: () => {},
      uncork: () => {},
    }) as unknown as Socket
    const w = createWireWriter(socket)
    const big = Buffer.alloc(100_000, 0x63)
    w.publish('x/y', Buffer.from('one'), 1, false, 1)
    w.puback(513)
    w.publish('x/ÿ', big, 0, true, 0)
    w.publish('x/z', Buffer.from('three'), 1, true, 65_535)
    expect(writes).toEqual([]) // nothing until the end of the turn
    await new Promise((r) => setImmediate(r))
    w.puback(2)
    await new Promise((r) => setImmediate(r))
    const packets: Packet[] = []
    const p = createParser({ protocolVersion: 4 })
    p.on('packet', (pk: Packet) => packets.push(pk))
    for (const b of writes) p.parse(b)
    expect(packets.map((pk) => pk.cmd)).toEqual([
      'publish',
      'puback',
      'publish',
      'publish',
      'puback',
    ])
    expect(packets[0]).toMatchObject({ topic: 'x/y', qos: 1, messageId: 1, retain: false })
    expect(packets[1]).toMatchObject({ messageId: 513 })
    expect(packets[2]).toMatchObject({ topic: 'x/ÿ', qos: 0, retain: true })
    expect((packets[2] as { payload: Buffer }).payload.equals(big)).toBe(true)
    expect(packets[3]).toMatchObject({ topic: 'x/z', qos: 1, messageId: 65_535, retain: true })
    expect(packets[4]).toMatchObject({ messageId: 2 })
  })
})
