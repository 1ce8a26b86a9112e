import * as nodeCrypto from 'node:crypto'
import { createHash, timingSafeEqual } from 'node:crypto'

/**
 * The one place that hashes and compares secrets: sha-256 for stored secrets (handshake secrets,
 * the admin token, the transition log's chain) and constant-time comparison for checking them.
 */

// One-shot `crypto.hash` (Node ≥ 20.12) is about twice as fast as createHash for short inputs,
// which matters when verifying 100,000 log rows; other runtimes may lack it.
const oneShot = (nodeCrypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash

/** sha-256 as hex: what an upstream server stores of a downstream's secret, and of the admin token. */
export function sha256Hex(text: string): string {
  return oneShot ? oneShot('sha256', text, 'hex') : createHash('sha256').update(text).digest('hex')
}

/** sha-256 as base64: a short key that stands for a secret in a cache without holding it. */
export function sha256Base64(text: string): string {
  return createHash('sha256').update(text).digest('base64')
}

/**
 * Are two secrets (or two hex digests) the same? Both are hashed to 32 bytes first, so the
 * comparison takes the same time whatever their lengths or contents. Empty never matches.
 */
export function sameSecret(a: string, b: string): boolean {
  if (!a || !b) return false
  const x = createHash('sha256').update(a).digest()
  const y = createHash('sha256').update(b).digest()
  return timingSafeEqual(x, y)
}

/** Are two hex digests the same? Case-insensitive, constant time. */
export function sameDigest(aHex: string, bHex: string): boolean {
  return sameSecret(aHex.toLowerCase(), bHex.toLowerCase())
}

/** Does `given` hash to `expectedHex`? Constant time. */
export function matchesHash(given: string, expectedHex: string): boolean {
  return sameDigest(sha256Hex(given), expectedHex)
}
