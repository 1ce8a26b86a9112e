import { randomBytes } from 'node:crypto'
import { Counter, Gauge, type Registry } from 'prom-client'
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
  create(): ConsoleSession
  /** The live session for a cookie value (its idle window moved on), or undefined. */
  touch(id: string): ConsoleSession | undefined
  /** Log out: true when there was such a session. */
  delete(id: string): boolean
  /** Count a refused sign-in. */
  refused(): void
  readonly size: number
}

export const DEFAULT_MAX_SESSIONS = 100
export const DEFAULT_IDLE_MS = 30 * 60_000 // 30 min without a request ends a session
export const DEFAULT_MAX_AGE_MS = 12 * 60 * 60_000 // 12 h after sign-in, whatever the use
const ID_BYTES = 32

export interface SessionOptions {
  max?: number
  idleMs?: number
  maxAgeMs?: number
  now?: () => number
  metrics?: Registry
}

/**
 * Console sessions, in this process's memory: a bounded map keyed by the sha-256 of the cookie
 * value, in least-recently-used order (a use moves a session to the end). A new session past
 * `max` first drops every expired one, then the least recently used. Every outcome is counted in
 * `ub_console_sessions_total{event}`; `ub_console_sessions` is the map's size.
 */
export function createSessionStore(options: SessionOptions = {}): SessionStore {
  const max = options.max ?? DEFAULT_MAX_SESSIONS
  const idleMs = options.idleMs ?? DEFAULT_IDLE_MS
  const maxAgeMs = options.maxAgeMs ?? DEFAULT_MAX_AGE_MS
  const now = options.now ?? Date.now
  const metrics = options.metrics ? sessionMetrics(options.metrics) : undefined
  const byHash = new Map<string, ConsoleSession>()
  const count = (event: SessionEvent) => {
    metrics?.events.inc({ event })
    metrics?.size.set(byHash.size)
  }

  const sweep = (at: number) => {
    for (const [key, s] of byHash) {
      if (s.expiresAt > at) continue
      byHash.delete(key)
      count('expired')
    }
  }

  return {
    create() {
      const at = now()
      if (byHash.size >= max) sweep(at)
      while (byHash.size >= max) {
        const oldest = byHash.keys().next().value as string
        byHash.delete(oldest)
        count('evicted')
      }
      const session: ConsoleSession = {
        id: randomBytes(ID_BYTES).toString('base64url'),
        csrf: randomBytes(ID_BYTES).toString('base64url'),
        createdAt: at,
        expiresAt: Math.min(at + idleMs, at + maxAgeMs),
      }
      byHash.set(sha256Hex(session.id), session)
      count('created')
      return session
    },
    touch(id) {
      const key = sha256Hex(id)
      const session = byHash.get(key)
      if (!session) return undefined
      const at = now()
      byHash.delete(key)
      if (session.expiresAt <= at) {
        count('expired')
        return undefined
      }
      session.expiresAt = Math.min(at + idleMs, session.createdAt + maxAgeMs)
      byHash.set(key, session) // to the end: most recently used
      return session
    },
    delete(id) {
      const gone = byHash.delete(sha256Hex(id))
      if (gone) count('logged_out')
      return gone
    },
    refused: () => count('refused'),
    get size() {
      return byHash.size
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
