import mqemitter from 'mqemitter'
import type { Bus, Subscription } from '../common/bus/bus.ts'
import { filterToSubjects } from '../common/bus/topic.ts'
import type { Logger } from '../common/log.ts'
import { decodePacket, type WirePacket } from './codec.ts'
import { decodeFrame, encodeFrame, frameSender, isFrame, MAX_FRAME_PACKETS } from './frame.ts'
import { subjectOfTopic } from './subject.ts'

/** What aedes calls on its `mq` (the mqemitter interface, still callback-based in aedes 1.x). */
export interface AedesMq {
  on(topic: string, listener: Listener, done?: () => void): unknown
  removeListener(topic: string, listener: Listener, done?: () => void): unknown
  emit(packet: WirePacket, cb?: (err?: Error) => void): void
  close(cb: () => void): void
  /** Remote messages waiting for a local dispatch slot (no backpressure reaches NATS). */
  readonly queued: number
}

type Listener = (packet: WirePacket, done: () => void) => void

interface LocalEmitter {
  on(topic: string, listener: Listener): void
  removeListener(topic: string, listener: Listener): void
  emit(packet: WirePacket, cb?: (err?: Error) => void): void
  close(cb: () => void): void
  readonly length: number
}

export interface BusMqOptions {
  bus: Bus
  /** The aedes broker id: our own messages come back from the bus and are skipped. */
  brokerId: () => string
  log: Logger
  /** Local dispatch slots, as aedes `concurrency`. */
  concurrency?: number
  /** How many `brokerId:counter` keys to remember for dedupe. */
  dedupeWindow?: number
}

export const MQ_SUBJECT = 'mq'
const DEFAULT_CONCURRENCY = 100 // aedes' default
const DEFAULT_DEDUPE_WINDOW = 16_384 // frames; overlapping filters deliver within a few of each other
// A run of packets is sent early past this many payload bytes: one bus message stays far below
// NATS' max_payload (1 MiB by default) and a burst still reaches peers while it is being read.
const MAX_RUN_BYTES = 65_536

/**
 * aedes `mq` over the bus: local listeners are matched by mqemitter (qlobber, with
 * `matchEmptyLevels` for [MQTT-4.7.1-3]); every emit another gateway could hear is also
 * published on `mq.<subject>`, and each distinct filter holds one ref-counted bus subscription.
 * Local listeners get a local emit at once (with aedes' backpressure); copies from other gateways
 * are dispatched as they arrive. aedes' cluster control ($SYS birth, heartbeat, new/clients)
 * rides on the same path.
 *
 * A local listener's dispatch slot is released as soon as the message is handed to it: aedes'
 * listeners are client deliveries, and a client that does not read would otherwise hold its
 * slots until its socket drains, stopping delivery to everyone once 100 are held. What a client
 * has not yet taken is bounded per connection instead (outbound.ts).
 *
 * Consecutive emits on one topic go out as one frame (frame.ts), sent when the topic changes,
 * when the run is large, or on the next turn of the event loop (setImmediate). Sending a run
 * whenever the topic changes keeps the bus messages in emit order, so each origin's order holds
 * for every receiver, which aedes' dedupe needs (aedes#955).
 */
export function createBusMq({
  bus,
  brokerId,
  log,
  concurrency = DEFAULT_CONCURRENCY,
  dedupeWindow = DEFAULT_DEDUPE_WINDOW,
}: BusMqOptions): AedesMq {
  const local = mqemitter({ concurrency, matchEmptyLevels: true }) as unknown as LocalEmitter
  const filters = createFilterSubscriptions({ bus, log, onData: fromBus })
  // NATS delivers a message once per matching subscription, so two overlapping filters
  // (`a/#`, `a/+/c`) bring it twice; aedes' own per-client dedupe would hide that from clients
  // but not from its $SYS listeners.
  const seen = new Set<string>()
  let closed = false
  const releasing = createReleasing()

  function firstSighting(key: string): boolean {
    if (seen.has(key)) return false
    seen.add(key)
    if (seen.size > dedupeWindow) seen.delete(seen.values().next().value as string)
    return true
  }

  function fromBus(data: Uint8Array): void {
    if (closed) return
    if (!isFrame(data)) return fromOlderGateway(data)
    if (frameSender(data) === brokerId()) return // delivered locally at emit time
    let frame
    try {
      frame = decodeFrame(data)
    } catch (err) {
      log.warn({ err }, 'dropped an undecodable mq frame')
      return
    }
    if (!firstSighting(`${frame.sender}#${frame.seq}`)) return
    for (const packet of frame.packets) local.emit(packet)
  }

  /** One JSON-headed packet per message, as gateways before the binary frame sent it. */
  function fromOlderGateway(data: Uint8Array): void {
    let packet: WirePacket
    try {
      packet = decodePacket(data).packet
    } catch (err) {
      log.warn({ err }, 'dropped an undecodable mq frame')
      return
    }
    if (packet.brokerId !== undefined) {
      if (packet.brokerId === brokerId()) return
      if (!firstSighting(`${packet.brokerId}:${packet.brokerCounter}`)) return
    }
    local.emit(packet)
  }

  const runs = createRuns({ bus, brokerId, log, subscriptions: filters.subscriptions })

  return {
    on(topic, listener, done) {
      local.on(topic, releasing(listener))
      // SUBACK only once the bus knows the interest, so a publish right after it is seen.
      filters.add(topic).then(
        () => done?.(),
        (err: unknown) => {
          log.error({ err, topic }, 'bus subscription for an MQTT filter failed')
          done?.()
        }
      )
      return this
    },
    removeListener(topic, listener, done) {
      local.removeListener(topic, releasing(listener))
      filters.remove(topic)
      if (done) setImmediate(done)
      return this
    },
    emit(packet, cb) {
      if (closed) return cb?.(new Error('mq is closed'))
      runs.add(packet)
      local.emit(packet, cb)
    },
    close(cb) {
      runs.send()
      closed = true
      void filters.removeAll().then(() => local.close(cb))
    },
    get queued() {
      return local.length
    },
  }
}

/**
 * A gateway's own packets on their way to the bus: consecutive ones on one topic gather into a
 * run, sent as one frame when the topic changes, the run is large, or at the next turn.
 */
function createRuns({
  bus,
  brokerId,
  log,
  subscriptions,
}: {
  bus: Bus
  brokerId: () => string
  log: Logger
  /** The gateway's own bus subscriptions: a topic only they would hear is not framed. */
  subscriptions: ReadonlySet<Subscription>
}) {
  // Where the bus sees every subscriber (in process), a topic no other gateway listens to is not
  // framed at all: on one gateway every frame came back to its own subscription only to be
  // skipped, two copies of each payload (co-located bridge path, QoS 0, 1 KiB: CPU per message
  // 43.5 → 40 µs in an A/B of six rounds each).
  const heardElsewhere = bus.reachesBeyond
    ? (subject: string) => bus.reachesBeyond!(subject, subscriptions)
    : () => true
  // The subject of the last run's topic: a gateway's runs are mostly of a few busy topics.
  let lastTopic = ''
  let lastSubject = ''
  const subjectOf = (topic: string): string => {
    if (topic !== lastTopic) {
      lastSubject = `${MQ_SUBJECT}.${subjectOfTopic(topic)}`
      lastTopic = topic
    }
    return lastSubject
  }
  let run: { topic: string; subject: string; packets: WirePacket[]; bytes: number } | undefined
  let seq = 0
  let scheduled = false

  function send(): void {
    const r = run
    run = undefined
    if (!r) return
    try {
      const frame = encodeFrame(brokerId(), ++seq, r.topic, r.packets)
      bus.publish(r.subject, frame)
    } catch (err) {
      // A closed or failed bus must not stop local delivery; remote gateways miss these.
      log.warn({ err, topic: r.topic, packets: r.packets.length }, 'could not publish to the bus')
    }
  }

  function onTick(): void {
    scheduled = false
    send()
  }

  return {
    add(packet: WirePacket): void {
      if (run && run.topic !== packet.topic) send()
      if (!run) {
        const subject = subjectOf(packet.topic)
        if (!heardElsewhere(subject)) return
        run = { topic: packet.topic, subject, packets: [], bytes: 0 }
      }
      run.packets.push(packet)
      run.bytes += packet.payload.length
      if (run.bytes >= MAX_RUN_BYTES || run.packets.length === MAX_FRAME_PACKETS) send()
      else if (!scheduled) {
        scheduled = true
        setImmediate(onTick)
      }
    },
    send,
  }
}

function noop(): void {}

/**
 * aedes' listener → the same listener, its dispatch slot released at hand-out. One wrapper per
 * function, so `removeListener` finds what `on` added, for any topic.
 */
function createReleasing(): (listener: Listener) => Listener {
  const released = new WeakMap<Listener, Listener>()
  return (listener) => {
    let wrapped = released.get(listener)
    if (!wrapped) {
      wrapped = (packet, done) => {
        listener(packet, noop)
        done()
      }
      released.set(listener, wrapped)
    }
    return wrapped
  }
}

/** One ref-counted bus subscription per distinct MQTT filter, shared by its local listeners. */
function createFilterSubscriptions({
  bus,
  log,
  onData,
}: {
  bus: Bus
  log: Logger
  /** Each bus message on any filter's subjects. */
  onData: (data: Uint8Array) => void
}) {
  const filters = new Map<string, { refs: number; ready: Promise<Subscription[]> }>()
  // Every bus subscription these filters hold: a publish reaching only these reaches no one else.
  const subscriptions = new Set<Subscription>()

  async function subscribeFilter(filter: string): Promise<Subscription[]> {
    const subs = await Promise.all(
      filterToSubjects(filter).map((s) =>
        bus.subscribe(`${MQ_SUBJECT}.${s}`, (m) => onData(m.data))
      )
    )
    for (const sub of subs) subscriptions.add(sub)
    return subs
  }

  function unsubscribe(subs: Subscription[]): Promise<unknown> {
    for (const sub of subs) subscriptions.delete(sub)
    return Promise.all(subs.map((s) => s.unsubscribe()))
  }

  return {
    subscriptions: subscriptions as ReadonlySet<Subscription>,
    /** One more listener on `filter`; resolves once the bus knows the interest. */
    add(filter: string): Promise<Subscription[]> {
      let entry = filters.get(filter)
      if (entry) entry.refs++
      else {
        entry = { refs: 1, ready: subscribeFilter(filter) }
        filters.set(filter, entry)
      }
      return entry.ready
    },
    /** One listener less on `filter`; the last one ends its bus subscriptions. */
    remove(filter: string): void {
      const entry = filters.get(filter)
      if (entry && --entry.refs === 0) {
        filters.delete(filter)
        void entry.ready
          .then(unsubscribe)
          .catch((err: unknown) => log.warn({ err, topic: filter }, 'bus unsubscribe failed'))
      }
    },
    removeAll(): Promise<unknown> {
      const all = [...filters.values()]
      filters.clear()
      return Promise.allSettled(all.map((e) => e.ready.then(unsubscribe)))
    },
  }
}
