import { validateKvKey, type KvBucket } from '../common/bus/bus.ts'
import type { Logger } from '../common/log.ts'

/**
 * Bridges spread evenly over the supervisor replicas (ARCHITECTURE.md §8). Leases alone keep a
 * bridge where it was first claimed: a replica added later would own nothing until another one
 * died. So each replica announces itself in the bucket `supervisors` (TTL = lease TTL, renewed
 * every pass) and keeps to its fair share, ⌈Active bridges / replicas⌉: it claims no lease past
 * it, and hands back what it holds beyond it, a few per pass, for a replica below it to claim.
 * Every replica's share together covers every bridge, so none is left unowned.
 */
export interface Roster {
  /** Say this replica is here (every pass); a failed write is only logged. */
  announce(): Promise<void>
  /** Replicas announced within the TTL, this one counted even if its write failed. */
  count(): Promise<number>
  /** Gone from the roster at once (a clean stop). */
  leave(): Promise<void>
}

/** Leases a replica hands back per pass: a new replica fills up over a few passes, not in one burst of reconnects. */
export const REBALANCE_BATCH = 8

export function createRoster({
  kv,
  supervisorId,
  log,
}: {
  kv: KvBucket
  supervisorId: string
  log: Logger
}): Roster {
  const key = supervisorId.replace(/[^A-Za-z0-9_-]/g, '_')
  validateKvKey(key)
  let complained = false
  return {
    async announce() {
      try {
        await kv.put(key, new TextEncoder().encode(String(Date.now())))
        complained = false
      } catch (err) {
        if (!complained) log.warn({ err }, 'could not announce this supervisor in the roster')
        complained = true
      }
    },
    async count() {
      const keys = await kv.keys()
      return Math.max(1, keys.length + (keys.includes(key) ? 0 : 1))
    },
    async leave() {
      await kv.delete(key).catch(() => {})
    },
  }
}

/** The most bridges one replica should run: every Active bridge has a place, spread evenly. */
export function fairShare(activeBridges: number, replicas: number): number {
  return Math.ceil(activeBridges / Math.max(1, replicas))
}

/**
 * Which held bridges to hand back so this replica keeps at most `share`: the ones started last,
 * at most REBALANCE_BATCH of them.
 */
export function excessOf(held: readonly string[], share: number): string[] {
  const excess = held.length - share
  if (excess <= 0) return []
  return held.slice(held.length - Math.min(excess, REBALANCE_BATCH))
}
