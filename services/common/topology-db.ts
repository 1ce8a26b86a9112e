import { z } from 'zod'
import { decodeJson, encodeJson, type Bus, type KvBucket } from './bus/bus.ts'
import { KvConflictError } from './errors.ts'
import { INSTANCE_ID_PATTERN } from './instance-id.ts'
import { fromWire, supersedes, toWire, type StoredAdvert, type WireAdvert } from './topology.ts'

/**
 * The mesh's link-state database on the bus (bucket `topology`, key = origin instance id), shared
 * by the supervisor (which originates this instance's advert and exchanges with upstreams) and
 * the handshake API (which exchanges with downstreams). Merged by highest version per origin.
 */
export const TOPOLOGY_BUCKET = 'topology'
/** Key = incoming request id: when its downstream last exchanged topology with us. */
export const TOPOLOGY_HEARD_BUCKET = 'topology-heard'

export const MAX_ADVERTS = 1_000 // a mesh of up to a thousand instances
const MAX_NEIGHBOURS = 1_000
const MAX_TRIES = 5 // compare-and-set retries against concurrent merges of the same origin

const InstanceId = z.string().regex(INSTANCE_ID_PATTERN)
export const WireAdvertSchema = z.strictObject({
  origin: InstanceId,
  version: z.number().int().nonnegative(),
  neighbours: z.array(InstanceId).max(MAX_NEIGHBOURS),
  out: z.array(InstanceId).max(MAX_NEIGHBOURS),
  maxAgeMs: z.number().int().positive().max(86_400_000), // at most a day
  ageMs: z.number().int().nonnegative(),
})
/** What each side of a topology exchange sends: its whole database. */
export const TopologyExchangeSchema = z.strictObject({
  adverts: z.array(WireAdvertSchema).max(MAX_ADVERTS),
})
export type TopologyExchange = z.infer<typeof TopologyExchangeSchema>

export interface TopologyDb {
  /** Every stored advert, expired ones included (callers filter with `isLive`). */
  read(): Promise<StoredAdvert[]>
  /** The database as it travels. */
  exchange(now?: number): Promise<TopologyExchange>
  /** Merge what a neighbour sent; returns how many origins changed. */
  merge(adverts: readonly WireAdvert[], now?: number): Promise<number>
  /** Store one advert (this instance's own) if it supersedes what is there. */
  put(advert: StoredAdvert, now?: number): Promise<boolean>
  /** Delete expired adverts (garbage only: readers ignore them anyway). */
  prune(now?: number): Promise<void>
}

function parseStored(value: Uint8Array): StoredAdvert | undefined {
  try {
    return decodeJson<StoredAdvert>(value)
  } catch {
    return undefined // not ours to read: treated as absent, overwritten by the next merge
  }
}

export async function openTopologyDb(bus: Bus): Promise<TopologyDb> {
  const kv: KvBucket = await bus.kv(TOPOLOGY_BUCKET)

  async function read(): Promise<StoredAdvert[]> {
    const out: StoredAdvert[] = []
    for (const key of await kv.keys()) {
      const entry = await kv.get(key)
      const ad = entry && parseStored(entry.value)
      if (ad) out.push(ad)
    }
    return out
  }

  async function put(ad: StoredAdvert, now = Date.now()): Promise<boolean> {
    for (let i = 0; i < MAX_TRIES; i++) {
      const entry = await kv.get(ad.origin)
      const current = entry ? parseStored(entry.value) : undefined
      if (!supersedes(ad, current, now)) return false
      try {
        if (entry && entry.operation === 'PUT')
          await kv.update(ad.origin, encodeJson(ad), entry.revision)
        else await kv.put(ad.origin, encodeJson(ad))
        return true
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err
        // Another merge wrote this origin meanwhile: compare against it.
      }
    }
    return false
  }

  return {
    read,
    put,
    async exchange(now = Date.now()) {
      return {
        adverts: (await read()).map((ad) => toWire(ad, now)).filter((w) => w.ageMs < w.maxAgeMs),
      }
    },
    async merge(adverts, now = Date.now()) {
      let changed = 0
      for (const w of adverts) {
        const ad = fromWire(w, now)
        if (ad && (await put(ad, now))) changed++
      }
      return changed
    },
    async prune(now = Date.now()) {
      for (const ad of await read()) {
        if (now - ad.bornAt >= ad.maxAgeMs) await kv.delete(ad.origin)
      }
    },
  }
}
