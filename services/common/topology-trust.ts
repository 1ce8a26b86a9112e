import { verifySignature } from './instance-key.ts'
import { advertPayload, isLive, type StoredAdvert } from './topology.ts'

/**
 * Which received adverts a receiver believes (ARCHITECTURE.md §9): only an origin can speak for
 * itself. An advert for origin X counts only when signed with X's key as the receiver knows it:
 *
 * - **directly**: keys learned in the handshake. The receiver's own advert lists its neighbours'
 *   keys (it signs them), and an exchange adds the key of the peer it is talking to;
 * - **relayed**: a believed advert vouches for the keys of its origin's neighbours. Keys are
 *   resolved breadth first from the receiver, so a key learned closer (fewer vouching hops) wins,
 *   and the first key for an instance is never replaced by a farther voucher.
 *
 * An advert claiming the receiver is never taken (our own coming back is an echo, not counted).
 * Versions are the origin's clock in ms (`originate` in the supervisor's mesh), so a version is
 * believed only within `skewMs` of the receiver's clock: no later than now + skew, and no older
 * than its lifetime + skew (which also caps how far a relay can stretch a copy's life by
 * understating its age). A forged 2^53 cannot block a real origin for a day.
 */
export type RejectReason = 'unsigned' | 'bad_signature' | 'unknown_origin' | 'self' | 'version'

export interface TrustInput {
  self: string
  /** Our own public key: our adverts coming back are recognised as echoes. */
  selfKey: string
  /** Keys the caller learned directly (the peer of this exchange), by instance id. */
  direct: ReadonlyMap<string, string>
  /** What the database holds now (already believed when it was merged). */
  stored: readonly StoredAdvert[]
  incoming: readonly StoredAdvert[]
  now: number
  skewMs: number
}

export interface TrustVerdict {
  accepted: StoredAdvert[]
  rejected: Partial<Record<RejectReason, number>>
}

const signedBy = (ad: StoredAdvert, key: string | undefined): boolean =>
  !!key && !!ad.signature && verifySignature(key, advertPayload(ad), ad.signature)

export function versionInWindow(ad: StoredAdvert, now: number, skewMs: number): boolean {
  return ad.version <= now + skewMs && ad.version >= now - ad.maxAgeMs - skewMs
}

export function judgeAdverts(input: TrustInput): TrustVerdict {
  const { self, selfKey, direct, stored, incoming, now, skewMs } = input
  const rejected: TrustVerdict['rejected'] = {}
  const reject = (why: RejectReason) => (rejected[why] = (rejected[why] ?? 0) + 1)
  const known = new Map<string, string>([[self, selfKey]])
  const learn = (id: string, key: string) => {
    if (!known.has(id)) known.set(id, key)
  }
  const own = stored.find((a) => a.origin === self && signedBy(a, selfKey))
  for (const [id, key] of Object.entries(own?.keys ?? {})) learn(id, key)
  for (const [id, key] of direct) learn(id, key)

  // Breadth first: each round believes the adverts whose origin's key is known, then learns the
  // keys they vouch for. Stored adverts vouch too (re-checked: a key may have changed).
  const byOrigin = (p: StoredAdvert, q: StoredAdvert) =>
    p.origin < q.origin ? -1 : p.origin > q.origin ? 1 : q.version - p.version
  let pending = [...incoming].sort(byOrigin)
  let vouchers = stored.filter((a) => a.origin !== self && isLive(a, now)).sort(byOrigin)
  const accepted: StoredAdvert[] = []
  for (let progress = true; progress;) {
    progress = false
    const believed: StoredAdvert[] = []
    vouchers = vouchers.filter((a) => {
      if (!known.has(a.origin)) return true
      if (signedBy(a, known.get(a.origin))) believed.push(a)
      return false
    })
    const waiting: StoredAdvert[] = []
    for (const ad of pending) {
      if (ad.origin === self) {
        if (!signedBy(ad, selfKey)) reject('self') // our own echo is not counted
        continue
      }
      const key = known.get(ad.origin)
      if (!key) waiting.push(ad)
      else if (!ad.signature) reject('unsigned')
      else if (!signedBy(ad, key)) reject('bad_signature')
      else if (!versionInWindow(ad, now, skewMs)) reject('version')
      else {
        accepted.push(ad)
        believed.push(ad)
      }
    }
    progress = waiting.length < pending.length
    pending = waiting
    for (const ad of believed) {
      for (const [id, key] of Object.entries(ad.keys ?? {})) {
        if (ad.neighbours.includes(id) && !known.has(id)) {
          known.set(id, key)
          progress = true
        }
      }
    }
  }
  for (const ad of pending) reject(ad.signature ? 'unknown_origin' : 'unsigned')
  return { accepted, rejected }
}
