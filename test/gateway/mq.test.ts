import { afterEach, describe, expect, it } from 'vitest'
import { createInProcessBus, createInProcessHub } from '../../services/common/bus/in-process.ts'
import { topicToSubject } from '../../services/common/bus/topic.ts'
import { silentLogger } from '../../services/common/log.ts'
import { encodePacket, type WirePacket } from '../../services/gateway/codec.ts'
import { decodeFrame, encodeFrame, frameSender } from '../../services/gateway/frame.ts'
import { createBusMq, MQ_SUBJECT, type AedesMq } from '../../services/gateway/mq.ts'
import { subjectOfTopic } from '../../services/gateway/subject.ts'
import { eventually } from '../helpers/gateway.ts'

const packet = (topic: string, counter: number, extra: Partial<WirePacket> = {}): WirePacket => ({
  cmd: 'publish',
  topic,
  payload: Buffer.from(`m${counter}`),
  qos: 0,
  retain: false,
  brokerId: 'broker-a',
  brokerCounter: counter,
  ...extra,
})

describe('the mq frame', () => {
  it('round-trips every packet field, with the sender standing in for its own broker id', () => {
    const topic = 'ünï/cødé'
    const packets: WirePacket[] = [
      packet(topic, 1, { clientId: 'pub-1' }),
      packet(topic, 2, { qos: 1, retain: true, dup: true, messageId: 7, brokerId: 'other' }),
      { cmd: 'publish', topic, payload: Buffer.alloc(0), qos: 2, retain: false },
      packet(topic, 2 ** 40, { payload: Buffer.alloc(70_000, 1) }),
    ]
    const frame = encodeFrame('broker-a', 4_294_967_297, topic, packets)
    const decoded = decodeFrame(frame)
    expect(decoded).toEqual({ sender: 'broker-a', seq: 1, topic, packets })
  })

  it('names its sender without decoding the packets (a gateway skips its own frames)', () => {
    for (const sender of ['broker-a', 'gw-ünï', '']) {
      expect(frameSender(encodeFrame(sender, 1, 't', [packet('t', 1)]))).toBe(sender)
    }
  })

  it('refuses a truncated frame', () => {
    const frame = encodeFrame('s', 1, 'a', [packet('a', 1)])
    expect(() => decodeFrame(frame.subarray(0, frame.length - 1))).toThrow(/truncated/)
  })
})

describe('subjectOfTopic', () => {
  it('agrees with topicToSubject on plain and escaped topics', () => {
    for (const t of [
      'a',
      'a/b/c',
      'sensors/line-1/temp_C',
      '/a',
      'a/',
      'a//b',
      'a.b/c',
      'a b',
      'x/*/y',
      'x/>',
      'a%2F',
      'a*b/c>d',
      'tab\there',
      'ünï/cødé',
      '$SYS/x/heartbeat',
    ]) {
      expect(subjectOfTopic(t)).toBe(topicToSubject(t))
    }
  })
})

describe('the bus mq between two gateways', () => {
  const mqs: AedesMq[] = []
  afterEach(async () => {
    await Promise.all(mqs.splice(0).map((mq) => new Promise<void>((r) => mq.close(r))))
  })

  function pair() {
    const hub = createInProcessHub()
    const log = silentLogger()
    const busA = createInProcessBus({ prefix: 'ub', hub })
    const busB = createInProcessBus({ prefix: 'ub', hub })
    const a = createBusMq({ bus: busA, brokerId: () => 'broker-a', log })
    const b = createBusMq({ bus: busB, brokerId: () => 'broker-b', log })
    mqs.push(a, b)
    return { a, b, busA }
  }

  const on = (mq: AedesMq, filter: string, got: WirePacket[]) =>
    new Promise<void>((resolve) => mq.on(filter, (p, done) => (got.push(p), done()), resolve))

  it('keeps one origin’s order across topics, once per packet for overlapping filters', async () => {
    const { a, b } = pair()
    const got: WirePacket[] = []
    await on(b, 'x/#', got)
    await on(b, 'x/+', got) // the same listener list: each delivery is one push
    const sent = ['x/a', 'x/a', 'x/b', 'x/a', 'x/b', 'x/b'].map((t, i) => packet(t, i + 1))
    for (const p of sent) a.emit(p)
    // Two local listeners match each packet, so each arrives twice, but never more.
    await eventually(() => got.length === sent.length * 2)
    const counters = got.map((p) => p.brokerCounter)
    expect(counters).toEqual(sent.flatMap((p) => [p.brokerCounter, p.brokerCounter]))
  })

  it('does not hand a gateway its own packets twice', async () => {
    const { a } = pair()
    const got: WirePacket[] = []
    await on(a, 'y/#', got)
    a.emit(packet('y/1', 1))
    await eventually(() => got.length === 1)
    await new Promise((r) => setTimeout(r, 50))
    expect(got).toHaveLength(1)
  })

  it('frames a topic only while another gateway listens to it (in process)', async () => {
    const { a, b, busA } = pair()
    const framed: string[] = []
    const publish = busA.publish.bind(busA)
    busA.publish = (subject, data, headers) => {
      if (subject.startsWith(`${MQ_SUBJECT}.`)) framed.push(subject)
      publish(subject, data, headers)
    }
    const turn = () => new Promise((r) => setImmediate(r)) // a run is framed at setImmediate
    const own: WirePacket[] = []
    await on(a, 'w/#', own)
    a.emit(packet('w/1', 1))
    await turn()
    expect(own).toHaveLength(1)
    expect(framed).toEqual([]) // only the sender itself listens: nothing to frame
    const got: WirePacket[] = []
    const listener = (p: WirePacket, done: () => void) => (got.push(p), done())
    await new Promise<void>((resolve) => b.on('w/+', listener, resolve))
    a.emit(packet('w/1', 2))
    await eventually(() => got.length === 1)
    expect(framed).toEqual([`${MQ_SUBJECT}.${subjectOfTopic('w/1')}`])
    expect(got[0]!.brokerCounter).toBe(2)
    await new Promise<void>((resolve) => b.removeListener('w/+', listener, resolve))
    await turn()
    a.emit(packet('w/1', 3))
    await turn()
    expect(framed).toHaveLength(1) // nobody else again
    expect(own.map((p) => p.brokerCounter)).toEqual([1, 2, 3])
  })

  it('reads the single-packet frames of an older gateway', async () => {
    const { b, busA } = pair()
    const got: WirePacket[] = []
    await on(b, 'z/#', got)
    const old = packet('z/1', 9, { brokerId: 'old-broker' })
    busA.publish(`${MQ_SUBJECT}.${topicToSubject('z/1')}`, encodePacket(old))
    busA.publish(`${MQ_SUBJECT}.${topicToSubject('z/1')}`, encodePacket(old)) // a duplicate
    await eventually(() => got.length === 1)
    await new Promise((r) => setTimeout(r, 50))
    expect(got).toEqual([old])
  })
})
