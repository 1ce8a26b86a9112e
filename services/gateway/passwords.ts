import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto'

/**
 * Local MQTT user passwords, stored as `scrypt$N$r$p$<salt b64url>$<hash b64url>`. The default
 * cost is N=2^15, r=8, p=1 (OWASP's scrypt minimum is N=2^17 with p=1 for interactive logins
 * at ~100 ms; 2^15 keeps a reconnect storm of many clients affordable and is what node's docs
 * show as the default ceiling without raising maxmem).
 */
export const SCRYPT_DEFAULTS = { N: 2 ** 15, r: 8, p: 1 } as const
const KEY_BYTES = 32
const SALT_BYTES = 16
const MAXMEM_BYTES = 256 * 1024 * 1024 // 256 MiB: room for N up to 2^17 with r=8

function derive(password: string, salt: Buffer, o: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, KEY_BYTES, { ...o, maxmem: MAXMEM_BYTES }, (err, key) =>
      err ? reject(err) : resolve(key)
    )
  )
}

/** Hash a password for the `users` config key. */
export async function hashPassword(password: string, cost = SCRYPT_DEFAULTS): Promise<string> {
  const salt = randomBytes(SALT_BYTES)
  const key = await derive(password, salt, cost)
  return [
    'scrypt',
    cost.N,
    cost.r,
    cost.p,
    salt.toString('base64url'),
    key.toString('base64url'),
  ].join('$')
}

/** Constant-time check of a password against a stored hash; a malformed hash never matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false
  const [N, r, p] = parts.slice(1, 4).map(Number)
  if (!N || !r || !p) return false
  const expected = Buffer.from(parts[5]!, 'base64url')
  const key = await derive(password, Buffer.from(parts[4]!, 'base64url'), { N, r, p })
  return key.length === expected.length && timingSafeEqual(key, expected)
}
