import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto'
import type { KeyObject } from 'node:crypto'
import { decodeJson, encodeJson, type Bus } from './bus/bus.ts'
import { KvConflictError } from './errors.ts'
import { INTERNAL_BUCKET } from './internal-credential.ts'

/**
 * This instance's Ed25519 key, with which it signs its mesh topology adverts (ARCHITECTURE.md §9):
 * only an origin can speak for itself. One key per instance, shared by its replicas: it lives in
 * the bus's `internal` bucket next to the internal credential (the first service that needs it
 * makes it, compare-and-set), which only the fabric's own services reach. At rest that is the
 * embedded bus journal in `<dataDir>/bus` (0600 in a 0700 folder), or JetStream's storage in a
 * distributed fabric. The public half travels in the handshake; peers pin it.
 */
const KEY = 'instance-key'
/** An Ed25519 public key as it travels: the raw 32 bytes in base64url (a JWK's `x`). */
export const PUBLIC_KEY_PATTERN = /^[A-Za-z0-9_-]{43}$/

export interface InstanceKey {
  publicKey: string
  /** Ed25519 signature of `data`, base64url. */
  sign(data: Uint8Array): string
}

interface StoredKey {
  x: string
  d: string
}

function fromStored({ x, d }: StoredKey): InstanceKey {
  const key: KeyObject = createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', x, d },
    format: 'jwk',
  })
  return { publicKey: x, sign: (data) => sign(null, data, key).toString('base64url') }
}

function generate(): StoredKey {
  const { privateKey } = generateKeyPairSync('ed25519')
  const jwk = privateKey.export({ format: 'jwk' })
  return { x: jwk.x!, d: jwk.d! }
}

const cache = new WeakMap<Bus, Promise<InstanceKey>>()

/** The instance's key: read from the bus, or made once and kept there. */
export function instanceKey(bus: Bus): Promise<InstanceKey> {
  let key = cache.get(bus)
  if (!key) {
    key = loadOrCreate(bus)
    key.catch(() => cache.delete(bus)) // a bus that was not up yet is asked again next time
    cache.set(bus, key)
  }
  return key
}

async function loadOrCreate(bus: Bus): Promise<InstanceKey> {
  const kv = await bus.kv(INTERNAL_BUCKET)
  const existing = await kv.get(KEY)
  if (existing && existing.operation === 'PUT')
    return fromStored(decodeJson<StoredKey>(existing.value))
  const made = generate()
  try {
    await kv.create(KEY, encodeJson(made))
    return fromStored(made)
  } catch (err) {
    if (!(err instanceof KvConflictError)) throw err
    const winner = await kv.get(KEY)
    if (!winner) throw err
    return fromStored(decodeJson<StoredKey>(winner.value))
  }
}

const publicKeys = new Map<string, KeyObject | null>()
const MAX_CACHED_KEYS = 10_000

/** Does `signature` (base64url) sign `data` under `publicKey`? False for anything malformed. */
export function verifySignature(publicKey: string, data: Uint8Array, signature: string): boolean {
  let key = publicKeys.get(publicKey)
  if (key === undefined) {
    try {
      key = PUBLIC_KEY_PATTERN.test(publicKey)
        ? createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: publicKey }, format: 'jwk' })
        : null
    } catch {
      key = null
    }
    if (publicKeys.size >= MAX_CACHED_KEYS) publicKeys.clear()
    publicKeys.set(publicKey, key)
  }
  if (!key) return false
  try {
    return verify(null, data, key, Buffer.from(signature, 'base64url'))
  } catch {
    return false
  }
}

/**
 * Peers' public keys as learned in the handshake (bucket `peer-keys`): `req.<request id>` on the
 * upstream server (sent with the request), `up.<upstream id>` on the downstream (answered by the
 * server). The first key learned is kept (trust on first use): a later answer with another key is
 * refused, so a key cannot be swapped under a live link.
 */
export const PEER_KEYS_BUCKET = 'peer-keys'

export interface PeerKey {
  instanceId: string
  publicKey: string
}

export const requestKeyId = (requestId: string) => `req.${requestId}`
export const upstreamKeyId = (upstreamId: string) => `up.${upstreamId}`

export async function readPeerKey(bus: Bus, id: string): Promise<PeerKey | undefined> {
  const entry = await (await bus.kv(PEER_KEYS_BUCKET)).get(id)
  if (!entry || entry.operation !== 'PUT') return undefined
  try {
    return decodeJson<PeerKey>(entry.value)
  } catch {
    return undefined
  }
}

/** Keep `key` under `id` unless one is kept already; returns the one kept. */
export async function pinPeerKey(bus: Bus, id: string, key: PeerKey): Promise<PeerKey> {
  if (!PUBLIC_KEY_PATTERN.test(key.publicKey)) throw new Error('not an Ed25519 public key')
  try {
    await (await bus.kv(PEER_KEYS_BUCKET)).create(id, encodeJson(key))
    return key
  } catch (err) {
    if (!(err instanceof KvConflictError)) throw err
    return (await readPeerKey(bus, id)) ?? key
  }
}

/** Forget a pinned key (the upstream or request is gone). */
export async function forgetPeerKey(bus: Bus, id: string): Promise<void> {
  await (await bus.kv(PEER_KEYS_BUCKET)).delete(id)
}
