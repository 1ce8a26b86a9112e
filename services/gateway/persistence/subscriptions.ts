/**
 * Subscriptions of clean=false sessions in `gw_subs`: one key per client, changed by
 * compare-and-set. A local trie, kept current by the bucket's watch, answers
 * `subscriptionsByTopic`, which aedes runs on every QoS > 0 publish.
 */
import { Readable } from 'node:stream'
import type { KvBucket, Subscription } from '../../common/bus/bus.ts'
import { keyToken } from '../codec.ts'
import { createSubTrie, type StoredSub } from '../topic-match.ts'
import { casLoop, createVersioned, mirrorBucket, parse, type Client } from './kv.ts'

type SubRecord = { qos: number; rh?: number; rap?: boolean; nl?: boolean }
type Sub = SubRecord & { topic: string }
/**
 * A client's value in `gw_subs`: its id (the key is a token of it), its filters, and when it was
 * last seen (connect, disconnect, or a periodic touch while connected), for session expiry.
 */
type ClientSubs = { id: string; subs: Record<string, SubRecord>; seenAt?: number }

export function createSubscriptionStore({ kv }: { kv: KvBucket }) {
  const subsByClient = new Map<string, Map<string, SubRecord>>()
  // Client → last seen (ms), from the same records; absent for records written before expiry.
  const seenAtOf = new Map<string, number>()
  const trie = createSubTrie()
  const clientOfKey = new Map<string, string>()
  const applySubs = createVersioned<ClientSubs>((key, value) => {
    const id = value?.id ?? clientOfKey.get(key)
    if (id === undefined) return
    clientOfKey.set(key, id)
    for (const topic of subsByClient.get(id)?.keys() ?? []) trie.remove(id, topic)
    if (!value || Object.keys(value.subs).length === 0) {
      subsByClient.delete(id)
      seenAtOf.delete(id)
      return
    }
    if (value.seenAt !== undefined) seenAtOf.set(id, value.seenAt)
    const map = new Map(Object.entries(value.subs))
    subsByClient.set(id, map)
    for (const [topic, s] of map) if (s.qos > 0) trie.add({ clientId: id, topic, ...s })
  })

  /** Change one client's subscriptions in KV, then in the local cache. */
  async function change(
    client: Client,
    next: (current: ClientSubs | null) => ClientSubs | null
  ): Promise<void> {
    const key = keyToken(client.id)
    const r = await casLoop<ClientSubs>(kv, key, next)
    if (r) applySubs(key, r.value, r.revision)
  }

  /** Record that `clientId`'s session was seen now; nothing if it holds no subscriptions. */
  async function touch(clientId: string): Promise<void> {
    if (!subsByClient.has(clientId)) return
    await change({ id: clientId }, (cur) => (cur ? { ...cur, seenAt: Date.now() } : null))
  }

  return {
    load: (watches: Subscription[]): Promise<void> =>
      mirrorBucket(kv, (k, v, r) => applySubs(k, v && parse(v), r), watches),

    addSubscriptions(client: Client, subs: Sub[]): Promise<void> {
      return change(client, (cur) => {
        const next = { id: client.id, subs: { ...(cur?.subs ?? {}) }, seenAt: Date.now() }
        for (const s of subs) next.subs[s.topic] = pick(s)
        return next
      })
    },
    removeSubscriptions(client: Client, topics: string[]): Promise<void> {
      return change(client, (cur) => {
        if (!cur) return null
        const next = { ...cur, subs: { ...cur.subs } }
        for (const t of topics) delete next.subs[t]
        return Object.keys(next.subs).length === 0 ? null : next
      })
    },
    async subscriptionsByClient(client: Client): Promise<Sub[]> {
      // Read KV, not the cache: the client may have subscribed on another gateway a moment ago.
      const e = await kv.get(keyToken(client.id))
      if (!e) return []
      const { subs } = parse<{ subs: Record<string, SubRecord> }>(e.value)
      return Object.entries(subs).map(([topic, s]) => ({ topic, ...s }))
    },
    async subscriptionsByTopic(topic: string): Promise<StoredSub[]> {
      return trie.match(topic)
    },
    async cleanSubscriptions(client: Client): Promise<void> {
      const key = keyToken(client.id)
      if (subsByClient.has(client.id) || (await kv.get(key))) await kv.delete(key)
    },
    touch,
    /**
     * Sessions last seen before `before`. A record without a time (written before expiry
     * existed) is given one now, so it expires a whole period later, never at once.
     */
    async unseenSince(before: number): Promise<string[]> {
      const stale: string[] = []
      for (const id of subsByClient.keys()) {
        const seenAt = seenAtOf.get(id)
        if (seenAt === undefined) await touch(id)
        else if (seenAt < before) stale.push(id)
      }
      return stale
    },
    async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
      return { subsCount: trie.size, clientsCount: subsByClient.size }
    },
    getClientList(topic: string): Readable {
      const ids = [...subsByClient].filter(([, m]) => m.has(topic)).map(([id]) => id)
      return Readable.from(ids)
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

export type SubscriptionStore = ReturnType<typeof createSubscriptionStore>
