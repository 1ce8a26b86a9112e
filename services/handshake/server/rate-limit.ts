import type { Context, MiddlewareHandler } from 'hono'
import { ApiError } from './errors.ts'

export interface BucketOptions {
  /** Sustained rate: tokens added per minute. */
  perMinute: number
  /** Bucket size: how many requests may come at once after a quiet spell. */
  burst: number
  now?: () => number
  /** Keys remembered at most; the oldest are forgotten first, so a flood of addresses cannot exhaust memory. */
  maxKeys?: number
  /** Counters: a key forgotten to stay within `maxKeys`; the map's size. */
  onEvicted?: () => void
  onSize?: (size: number) => void
}

export interface RateLimitOptions extends BucketOptions {
  key: (c: Context) => string
  /** Counts a refused request. */
  onLimited?: () => void
}

export const DEFAULT_RATE_PER_MINUTE = 10
export const DEFAULT_RATE_BURST = 20
const DEFAULT_MAX_KEYS = 10_000
const MS_PER_MINUTE = 60_000

interface Bucket {
  tokens: number
  at: number // ms timestamp of the last refill
}

/** A token bucket per key, in least-recently-seen order, bounded to `maxKeys`. */
export interface TokenBuckets {
  /** Whole seconds until `key` has a token again; 0 when it has one now. */
  waitS(key: string): number
  /** Spend one of `key`'s tokens (callers check `waitS` first). */
  spend(key: string): void
}

export function tokenBuckets({
  perMinute,
  burst,
  now = Date.now,
  maxKeys = DEFAULT_MAX_KEYS,
  onEvicted,
  onSize,
}: BucketOptions): TokenBuckets {
  const buckets = new Map<string, Bucket>()
  const perMs = perMinute / MS_PER_MINUTE
  const refill = (k: string): Bucket => {
    const t = now()
    const b = buckets.get(k) ?? { tokens: burst, at: t }
    b.tokens = Math.min(burst, b.tokens + (t - b.at) * perMs)
    b.at = t
    // Re-insert so Map order is least-recently-seen first.
    buckets.delete(k)
    buckets.set(k, b)
    if (buckets.size > maxKeys) {
      buckets.delete(buckets.keys().next().value!)
      onEvicted?.()
    }
    onSize?.(buckets.size)
    return b
  }
  return {
    waitS(k) {
      const b = refill(k)
      return b.tokens >= 1 ? 0 : Math.ceil((1 - b.tokens) / perMs / 1_000)
    },
    spend(k) {
      refill(k).tokens -= 1
    },
  }
}

/**
 * A token bucket per key (the source network, `networkKey`): over the limit → 429
 * `rate_limited` with Retry-After. A forgotten key starts full again, which is why the map is
 * large: an attacker must cycle through more networks than it holds to gain anything.
 */
export function rateLimit({ key, onLimited, ...options }: RateLimitOptions): MiddlewareHandler {
  const buckets = tokenBuckets(options)
  return async function rateLimited(c, next) {
    const k = key(c)
    const waitS = buckets.waitS(k)
    if (waitS > 0) {
      onLimited?.()
      c.header('Retry-After', String(waitS))
      throw new ApiError(
        429,
        'rate_limited',
        `too many handshake requests from ${k}; retry in ${waitS} s`
      )
    }
    buckets.spend(k)
    await next()
  }
}
