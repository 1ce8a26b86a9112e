import { randomBytes } from 'node:crypto'
import { Counter, Gauge, type Registry } from 'prom-client'
import { z } from 'zod'
import { decodeJson, encodeJson, type KvBucket } from '../../common/bus/bus.ts'
import { sha256Hex } from '../../common/digest.ts'

/** One signed-in browser: the cookie holds `id`; the page sends `csrf` with every change. */
export interface ConsoleSession {
  /** What the cookie carries; the map keeps only its sha-256. */
  id: string
  csrf: string
  createdAt: number
  /** The end of the idle window, moved on each use, never past `createdAt + maxAgeMs`. */
  expiresAt: number
}

export type SessionEvent = 'created' | 'refused' | 'expired' | 'evicted' | 'logged_out'

export interface SessionStore {
  create(): Promise<ConsoleSession>
  /** The live session for a cookie value (its idle window moved on), or undefined. */
  touch(id: string): Promise<ConsoleSession | undefined>
  /** Log out: true when there was such a session. */
  delete(id: string): Promise<boolean>
  /** Count a refused sign-in. */
  refused(): void
  readonly size: number
  close(): Promise<void>
}

export const DEFAULT_MAX_SESSIONS = 100
export const DEFAULT_IDLE_MS = 30 * 60_000 // 30 min without a request ends a session
export const DEFAULT_MAX_AGE_MS = 12 * 60 * 60_000 // 12 h after sign-in, whatever the use
const ID_BYTES = 32
/** A session's moved idle window is written to the shared bucket at most this often. */
const SHARE_EVERY_MS = 60_000

export interface SessionOptions {
  max?: number
  idleMs?: number
  maxAgeMs?: number
  now?: () => number
  metrics?: Registry
  /**
   * The bucket every handshake replica shares (TTL = the maximum age), so a session made on one
   * replica works on the others behind a load balancer and a sign-out ends it on all of them.
   * Without it, sessions live in this process only.
   */
  shared?: Promise<KvBucket>
}

/** What a replica keeps of a session: the cookie value is known only by its sha-256 (the key). */
interface Held {
  csrf: string
  createdAt: number
  expiresAt: number
  /** The `expiresAt` last written to the shared bucket. */
  sharedExpiresAt: number
}

const SharedSchema = z.object({
  csrf: z.string(),
  createdAt: z.number(),
  expiresAt: z.number(),
})

/**
 * Console sessions: a bounded map keyed by the sha-256 of the cookie value, in
 * least-recently-used order (a use moves a session to the end), and, when `shared` is given, a
 * KV bucket the replicas share: a replica that does not hold a session reads it there; a
 * sign-out or an eviction deletes it there, and every replica drops it (it watches the bucket);
 * an idle window moved on by use is written back at most once a minute. A new session past
 * `max` first drops every expired one, then the least recently used. Every outcome is counted in
 * `ub_console_sessions_total{event}`; `ub_console_sessions` is the map's size.
 */
export function createSessionStore(options: SessionOptions = {}): SessionStore {
  const max = options.max ?? DEFAULT_MAX_SESSIONS
  const idleMs = options.idleMs ?? DEFAULT_IDLE_MS
  const maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS
  const now = options.now ?? Date.now
  const metrics = options.metrics ? sessionMetrics(options.metrics) : undefined
  const byHash = new Map<string, Held>()
  const count = (event: SessionEvent) => {
    metrics?.events.inc({ event })
    metrics?.size.set(byHash.size)
  }
  const shared = options.shared && watchShared(options.shared, byHash)

  const forget = (key: string) => {
    byHash.delete(key)
    // Best effort: the bucket's TTL ends it anyway, and a replica that still reads it sees it
    // expired by its own clock.
    void shared?.kv.then((kv) => kv.delete(key)).catch(() => {})
  }
  const share = (key: string, held: Held) => {
    held.sharedExpiresAt = held.expiresAt
    const { csrf, createdAt, expiresAt } = held
    return shared?.kv.then((kv) => kv.put(key, encodeJson({ csrf, createdAt, expiresAt })))
  }
  const sweep = (at: number) => {
    for (const [key, held] of byHash) {
      if (held.expiresAt > at) continue
      forget(key)
      count('expired')
    }
  }
  /**
   * Room for one more: the expired first, then the least recently used, each counted; `drop`
   * says how far an eviction goes (a session made here leaves the bucket too, one read from it
   * only this replica's map).
   */
  const makeRoom = (drop: (key: string) => void) => {
    if (byHash.size >= max) sweep(now())
    while (byHash.size >= max) {
      drop(byHash.keys().next().value as string)
      count('evicted')
    }
  }
  const lookUp = async (key: string): Promise<Held | undefined> => {
    const held = byHash.get(key)
    if (held || !shared) return held
    const entry = await (await shared.kv).get(key).catch(() => null)
    const parsed = entry && SharedSchema.safeParse(decodeJson(entry.value))
    if (!parsed?.success) return undefined
    const found = { ...parsed.data, sharedExpiresAt: parsed.data.expiresAt }
    makeRoom((evicted) => byHash.delete(evicted))
    byHash.set(key, found)
    return found
  }

  return {
    async create() {
      makeRoom(forget)
      const at = now()
      const id = randomBytes(ID_BYTES).toString('base64url')
      const held: Held = {
        csrf: randomBytes(ID_BYTES).toString('base64url'),
        createdAt: at,
        expiresAt: Math.min(at + idleMs, at + maxAgeMs),
        sharedExpiresAt: 0,
      }
      const key = sha256Hex(id)
      byHash.set(key, held)
      await share(key, held)
      count('created')
      return viewOf(id, held)
    },
    async touch(id) {
      const key = sha256Hex(id)
      const held = await lookUp(key)
      if (!held) return undefined
      const at = now()
      if (held.expiresAt <= at) {
        forget(key)
        count('expired')
        return undefined
      }
      held.expiresAt = Math.min(at + idleMs, held.createdAt + maxAgeMs)
      byHash.delete(key)
      byHash.set(key, held) // to the end: most recently used
      if (held.expiresAt - held.sharedExpiresAt >= SHARE_EVERY_MS)
        void share(key, held)?.catch(() => {})
      return viewOf(id, held)
    },
    async delete(id) {
      const key = sha256Hex(id)
      const gone = (await lookUp(key)) !== undefined
      byHash.delete(key)
      if (shared) await (await shared.kv).delete(key)
      if (gone) count('logged_out')
      return gone
    },
    refused: () => count('refused'),
    get size() {
      return byHash.size
    },
    close: async () => shared?.close(),
  }
}

const viewOf = (id: string, { csrf, createdAt, expiresAt }: Held): ConsoleSession => ({
  id,
  csrf,
  createdAt,
  expiresAt,
})

/** The shared bucket, and a watch that drops sessions deleted on another replica. */
function watchShared(bucket: Promise<KvBucket>, byHash: Map<string, Held>) {
  const watching = bucket.then((kv) =>
    kv.watch(
      (entry) => {
        if (entry.operation === 'DEL') byHash.delete(entry.key)
      },
      { includeCurrent: false }
    )
  )
  watching.catch(() => {}) // a replica without the watch still reads and deletes in the bucket
  return {
    kv: bucket,
    close: async () => {
      await (await watching.catch(() => undefined))?.unsubscribe()
    },
  }
}

function sessionMetrics(registry: Registry) {
  const events =
    (registry.getSingleMetric('ub_console_sessions_total') as Counter<'event'> | undefined) ??
    new Counter({
      name: 'ub_console_sessions_total',
      help: 'Console sessions by event: created, refused (wrong token), expired, evicted (past the bound), logged_out',
      labelNames: ['event'],
      registers: [registry],
    })
  const size =
    (registry.getSingleMetric('ub_console_sessions') as Gauge | undefined) ??
    new Gauge({
      name: 'ub_console_sessions',
      help: 'Console sessions held in memory',
      registers: [registry],
    })
  return { events, size }
}
