import { decodeJson, encodeJson, type KvBucket } from '../common/bus/bus.ts'
import { KvConflictError } from '../common/errors.ts'

/**
 * One owner per bridge (ARCHITECTURE.md §13): a key per upstream in a KV bucket whose max age is
 * the lease TTL. `create` claims it, `update(revision)` renews it every TTL/3, and the revision is
 * the fencing token: an owner whose renewal is refused has lost the bridge and stops at once. On
 * NATS 2.9 an expiry emits no watch event, so standbys simply try `create` on every tick.
 */
export interface Lease {
  owner: string
  at: string
}

export interface LeaseManager {
  /** Claim the lease; true when this supervisor now holds it. */
  acquire(id: string): Promise<boolean>
  /** Renew a held lease; false when it was lost (refused CAS), after which it is not held. */
  renew(id: string): Promise<boolean>
  /**
   * Held and recently renewed. A supervisor that cannot reach the bus fences itself: it stops
   * before the key can expire and another supervisor can claim it.
   */
  holds(id: string): boolean
  /** When `holds` turns false unless a renewal lands first (ms, this clock); undefined if not held. */
  fenceAt(id: string): number | undefined
  /** The revision of the held lease: the fencing token. */
  token(id: string): number | undefined
  release(id: string): Promise<void>
  held(): string[]
}

interface Held {
  revision: number
  renewedAt: number
}

export function createLeaseManager({
  kv,
  owner,
  ttlMs,
  now = Date.now,
}: {
  kv: KvBucket
  owner: string
  ttlMs: number
  now?: () => number
}): LeaseManager {
  const leases = new Map<string, Held>()
  // Stop a little before the key can expire: the clocks that measure the TTL (the server's) and
  // the renewal (ours) are not the same, and the last write may have taken a while to land.
  const fenceAfterMs = Math.floor((ttlMs * 5) / 6)
  const value = () => encodeJson({ owner, at: new Date(now()).toISOString() } satisfies Lease)

  return {
    async acquire(id) {
      if (leases.has(id)) return this.renew(id)
      const started = now()
      try {
        const revision = await kv.create(id, value())
        leases.set(id, { revision, renewedAt: started })
        return true
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err
      }
      // Our own lease from before a restart (same supervisorId): adopt it with a CAS.
      const entry = await kv.get(id)
      if (!entry || entry.operation !== 'PUT' || decodeJson<Lease>(entry.value).owner !== owner) {
        return false
      }
      try {
        const revision = await kv.update(id, value(), entry.revision)
        leases.set(id, { revision, renewedAt: started })
        return true
      } catch (err) {
        if (err instanceof KvConflictError) return false
        throw err
      }
    },
    async renew(id) {
      const held = leases.get(id)
      if (!held) return false
      const started = now()
      try {
        held.revision = await kv.update(id, value(), held.revision)
        held.renewedAt = started
        return true
      } catch (err) {
        if (err instanceof KvConflictError) {
          leases.delete(id)
          return false
        }
        // The bus is unreachable: keep trying until `holds` says the lease may have run out.
        return this.holds(id)
      }
    },
    holds(id) {
      const held = leases.get(id)
      return held !== undefined && now() - held.renewedAt < fenceAfterMs
    },
    fenceAt(id) {
      const held = leases.get(id)
      return held && held.renewedAt + fenceAfterMs
    },
    token: (id) => leases.get(id)?.revision,
    async release(id) {
      const held = leases.get(id)
      leases.delete(id)
      if (!held) return
      // Delete only if it is still ours: a CAS to an empty value, then the delete. A lease we
      // lost meanwhile belongs to someone else and must stay.
      try {
        await kv.update(id, new Uint8Array(), held.revision)
        await kv.delete(id)
      } catch (err) {
        if (!(err instanceof KvConflictError)) throw err
      }
    },
    held: () => [...leases.keys()],
  }
}

export interface LeaseRenewal {
  stop(): void
}

/**
 * Leases renew on their own timer, never behind the reconcile loop: that loop waits on the
 * store (up to its 5 s timeout) and on the gateway, longer than a lease lives, and a lease must
 * not expire because a store call was slow. A lease lost here is handed to `onLost` at once, which
 * stops its link (the fence); the reconcile loop then tidies up.
 */
export function startLeaseRenewal<T>({
  leases,
  held,
  everyMs,
  isClosed,
  onLost,
  now = Date.now,
}: {
  leases: LeaseManager
  /** What runs under a lease now, by upstream id. */
  held: () => Iterable<readonly [string, T]>
  /** Renew at least this often, ms: a third of the TTL. */
  everyMs: number
  isClosed: () => boolean
  onLost: (id: string, what: T) => Promise<void>
  now?: () => number
}): LeaseRenewal {
  // One renewal per lease at a time, each on its own: a renewal stuck on the bus must neither
  // hold back the others nor the fence below.
  const renewing = new Set<string>()
  // The fence runs on our own clock, whatever the renewals are doing: a timer per held lease at
  // the moment `holds` turns false (5/6 of the TTL after the last renewal that succeeded).
  const fences = new Map<string, NodeJS.Timeout>()
  const fenced = new Set<string>()

  function lost(id: string, what: T): void {
    if (fenced.has(id)) return
    fenced.add(id)
    clearTimeout(fences.get(id))
    fences.delete(id)
    void onLost(id, what)
      .catch(() => {})
      .finally(() => fenced.delete(id))
  }

  function arm(id: string, what: T): void {
    const at = leases.fenceAt(id)
    clearTimeout(fences.get(id))
    if (at === undefined) return void fences.delete(id)
    const timer = setTimeout(
      () => {
        fences.delete(id)
        if (isClosed()) return
        if (leases.holds(id)) arm(id, what)
        else lost(id, what)
      },
      Math.max(0, at - now())
    )
    timer.unref?.()
    fences.set(id, timer)
  }

  function tick(): void {
    if (isClosed()) return
    const current = new Map(held())
    for (const id of fences.keys()) {
      if (!current.has(id)) {
        clearTimeout(fences.get(id))
        fences.delete(id)
      }
    }
    for (const [id, what] of current) {
      if (!leases.holds(id)) {
        lost(id, what)
        continue
      }
      arm(id, what)
      if (renewing.has(id)) continue // still stuck: the fence decides, not the renewal
      renewing.add(id)
      // A failed renewal of a lease that has not expired yet is tried again next tick.
      void leases
        .renew(id)
        .catch(() => false)
        .then(() => {
          renewing.delete(id)
          if (isClosed()) return
          if (leases.holds(id)) arm(id, what)
          else lost(id, what)
        })
    }
  }
  const timer = setInterval(tick, everyMs)
  return {
    stop: () => {
      clearInterval(timer)
      for (const t of fences.values()) clearTimeout(t)
      fences.clear()
    },
  }
}
