/**
 * What keeps a flood of CONNECTs from costing more than a bounded share of the gateway: a
 * semaphore with a bounded queue per kind of expensive check, and a per-source budget of
 * CONNECTs that fail authentication.
 */

/** Thrown when a limiter's queue is full; the caller closes the connection without a CONNACK. */
export class Busy extends Error {
  constructor(what: string) {
    super(`server unavailable: too many ${what} in progress`)
    this.name = 'Busy'
  }
}

export interface Limiter {
  /** Run `task` when one of `concurrency` slots is free; throws Busy past `queueMax` waiting. */
  run<T>(task: () => Promise<T>): Promise<T>
  readonly active: number
  readonly waiting: number
}

export function createLimiter(what: string, concurrency: number, queueMax: number): Limiter {
  let active = 0
  const queue: Array<() => void> = []
  const release = () => {
    active--
    queue.shift()?.()
  }
  return {
    async run(task) {
      if (active >= concurrency) {
        if (queue.length >= queueMax) throw new Busy(what)
        await new Promise<void>((r) => queue.push(r))
      }
      active++
      try {
        return await task()
      } finally {
        release()
      }
    },
    get active() {
      return active
    },
    get waiting() {
      return queue.length
    },
  }
}

export interface SourceBudgetOptions {
  /** Tokens a source regains per second. */
  perSec: number
  /** Tokens a source holds at most (what it may spend at once). */
  burst: number
  /** Checks one source may have in progress at once. */
  pendingMax: number
  /** Sources remembered; past it the least recently seen is forgotten. */
  maxSources: number
}

export type Admit = { ok: true; done(success: boolean): void } | { ok: false; reason: string }

/**
 * Per source (an IPv4 address or an IPv6 /64): a token bucket of CONNECTs, where a CONNECT
 * whose credentials prove good gives its token back, so only failed ones are limited; and a cap
 * on checks in progress, so one source cannot fill the queues of the expensive checks.
 */
export function createSourceBudget({ perSec, burst, pendingMax, maxSources }: SourceBudgetOptions) {
  // Map order is recency order: a touched source is re-inserted at the end.
  const sources = new Map<string, { tokens: number; at: number; pending: number }>()
  let evictions = 0
  const touch = (key: string, now: number) => {
    let s = sources.get(key)
    if (s) {
      sources.delete(key)
      s.tokens = Math.min(burst, s.tokens + ((now - s.at) / 1000) * perSec)
      s.at = now
    } else {
      s = { tokens: burst, at: now, pending: 0 }
      while (sources.size >= maxSources) {
        // The least recently seen goes (a fresh bucket is lenient; its checks in progress finish
        // against the forgotten entry).
        const oldest = sources.keys().next().value as string
        sources.delete(oldest)
        evictions++
      }
    }
    sources.set(key, s)
    return s
  }
  return {
    admit(key: string): Admit {
      const s = touch(key, Date.now())
      if (s.pending >= pendingMax) return { ok: false, reason: 'too many CONNECTs in progress' }
      if (s.tokens < 1) return { ok: false, reason: 'too many failed CONNECTs' }
      s.tokens--
      s.pending++
      let settled = false
      return {
        ok: true,
        done(success) {
          if (settled) return
          settled = true
          s.pending--
          if (success) s.tokens = Math.min(burst, s.tokens + 1)
        },
      }
    },
    get size() {
      return sources.size
    },
    get evictions() {
      return evictions
    },
  }
}

export type SourceBudget = ReturnType<typeof createSourceBudget>
