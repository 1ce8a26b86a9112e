import { Counter, type Registry } from 'prom-client'
import { z } from 'zod'
import { decodeJson, encodeJson, type Bus, type KvBucket } from './bus/bus.ts'
import { KvConflictError } from './errors.ts'
import { INSTANCE_ID_PATTERN } from './instance-id.ts'
import { instanceKey, PUBLIC_KEY_PATTERN } from './instance-key.ts'
import { fromWire, supersedes, toWire, type StoredAdvert, type WireAdvert } from './topology.ts'
import { judgeAdverts, type RejectReason } from './topology-trust.ts'

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
  // Optional on the wire so that one unsigned advert from an older peer costs only itself: it is
  // refused (and counted) by `judgeAdverts`, not the whole exchange.
  keys: z.record(InstanceId, z.string().regex(PUBLIC_KEY_PATTERN)).optional(),
  signature: z.string().max(128).optional(),
})
/** What each side of a topology exchange sends: its whole database. */
export const TopologyExchangeSchema = z.strictObject({
  adverts: z.array(WireAdvertSchema).max(MAX_ADVERTS),
  /**
   * A downstream's thin-edge.io mounts, `[{target, path}]` (supervisor/te-mounts.ts): read by
   * the handshake API's topology route, never relayed. A server that does not know the key
   * refuses the exchange (400) and the downstream asks again without it.
   */
  teMounts: z.array(z.unknown()).max(64).optional(),
})
export type TopologyExchange = z.infer<typeof TopologyExchangeSchema>

export interface TopologyDb {
  /** Every stored advert, expired ones included (callers filter with `isLive`). */
  read(): Promise<StoredAdvert[]>
  /** The database as it travels. */
  exchange(now?: number): Promise<TopologyExchange>
  /**
   * Merge what a neighbour sent, believing only adverts signed by their origin (`judgeAdverts`);
   * `direct` holds the keys learned in the handshake with that neighbour.
   */
  merge(
    adverts: readonly WireAdvert[],
    options: { direct: ReadonlyMap<string, string>; now?: number }
  ): Promise<MergeResult>
  /** Store one advert (this instance's own) if it supersedes what is there. */
  put(advert: StoredAdvert, now?: number): Promise<boolean>
  /** Delete expired adverts (garbage only: readers ignore them anyway). */
  prune(now?: number): Promise<void>
}

export interface MergeResult {
  /** How many origins changed. */
  changed: number
  /** Adverts refused, by reason. */
  rejected: Partial<Record<RejectReason, number>>
}

export interface TrustOptions {
  /** This instance: an advert claiming it is never taken from a neighbour. */
  instanceId: string
  /** How far an advert's version (its origin's clock, ms) may be from ours. */
  skewMs: number
  /** Where `ub_topology_adverts_rejected_total` is counted (shared by the services of a process). */
  metrics?: Registry
}

/** The config default of `meshClockSkewMs`, for callers built without config (tests). */
export const DEFAULT_MESH_CLOCK_SKEW_MS = 300_000

const REJECTED_METRIC = 'ub_topology_adverts_rejected_total'

function rejectedCounter(registry: Registry | undefined): Counter<'reason'> | undefined {
  if (!registry) return undefined
  const existing = registry.getSingleMetric(REJECTED_METRIC)
  if (existing) return existing as Counter<'reason'>
  return new Counter({
    name: REJECTED_METRIC,
    help: 'topology adverts refused: unsigned, bad_signature, unknown_origin, self, version',
    labelNames: ['reason'],
    registers: [registry],
  })
}

function parseStored(value: Uint8Array): StoredAdvert | undefined {
  try {
    return decodeJson<StoredAdvert>(value)
  } catch {
    return undefined // not ours to read: treated as absent, overwritten by the next merge
  }
}

export async function openTopologyDb(bus: Bus, trust: TrustOptions): Promise<TopologyDb> {
  const kv: KvBucket = await bus.kv(TOPOLOGY_BUCKET)
  const selfKey = (await instanceKey(bus)).publicKey
  const counter = rejectedCounter(trust.metrics)

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
    async merge(adverts, { direct, now = Date.now() }) {
      const incoming = adverts.flatMap((w) => fromWire(w, now) ?? [])
      const { accepted, rejected } = judgeAdverts({
        self: trust.instanceId,
        selfKey,
        direct,
        stored: await read(),
        incoming,
        now,
        skewMs: trust.skewMs,
      })
      let changed = 0
      for (const ad of accepted) if (await put(ad, now)) changed++
      for (const [reason, n] of Object.entries(rejected)) counter?.inc({ reason }, n)
      return { changed, rejected }
    },
    async prune(now = Date.now()) {
      for (const ad of await read()) {
        if (now - ad.bornAt >= ad.maxAgeMs) await kv.delete(ad.origin)
      }
    },
  }
}
