import { randomBytes } from 'node:crypto'
import type { Bus } from './bus/bus.ts'
import { KvConflictError } from './errors.ts'

/**
 * The credential a bridge supervisor presents to its own fabric's gateways (username
 * INTERNAL_USERNAME). It lives in the bus's KV, which only the fabric's own services reach:
 * the first service that needs it creates it, the rest read it (create is compare-and-set).
 */
export const INTERNAL_USERNAME = 'ub-internal'
export const INTERNAL_BUCKET = 'internal'
const KEY = 'credential'

export async function internalCredential(bus: Bus): Promise<string> {
  const kv = await bus.kv(INTERNAL_BUCKET)
  const existing = await kv.get(KEY)
  if (existing) return new TextDecoder().decode(existing.value)
  const secret = randomBytes(24).toString('base64url')
  try {
    await kv.create(KEY, new TextEncoder().encode(secret))
    return secret
  } catch (err) {
    if (!(err instanceof KvConflictError)) throw err
    const winner = await kv.get(KEY)
    if (!winner) throw err
    return new TextDecoder().decode(winner.value)
  }
}
