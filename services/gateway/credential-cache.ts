/**
 * Recent authentication answers, accepted and refused, so a reconnect storm or a repeated bad
 * password costs one store query or one scrypt, not one each. Keyed by an HMAC of username and
 * password under a key made at start: the cache never holds a password, nor a digest anyone
 * could test guesses against offline.
 */
import { createHmac, randomBytes } from 'node:crypto'

export interface CachedAnswer<P> {
  /** The principal, or null for a refusal. */
  principal: P | null
  until: number
}

export function createCredentialCache<P>({
  ttlMs,
  maxEntries,
}: {
  ttlMs: number
  maxEntries: number
}) {
  const key = randomBytes(32)
  const entries = new Map<string, CachedAnswer<P>>()
  const counts = { hits: 0, evictions: 0 }
  return {
    counts,
    digest(username: string, password: string): string {
      return createHmac('sha256', key)
        .update(username)
        .update('\0')
        .update(password)
        .digest('base64')
    },
    get(digest: string): CachedAnswer<P> | undefined {
      const hit = entries.get(digest)
      if (!hit) return undefined
      if (hit.until <= Date.now()) {
        entries.delete(digest)
        return undefined
      }
      counts.hits++
      return hit
    },
    set(digest: string, principal: P | null): void {
      if (ttlMs <= 0 || maxEntries <= 0) return
      entries.delete(digest)
      while (entries.size >= maxEntries) {
        // Oldest first: insertion order is expiry order, as every entry lives ttlMs.
        entries.delete(entries.keys().next().value as string)
        counts.evictions++
      }
      entries.set(digest, { principal, until: Date.now() + ttlMs })
    },
    /** Forget everything: a grant changed, so no earlier answer may be reused. */
    clear(): void {
      entries.clear()
    },
    get size() {
      return entries.size
    },
  }
}

export type CredentialCache<P> = ReturnType<typeof createCredentialCache<P>>
