import { randomBytes } from 'node:crypto'

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
const UNBIASED_LIMIT = 248 // 4 × 62: bytes at or above it are dropped, so every character is equally likely

/** `n` random base62 characters from node:crypto. */
export function randomBase62(n: number): string {
  let out = ''
  while (out.length < n) {
    for (const byte of randomBytes(n * 2)) {
      if (byte >= UNBIASED_LIMIT) continue
      out += BASE62[byte % 62]
      if (out.length === n) break
    }
  }
  return out
}

const ID_CHARS = 12 // 62^12 ≈ 3·10^21: collisions are not a practical concern

export const newUpstreamId = (): string => `up_${randomBase62(ID_CHARS)}`
export const newRequestId = (): string => `rq_${randomBase62(ID_CHARS)}`
/** `UB_` and six base62 characters, e.g. `UB_ARJgkJ` (ARCHITECTURE.md §11). */
export const newInstanceId = (): string => `UB_${randomBase62(6)}`
