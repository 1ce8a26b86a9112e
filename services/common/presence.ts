/**
 * Presence: who is in the fabric, for `GET /api/v1/cluster` (README.md, HTTP API). Each service a
 * process runs keeps a record in the KV bucket `presence`, written again every `intervalMs`; the
 * bucket's TTL is PRESENCE_TTL_PERIODS periods, so a member that stops announcing (killed,
 * partitioned) is gone within that, and one that stops cleanly deletes its record at once. A KV
 * bucket rather than heartbeats on a subject: a reader that just started sees every member at once
 * without listening a period, alike on NATS and on the in-process bus.
 */
import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { Counter, type Registry } from 'prom-client'
import { z } from 'zod'
import { decodeJson, encodeJson, validateKvKey, type Bus, type KvBucket } from './bus/bus.ts'
import { SERVICE_NAMES } from './config.ts'
import type { Logger } from './log.ts'
import { packageVersion } from './version.ts'

export const PRESENCE_BUCKET = 'presence'
export const DEFAULT_PRESENCE_INTERVAL_MS = 2_000 // config `presenceIntervalMs`
/** A record lives this many periods unrenewed: one late or lost write does not drop a member. */
export const PRESENCE_TTL_PERIODS = 3
/** Members the bucket holds at most; a process past it does not join (counted). */
export const DEFAULT_PRESENCE_MAX_MEMBERS = 1_000
/** Bridges one supervisor's record lists (`bridgeCount` has them all): bounds a record's size. */
export const MAX_LISTED_BRIDGES = 500
export const PRESENCE_REFUSED_METRIC = 'ub_presence_refused_total'

export const GatewayFactsSchema = z.object({
  gatewayId: z.string(),
  clients: z.number().int().describe('MQTT clients connected to this gateway'),
  ports: z.record(z.string(), z.number().int()).describe('listener name → port'),
})

export const BridgeFactSchema = z.object({
  upstreamId: z.string(),
  host: z.string(),
  state: z.string().describe('the bridge link state (Connecting, Forwarding, …)'),
})
export type BridgeFact = z.infer<typeof BridgeFactSchema>

export const SupervisorFactsSchema = z.object({
  supervisorId: z.string(),
  bridgeCount: z.number().int().describe('bridges this replica owns (holds the lease of)'),
  bridges: z.array(BridgeFactSchema).describe(`the first ${MAX_LISTED_BRIDGES} by upstream id`),
})

/** One member's record, as stored and as `GET /api/v1/cluster` lists it. */
export const MemberSchema = z.object({
  service: z.string().min(1).max(64),
  memberId: z.string().describe('`<service>-<run id>`: one per service and process run'),
  host: z.string(),
  pid: z.number().int(),
  version: z.string(),
  startedAt: z.string().describe('ISO 8601, when the service joined'),
  lastSeenAt: z.string().describe("ISO 8601, the member's last announcement (its own clock)"),
  uptimeMs: z.number().describe('ms since startedAt, as of lastSeenAt'),
  gateway: GatewayFactsSchema.optional(),
  supervisor: SupervisorFactsSchema.optional(),
})
export type Member = z.infer<typeof MemberSchema>

/** What a service adds to its record, read at every announcement. */
export interface MemberFacts {
  gateway?: z.infer<typeof GatewayFactsSchema>
  supervisor?: { supervisorId: string; bridges: readonly BridgeFact[] }
}

export interface PresenceOptions {
  bus: Bus
  log: Logger
  /** Where `ub_presence_refused_total` goes. */
  metrics?: Registry
  intervalMs?: number
  maxMembers?: number
  /** Identity of this process; defaults are os.hostname(), the pid and package.json's version. */
  host?: string
  pid?: number
  version?: string
}

export interface Presence {
  /** Announce `service` from now on, every interval, until `close`; the first write is `announce`'s or the next tick's. */
  join(service: string, facts?: () => MemberFacts): void
  /** Write every member's record now (the launcher awaits it, so a ready process is listed). */
  announce(): Promise<void>
  /** Stop announcing and delete this process's records: gone from the view at once. */
  close(): Promise<void>
}

interface Joined {
  service: string
  memberId: string
  startedAt: number
  facts: (() => MemberFacts) | undefined
  /** Written at least once: past the cap check. */
  listed: boolean
  /** Said once per streak in the log, not every period. */
  complained: boolean
}

export const presenceTtlMs = (intervalMs = DEFAULT_PRESENCE_INTERVAL_MS): number =>
  intervalMs * PRESENCE_TTL_PERIODS

/** The bucket; its TTL is fixed by whoever makes it first, so every process uses the same interval. */
export function openPresenceBucket(bus: Bus, intervalMs?: number): Promise<KvBucket> {
  return bus.kv(PRESENCE_BUCKET, { ttlMs: presenceTtlMs(intervalMs) })
}

export async function startPresence(options: PresenceOptions): Promise<Presence> {
  const { bus, log } = options
  const intervalMs = options.intervalMs ?? DEFAULT_PRESENCE_INTERVAL_MS
  const maxMembers = options.maxMembers ?? DEFAULT_PRESENCE_MAX_MEMBERS
  const identity = {
    host: options.host ?? hostname(),
    pid: options.pid ?? process.pid,
    version: options.version ?? packageVersion(),
  }
  const kv = await openPresenceBucket(bus, intervalMs)
  const refused = refusedCounter(options.metrics)
  const runId = randomBytes(4).toString('hex')
  const members = new Map<string, Joined>()
  const pending = new Set<Promise<void>>()
  let ticking = false
  let closed = false

  function recordOf(m: Joined): Member {
    const now = Date.now()
    return {
      service: m.service,
      memberId: m.memberId,
      ...identity,
      startedAt: new Date(m.startedAt).toISOString(),
      lastSeenAt: new Date(now).toISOString(),
      uptimeMs: now - m.startedAt,
      ...boundedFacts(m.facts?.()),
    }
  }

  async function announceOne(m: Joined): Promise<void> {
    try {
      if (!m.listed && (await kv.keys()).length >= maxMembers) {
        refused.inc()
        if (!m.complained)
          log.warn({ memberId: m.memberId, maxMembers }, 'presence: the cluster view is full')
        m.complained = true
        return
      }
      await kv.put(m.memberId, encodeJson(recordOf(m)))
      if (m.complained) log.info({ memberId: m.memberId }, 'presence: announcing again')
      m.listed = true
      m.complained = false
    } catch (err) {
      if (!m.complained) log.warn({ err, memberId: m.memberId }, 'presence: announcement failed')
      m.complained = true
    }
  }

  /** Tracked, so `close` waits for a write in flight before it deletes (else it would come back). */
  function announce(): Promise<void> {
    if (closed) return Promise.resolve()
    const run = Promise.all([...members.values()].map(announceOne)).then(() => {})
    pending.add(run)
    return run.finally(() => pending.delete(run))
  }

  const timer = setInterval(() => {
    if (ticking) return // the last round is still out: a slow bus gets no pile of writes
    ticking = true
    void announce().finally(() => (ticking = false))
  }, intervalMs)
  timer.unref()

  let closing: Promise<void> | undefined
  return {
    join(service, facts) {
      const memberId = `${service}-${runId}`
      validateKvKey(memberId)
      members.set(memberId, {
        service,
        memberId,
        startedAt: Date.now(),
        facts,
        listed: false,
        complained: false,
      })
    },
    announce,
    close: () =>
      (closing ??= (async () => {
        closed = true
        clearInterval(timer)
        await Promise.all(pending)
        const ids = [...members.keys()]
        members.clear()
        // The bus may be gone already (a failed start): the TTL then removes the records.
        await Promise.all(ids.map((id) => kv.delete(id).catch(() => {})))
      })()),
  }
}

function boundedFacts(facts: MemberFacts | undefined): Pick<Member, 'gateway' | 'supervisor'> {
  if (!facts) return {}
  const { gateway, supervisor } = facts
  return {
    ...(gateway ? { gateway } : {}),
    ...(supervisor
      ? {
          supervisor: {
            supervisorId: supervisor.supervisorId,
            bridgeCount: supervisor.bridges.length,
            bridges: [...supervisor.bridges]
              .sort((a, b) => a.upstreamId.localeCompare(b.upstreamId))
              .slice(0, MAX_LISTED_BRIDGES),
          },
        }
      : {}),
  }
}

export interface ClusterView {
  /** By service (store, gateway, supervisor, handshake, then others by name), host, pid, id. */
  members: Member[]
  /** Members per service; the four services are always there, 0 when none runs. */
  counts: Record<string, number>
  /** Members past `maxMembers` not listed (the bucket holds more than the cap, briefly). */
  omitted: number
}

/** Every member's last record, read from the bucket: the KV server, not the reader, applies the TTL. */
export async function readCluster(
  bus: Bus,
  {
    intervalMs,
    maxMembers = DEFAULT_PRESENCE_MAX_MEMBERS,
  }: { intervalMs?: number; maxMembers?: number } = {}
): Promise<ClusterView> {
  const kv = await openPresenceBucket(bus, intervalMs)
  const keys = (await kv.keys()).sort()
  const listed = keys.slice(0, maxMembers)
  const entries = await Promise.all(listed.map((key) => kv.get(key)))
  const members = entries.flatMap((entry) => {
    // Null: gone between the listing and the read. Unparseable: not ours; skipped.
    const parsed = entry && MemberSchema.safeParse(parseJson(entry.value))
    return parsed?.success ? [parsed.data] : []
  })
  members.sort(byServiceHostPid)
  const counts: Record<string, number> = Object.fromEntries(SERVICE_NAMES.map((s) => [s, 0]))
  for (const m of members) counts[m.service] = (counts[m.service] ?? 0) + 1
  return { members, counts, omitted: keys.length - listed.length }
}

function byServiceHostPid(a: Member, b: Member): number {
  const rank = (s: string) => {
    const i = (SERVICE_NAMES as readonly string[]).indexOf(s)
    return i === -1 ? SERVICE_NAMES.length : i
  }
  return (
    rank(a.service) - rank(b.service) ||
    a.service.localeCompare(b.service) ||
    a.host.localeCompare(b.host) ||
    a.pid - b.pid ||
    a.memberId.localeCompare(b.memberId)
  )
}

function parseJson(value: Uint8Array): unknown {
  try {
    return decodeJson(value)
  } catch {
    return undefined
  }
}

function refusedCounter(registry: Registry | undefined): { inc(): void } {
  if (!registry) return { inc: () => {} }
  const existing = registry.getSingleMetric(PRESENCE_REFUSED_METRIC)
  if (existing) return existing as Counter
  return new Counter({
    name: PRESENCE_REFUSED_METRIC,
    help: 'presence announcements not written because the cluster view held its maximum of members',
    registers: [registry],
  })
}
