import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

const SECRET_BYTES = 32 // 256 bits: guessing one over HTTP is hopeless, so status polls need no rate limit

/** A fresh handshake secret: 32 random bytes, base64url. It never leaves this instance in clear. */
export function makeSecret(): string {
  return randomBytes(SECRET_BYTES).toString('base64url')
}

/** sha-256 hex: what the upstream server stores, and what the admin token hash is. */
export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}

/** Does `given` hash to `expectedHex`? Constant time, as `sameDigest`. */
export function matchesHash(given: string, expectedHex: string): boolean {
  return sameDigest(sha256Hex(given), expectedHex)
}

/**
 * Are two hex digests the same? Both are hashed (again) to 32 bytes first, so the comparison
 * takes the same time whatever the inputs' lengths or contents.
 */
export function sameDigest(aHex: string, bHex: string): boolean {
  const a = createHash('sha256').update(aHex.toLowerCase()).digest()
  const b = createHash('sha256').update(bHex.toLowerCase()).digest()
  return timingSafeEqual(a, b)
}
