import { Readable } from 'node:stream'
import type { Bus, KvBucket, Subscription } from '../common/bus/bus.ts'
import { KvConflictError } from '../common/errors.ts'
import type { Logger } from '../common/log.ts'
import {
  decodePacket,
  encodePacket,
  keyToken,
  keyTopic,
  topicKey,
  type WirePacket,
} from './codec.ts'
import { createRetainedTree } from './retained-tree.ts'
import { createSubTrie, type StoredSub } from './topic-match.ts'

/**
 * aedes `persistence` over the bus's KV, shared by every gateway on one bus (PLUG-POINTS §1.3,
 * §1.7). Reads on hot paths come from local caches that KV watches keep current; writes go to
 * KV first. Buckets (under the bus prefix):
 * - `gw_retained`: one key per topic; last writer wins in KV order, on every gateway.
 * - `gw_subs`: clean=false subscriptions, one key per client; a local trie answers
 *   `subscriptionsByTopic`, which aedes runs on every QoS > 0 publish.
 * - `gw_outgoing`: one key per queued QoS > 0 message and persistent subscriber, written by the
 *   publishing gateway, erased (no delete marker per message) by whichever gateway gets the
 *   PUBACK or refuses the message to that session.
 * - `gw_wills`: one key per client, tagged with its gateway's broker id; a dead gateway's wills
 *   are claimed by compare-and-set so exactly one survivor publishes each.
 * QoS 2 inbound state stays local (see `incoming*`).
 */
export interface BusPersistenceOptions {
  bus: Bus
  log: Logger
  /** Queued messages older than this are dropped (MQTT 3.1.1 sessions never expire: aedes#599). */
  queueTtlMs?: number
  /** First deadline for listing a session's queue in KV; doubled on each of 3 retries. */
  queueListMs?: number
}

export const DEFAULT_QUEUE_TTL_MS = 7 * 24 * 3_600_000 // 7 days
// A listing takes milliseconds, but a NATS KV keys() over keys that are being written and deleted
// at the same time can fail to end (seen on reconnect, while live messages for the same client
// are queued and cleared); the session then never got its queue.
export const DEFAULT_QUEUE_LIST_MS = 2_000 // 2 s
const QUEUE_LIST_ATTEMPTS = 4

interface Client {
  id: string
  /**
   * aedes' per-connection dedupe record (lib/client.js `dedupe`): the highest broker counter
   * delivered from each origin broker; live copies at or below it are dropped.
   */
  duplicates?: Record<string, number>
}
interface Broker {
  id: string
  publish(packet: WirePacket, done: (err?: Error | null) => void): void
}
type SubRecord = { qos: number; rh?: number; rap?: boolean; nl?: boolean }
type Sub = SubRecord & { topic: string }

/** What aedes sends once a QoS 2 PUBLISH was PUBRECed. */
interface PubrelPacket {
  cmd: 'pubrel'
  messageId?: number
  brokerId?: string
  brokerCounter?: number
}

interface InflightEntry {
  key: string
  brokerId?: string
  brokerCounter?: number
}

/** A message's origin (broker id and counter), without absent fields. */
const originOf = (p: { brokerId?: string; brokerCounter?: number }) => ({
  ...(p.brokerId === undefined ? {} : { brokerId: p.brokerId }),
  ...(p.brokerCounter === undefined ? {} : { brokerCounter: p.brokerCounter }),
})

const pubrelOf = (p: WirePacket): PubrelPacket => ({
  cmd: 'pubrel',
  ...(p.messageId === undefined ? {} : { messageId: p.messageId }),
  ...originOf(p),
})

const json = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v))
const parse = <T>(d: Uint8Array): T => JSON.parse(Buffer.from(d).toString('utf8')) as T

/** Apply a KV entry only if it is newer than what we hold for its key (watch vs. own writes). */
function createVersioned<T>(onChange: (key: string, value: T | null) => void) {
  const revs = new Map<string, number>()
  return (key: string, value: T | null, revision: number): void => {
    if (revision <= (revs.get(key) ?? 0)) return
    revs.set(key, revision)
    onChange(key, value)
  }
}

/** Compare-and-set loop on one key: `change` maps the current value to the next (null = delete). */
async function casLoop<T>(
  kv: KvBucket,
  key: string,
  change: (current: T | null) => T | null
): Promise<{ value: T | null; revision: number } | null> {
  for (let attempt = 0; ; attempt++) {
    const entry = await kv.get(key)
    const next = change(entry ? parse<T>(entry.value) : null)
    try {
      if (next === null) {
        if (entry) await kv.delete(key)
        return null
      }
      const revision = entry
        ? await kv.update(key, json(next), entry.revision)
        : await kv.create(key, json(next))
      return { value: next, revision }
    } catch (err) {
      if (!(err instanceof KvConflictError) || attempt > 20) throw err
    }
  }
}

export async function createBusPersistence({
  bus,
  log,
  queueTtlMs = DEFAULT_QUEUE_TTL_MS,
  queueListMs = DEFAULT_QUEUE_LIST_MS,
}: BusPersistenceOptions) {
  const [retainedKv, subsKv, outKv, willsKv] = await Promise.all([
    bus.kv('gw_retained'),
    bus.kv('gw_subs'),
    bus.kv('gw_outgoing', { ttlMs: queueTtlMs }),
    bus.kv('gw_wills'),
  ])
  let broker: Broker | undefined
  const watches: Subscription[] = []

  const retained = createRetainedTree<WirePacket>()
  const applyRetained = createVersioned<WirePacket>((key, p) => {
    if (p) retained.set(p.topic, p)
    else retained.delete(keyTopic(key))
  })

  const subsByClient = new Map<string, Map<string, SubRecord>>()
  const trie = createSubTrie()
  const applySubs = createVersioned<{ id: string; subs: Record<string, SubRecord> }>(
    (key, value) => {
      const id = value?.id ?? clientOfKey.get(key)
      if (id === undefined) return
      clientOfKey.set(key, id)
      for (const topic of subsByClient.get(id)?.keys() ?? []) trie.remove(id, topic)
      if (!value || Object.keys(value.subs).length === 0) {
        subsByClient.delete(id)
        return
      }
      const map = new Map(Object.entries(value.subs))
      subsByClient.set(id, map)
      for (const [topic, s] of map) if (s.qos > 0) trie.add({ clientId: id, topic, ...s })
    }
  )
  const clientOfKey = new Map<string, string>()

  // clientId → messageId → the queued message it stands for; PUBACKs and PUBCOMPs arrive where
  // the client is connected, which is the gateway that assigned the messageId in `outgoingUpdate`.
  const inflight = new Map<string, Map<number, InflightEntry>>()
  const incoming = new Map<string, Map<number, WirePacket>>()

  function onRetained(key: string, value: Uint8Array | null, revision: number): void {
    const packet = value === null ? null : decodePacket(value).packet
    applyRetained(key, packet && packet.payload.length > 0 ? packet : null, revision)
  }

  async function load(kv: KvBucket, apply: (k: string, v: Uint8Array | null, r: number) => void) {
    // Watch first and then read what is there: whichever arrives later with an older revision
    // is ignored, so nothing written between the two steps is lost.
    watches.push(
      await kv.watch((e) => apply(e.key, e.operation === 'PUT' ? e.value : null, e.revision))
    )
    const keys = await kv.keys()
    await Promise.all(
      keys.map(async (k) => {
        const e = await kv.get(k)
        if (e) apply(k, e.value, e.revision)
      })
    )
  }

  const outKey = (clientId: string, p: { brokerId?: string; brokerCounter?: number }): string =>
    `${keyToken(clientId)}.${keyToken(p.brokerId ?? '')}.${p.brokerCounter ?? 0}`

  function enqueue(clientId: string, p: WirePacket): Promise<number> {
    const packet: WirePacket = { ...p, cmd: 'publish' }
    delete packet.messageId
    return outKv.put(outKey(clientId, packet), encodePacket(packet, { at: Date.now() }))
  }

  /** `outKv.keys` with a deadline and retries: a fresh listing ends where a stuck one did not. */
  async function listQueue(clientId: string): Promise<string[]> {
    for (let attempt = 1, waitMs = queueListMs; ; attempt++, waitMs *= 2) {
      let timer: NodeJS.Timeout | undefined
      const keys = await Promise.race([
        outKv.keys(`${keyToken(clientId)}.>`),
        new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), waitMs))),
      ]).finally(() => clearTimeout(timer))
      if (keys) return keys
      if (attempt === QUEUE_LIST_ATTEMPTS) {
        throw new Error(`listing the queue of '${clientId}' did not finish in ${attempt} attempts`)
      }
      log.warn(
        { clientId, attempt, waitMs },
        'listing a session queue in KV did not finish; retrying'
      )
    }
  }

  /**
   * A session's queue, oldest first. `delivered` (the connection's dedupe record) learns each
   * message handed out, so the live copy of a message published just before the reconnect,
   * held until the queue is drained (see connack-gate.ts), is not delivered a second time.
   */
  async function* clientQueue(
    clientId: string,
    delivered?: Record<string, number>
  ): AsyncGenerator<WirePacket | PubrelPacket> {
    const keys = await listQueue(clientId)
    const entries = await Promise.all(keys.map((k) => outKv.get(k)))
    const queued = entries
      .filter((e) => e !== null)
      .map((e) => decodePacket(e.value))
      // Arrival order across publishers; per-publisher order by its counter [MQTT-4.6.0-6].
      .sort(
        (a, b) =>
          (a.extra?.at as number) - (b.extra?.at as number) ||
          (a.packet.brokerCounter ?? 0) - (b.packet.brokerCounter ?? 0)
      )
    for (const q of queued) {
      // A QoS 2 message the client already received (PUBREC): what is owed is its PUBREL,
      // with the packet id the client knows [MQTT-4.4.0-1].
      if (q.extra?.pubrel === true) yield pubrelOf(q.packet)
      else {
        const { brokerId, brokerCounter } = q.packet
        if (delivered && brokerId !== undefined && brokerCounter !== undefined)
          delivered[brokerId] = Math.max(delivered[brokerId] ?? 0, brokerCounter)
        yield q.packet
      }
    }
  }

  /** Wills of gateways that stopped beating, each claimed by compare-and-set: one survivor wins it. */
  async function* deadWills(
    brokers: Record<string, unknown>
  ): AsyncGenerator<{ key: string; will: WirePacket; revision: number }> {
    const me = broker?.id
    for (const key of await willsKv.keys()) {
      const e = await willsKv.get(key)
      if (!e) continue
      const { packet, extra } = decodePacket(e.value)
      if (packet.brokerId === undefined || brokers[packet.brokerId]) continue
      const claim = extra?.claim as string | undefined
      if (claim !== undefined && claim !== me && brokers[claim]) continue // a live peer has it
      let revision: number
      try {
        revision = await willsKv.update(key, encodePacket(packet, { claim: me }), e.revision)
      } catch (err) {
        if (err instanceof KvConflictError) continue
        throw err
      }
      yield { key, will: packet, revision }
    }
  }

  /**
   * Publish the wills this survivor won, as its own messages. aedes would publish them under the
   * dead gateway's broker id with this gateway's counter; receivers dedupe per client on
   * (broker id, counter), so wills sent by two survivors under one dead id drop each other.
   */
  let sweeping = false
  async function publishDeadWills(brokers: Record<string, unknown>): Promise<void> {
    if (sweeping || !broker) return
    sweeping = true
    try {
      for await (const { key, will, revision } of deadWills(brokers)) {
        const { brokerId: _deadGateway, brokerCounter: _itsCounter, ...fresh } = will
        await new Promise<void>((resolve, reject) =>
          broker!.publish({ ...fresh, payload: Buffer.from(will.payload) }, (err) =>
            err ? reject(err) : resolve()
          )
        )
        // Remove only our claim: a client that reconnected meanwhile may have a new will here.
        await willsKv.erase(key, revision)
      }
    } finally {
      sweeping = false
    }
  }

  return {
    async setup(b: Broker): Promise<void> {
      broker = b
      await Promise.all([
        load(retainedKv, onRetained),
        load(subsKv, (k, v, r) => applySubs(k, v && parse(v), r)),
      ])
    },

    get retainedCount(): number {
      return retained.size
    },

    // ---- retained -------------------------------------------------------------------------
    async storeRetained(p: WirePacket): Promise<void> {
      // [MQTT-3.3.1-10]: a zero-byte retained message removes the retained message. It is
      // written as an empty entry rather than a KV delete, because a put returns its revision
      // and the caches on every gateway must apply clears and sets in the same (KV) order.
      const key = topicKey(p.topic)
      const packet: WirePacket = {
        cmd: 'publish',
        topic: p.topic,
        payload: Buffer.from(p.payload),
        qos: p.qos,
        retain: true,
      }
      const revision = await retainedKv.put(key, encodePacket(packet))
      applyRetained(key, packet.payload.length > 0 ? packet : null, revision)
    },
    createRetainedStreamCombi(patterns: string[]): Readable {
      return Readable.from(retained.match(patterns))
    },
    createRetainedStream(pattern: string): Readable {
      return this.createRetainedStreamCombi([pattern])
    },

    // ---- subscriptions (clean=false only) ----------------------------------------------------
    async addSubscriptions(client: Client, subs: Sub[]): Promise<void> {
      const key = keyToken(client.id)
      const r = await casLoop<{ id: string; subs: Record<string, SubRecord> }>(
        subsKv,
        key,
        (cur) => {
          const next = { id: client.id, subs: { ...(cur?.subs ?? {}) } }
          for (const s of subs) next.subs[s.topic] = pick(s)
          return next
        }
      )
      if (r) applySubs(key, r.value, r.revision)
    },
    async removeSubscriptions(client: Client, topics: string[]): Promise<void> {
      const key = keyToken(client.id)
      const r = await casLoop<{ id: string; subs: Record<string, SubRecord> }>(
        subsKv,
        key,
        (cur) => {
          if (!cur) return null
          const next = { id: client.id, subs: { ...cur.subs } }
          for (const t of topics) delete next.subs[t]
          return Object.keys(next.subs).length === 0 ? null : next
        }
      )
      if (r) applySubs(key, r.value, r.revision)
    },
    async subscriptionsByClient(client: Client): Promise<Sub[]> {
      // Read KV, not the cache: the client may have subscribed on another gateway a moment ago.
      const e = await subsKv.get(keyToken(client.id))
      if (!e) return []
      const { subs } = parse<{ subs: Record<string, SubRecord> }>(e.value)
      return Object.entries(subs).map(([topic, s]) => ({ topic, ...s }))
    },
    async subscriptionsByTopic(topic: string): Promise<StoredSub[]> {
      return trie.match(topic)
    },
    async cleanSubscriptions(client: Client): Promise<void> {
      const key = keyToken(client.id)
      if (subsByClient.has(client.id) || (await subsKv.get(key))) await subsKv.delete(key)
    },
    async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
      return { subsCount: trie.size, clientsCount: subsByClient.size }
    },
    getClientList(topic: string): Readable {
      const ids = [...subsByClient].filter(([, m]) => m.has(topic)).map(([id]) => id)
      return Readable.from(ids)
    },

    // ---- outgoing (QoS > 0 to persistent sessions) -------------------------------------------
    async outgoingEnqueue(sub: { clientId: string }, packet: WirePacket): Promise<void> {
      await enqueue(sub.clientId, packet)
    },
    async outgoingEnqueueCombi(subs: Array<{ clientId: string }>, packet: WirePacket) {
      await Promise.all(subs.map((s) => enqueue(s.clientId, packet)))
    },
    async outgoingUpdate(client: Client, packet: WirePacket | PubrelPacket): Promise<void> {
      if (packet.messageId === undefined) return
      let ids = inflight.get(client.id)
      if (!ids) inflight.set(client.id, (ids = new Map()))
      const known = ids.get(packet.messageId)
      if (packet.cmd === 'pubrel' && known) {
        // PUBREC came for a queued QoS 2 message: it was delivered, and only its PUBREL is owed
        // now. The entry becomes that PUBREL, first in the queue, under the same packet id, so
        // a reconnect does not deliver the message twice [MQTT-4.3.3-1] [MQTT-4.4.0-1].
        const marker: WirePacket = {
          cmd: 'publish',
          topic: '',
          payload: Buffer.alloc(0),
          qos: 2,
          retain: false,
          messageId: packet.messageId,
          ...originOf(known),
        }
        await outKv.put(known.key, encodePacket(marker, { at: 0, pubrel: true }))
        return
      }
      // A PUBLISH (or a PUBREL replayed from the queue, which carries its entry's brokerId and
      // counter): no write. A queued PUBLISH keeps no messageId, and a redelivery after a
      // reconnect gets a fresh one. Only remember where to clear it when the PUBACK/PUBCOMP comes.
      ids.set(packet.messageId, { key: outKey(client.id, packet), ...originOf(packet) })
    },
    async outgoingClearMessageId(
      client: Client,
      packet: { messageId?: number; brokerId?: string; brokerCounter?: number }
    ) {
      if (packet.messageId === undefined) {
        // aedes calls this with the live packet, which has no messageId yet, when
        // `authorizeForward` refuses it for a persistent session (no-local, split horizon): the
        // copy `outgoingEnqueueCombi` queued for that session is then named by its origin and
        // counter. Left there, it would sit in KV until the session's next reconnect.
        if (packet.brokerId === undefined || packet.brokerCounter === undefined) return undefined
        await outKv.erase(outKey(client.id, packet))
        return packet
      }
      const ids = inflight.get(client.id)
      const entry = ids?.get(packet.messageId)
      if (entry === undefined) return undefined // never queued (clean session or a retained copy)
      ids!.delete(packet.messageId!)
      if (ids!.size === 0) inflight.delete(client.id)
      await outKv.erase(entry.key)
      return packet
    },
    outgoingStream(client: Client): Readable {
      return Readable.from(clientQueue(client.id, client.duplicates))
    },

    // ---- incoming QoS 2 -------------------------------------------------------------------
    // Kept per gateway: a QoS 2 sender that reconnects to another gateway may deliver its
    // message twice (as QoS 1 would), a documented limit.
    async incomingStorePacket(client: Client, packet: WirePacket): Promise<void> {
      let m = incoming.get(client.id)
      if (!m) incoming.set(client.id, (m = new Map()))
      m.set(packet.messageId!, { ...packet })
    },
    async incomingGetPacket(client: Client, packet: WirePacket): Promise<WirePacket> {
      const p = incoming.get(client.id)?.get(packet.messageId!)
      if (!p) throw new Error('no such packet')
      return p
    },
    async incomingDelPacket(client: Client, packet: WirePacket): Promise<void> {
      const m = incoming.get(client.id)
      if (!m?.delete(packet.messageId!)) throw new Error('no such packet')
    },
    async cleanIncoming(client: Client): Promise<void> {
      incoming.delete(client.id)
    },

    // ---- wills ----------------------------------------------------------------------------
    async putWill(client: Client, packet: WirePacket): Promise<void> {
      packet.brokerId = broker!.id
      packet.clientId = client.id
      await willsKv.put(keyToken(client.id), encodePacket(packet))
    },
    async getWill(client: Client): Promise<WirePacket | undefined> {
      const e = await willsKv.get(keyToken(client.id))
      return e ? decodePacket(e.value).packet : undefined
    },
    async delWill(client: Client & { brokerId?: string }): Promise<WirePacket | undefined> {
      const key = keyToken(client.id)
      const e = await willsKv.get(key)
      if (!e) return undefined
      const will = decodePacket(e.value).packet
      // After a takeover the old gateway deletes "its" will: leave the new connection's alone.
      if (client.brokerId !== undefined && will.brokerId !== client.brokerId) return undefined
      // Only the will read above: one a new connection put meanwhile stays. Erased, not deleted:
      // a marker per client id would stay for ever (this bucket has no TTL).
      await willsKv.erase(key, e.revision)
      return will
    },
    // aedes asks every 4 heartbeats, with the gateways it still hears. We publish the dead ones'
    // wills ourselves (see publishDeadWills) and hand aedes none.
    streamWill(brokers: Record<string, unknown> = {}): Readable {
      void publishDeadWills(brokers).catch((err: unknown) =>
        log.warn({ err }, 'could not publish the wills of a stopped gateway')
      )
      return Readable.from([])
    },

    async destroy(): Promise<void> {
      await Promise.allSettled(watches.splice(0).map((w) => w.unsubscribe()))
      log.debug('gateway persistence closed')
    },
  }
}

function pick(s: Sub): SubRecord {
  const r: SubRecord = { qos: s.qos }
  if (s.rh !== undefined) r.rh = s.rh
  if (s.rap !== undefined) r.rap = s.rap
  if (s.nl !== undefined) r.nl = s.nl
  return r
}

export type BusPersistence = Awaited<ReturnType<typeof createBusPersistence>>
