import { randomBytes } from 'node:crypto'

export { matchesHash, sameDigest, sha256Hex } from '../common/digest.ts'

const SECRET_BYTES = 32 // 256 bits: guessing one over HTTP is hopeless, so status polls need no rate limit

/** A fresh handshake secret: 32 random bytes, base64url. It never leaves this instance in clear. */
export function makeSecret(): string {
  return randomBytes(SECRET_BYTES).toString('base64url')
}
