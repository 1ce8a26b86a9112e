import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import type { Db } from '../../db/client.ts'
import { ConfigError, StorageError } from '../common/errors.ts'

/**
 * Secrets at rest: the upstream secret (our MQTT password to an upstream) and a client TLS
 * private key are sealed with AES-256-GCM before they reach the database, so a dump, a backup
 * or a replica of the database alone does not give them away.
 *
 * A sealed value is the text `ubs1:<key number>:<base64url of nonce ‖ ciphertext ‖ tag>`: a
 * random 96-bit nonce per value; the key number says which key sealed it, so keys can rotate
 * (`secretKeysRetired` still opens old values, and the store reseals them at start); the
 * authenticated data is the table, column and row id, so a value copied to another row or
 * column does not open. Text without the prefix is a value written before sealing existed: it
 * reads as it is, and the start-up pass (seal-rows.ts) seals it.
 */
const PREFIX = 'ubs1:'
const NONCE_BYTES = 12
const TAG_BYTES = 16

export interface Keyring {
  /** The key number new values are sealed with. */
  current: number
  keys: ReadonlyMap<number, Buffer>
}

/** Where a sealed value lives: its authenticated data. */
export type SealedField = 'upstreams.secret' | 'upstreams.tls.key'

/**
 * The keyring from config strings: `secretKey` seals and opens, `secretKeysRetired` only opens.
 * Each is 32 bytes of base64 (or base64url), optionally `<number>:` first; without a number a
 * key is number 1.
 */
export function parseKeyring(secretKey: string, retired: readonly string[] = []): Keyring {
  const keys = new Map<number, Buffer>()
  const add = (text: string, name: string): number => {
    const colon = text.indexOf(':')
    const id = colon === -1 ? 1 : Number(text.slice(0, colon))
    const key = Buffer.from(text.slice(colon + 1), 'base64')
    if (!Number.isInteger(id) || id < 1 || key.length !== 32) {
      throw new ConfigError(name, 'must be 32 random bytes in base64, optionally after `<n>:`')
    }
    if (keys.has(id) && !keys.get(id)!.equals(key)) {
      throw new ConfigError(name, `holds key number ${id} twice with different keys`)
    }
    keys.set(id, key)
    return id
  }
  const current = add(secretKey, 'secretKey')
  for (const r of retired) add(r, 'secretKeysRetired')
  return { current, keys }
}

export const isSealed = (value: string): boolean => value.startsWith(PREFIX)

/** The key number a sealed value names, or null for a plaintext one. */
export function sealedWith(value: string): number | null {
  if (!isSealed(value)) return null
  return Number(value.slice(PREFIX.length, value.indexOf(':', PREFIX.length)))
}

const aad = (field: SealedField, rowId: string) => Buffer.from(`${field}\u0000${rowId}`, 'utf8')

export function seal(ring: Keyring, field: SealedField, rowId: string, plaintext: string): string {
  const nonce = randomBytes(NONCE_BYTES)
  const cipher = createCipheriv('aes-256-gcm', ring.keys.get(ring.current)!, nonce)
  cipher.setAAD(aad(field, rowId))
  const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()])
  const sealed = Buffer.concat([nonce, body, cipher.getAuthTag()]).toString('base64url')
  return `${PREFIX}${ring.current}:${sealed}`
}

/**
 * Open a sealed value (plaintext from before sealing passes through). A value that does not open
 * is a StorageError naming the key to set: the wrong `secretKey`, or a value moved between rows.
 */
export function unseal(
  ring: Keyring | undefined,
  field: SealedField,
  rowId: string,
  value: string
): string {
  if (!isSealed(value)) return value
  const id = sealedWith(value)!
  const key = ring?.keys.get(id)
  const where = `${field} of ${rowId}`
  if (ring === undefined) {
    throw new StorageError(`${where} is sealed, and the store was started without secretKey`)
  }
  if (key === undefined) {
    throw new StorageError(
      `${where} is sealed with key number ${id}, which neither secretKey nor secretKeysRetired ` +
        `holds (UB_SECRET_KEY, UB_SECRET_KEYS_RETIRED)`
    )
  }
  const raw = Buffer.from(value.slice(value.indexOf(':', PREFIX.length) + 1), 'base64url')
  try {
    if (raw.length < NONCE_BYTES + TAG_BYTES) throw new Error('too short')
    const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, NONCE_BYTES))
    decipher.setAAD(aad(field, rowId))
    decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES))
    const body = raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)
    return Buffer.concat([decipher.update(body), decipher.final()]).toString('utf8')
  } catch {
    // GCM says only "does not authenticate": the key is not the one that sealed it, or the
    // value was changed or copied from another row.
    throw new StorageError(
      `${where} does not open with key number ${id} of secretKey (UB_SECRET_KEY): the key is ` +
        `not the one it was sealed with, or the value was altered or copied from another row`
    )
  }
}

// The keyring of each database handle, set once by `startStore`: the reads and writes that
// touch sealed columns find it here instead of threading it through every store verb.
const rings = new WeakMap<Db, Keyring>()

export function useKeyring(db: Db, ring: Keyring | undefined): void {
  if (ring) rings.set(db, ring)
  else rings.delete(db)
}

export const keyringOf = (db: Db): Keyring | undefined => rings.get(db)

/** Seal for writing when the store has a key; without one (Postgres, no secretKey) as given. */
export function sealIfKeyed(
  db: Db,
  field: SealedField,
  rowId: string,
  plaintext: string | null | undefined
): string | null {
  if (plaintext === null || plaintext === undefined) return null
  const ring = keyringOf(db)
  return ring ? seal(ring, field, rowId, plaintext) : plaintext
}

/** TLS options as stored: the private key sealed, the rest (public material) as it is. */
export function sealTls<T extends { key?: string | undefined }>(db: Db, rowId: string, tls: T): T {
  if (tls.key === undefined) return tls
  return { ...tls, key: sealIfKeyed(db, 'upstreams.tls.key', rowId, tls.key)! }
}

export function unsealTls<T extends { key?: string | undefined }>(
  db: Db | undefined,
  rowId: string,
  tls: T
): T {
  if (tls.key === undefined) return tls
  const ring = db === undefined ? undefined : keyringOf(db)
  return { ...tls, key: unseal(ring, 'upstreams.tls.key', rowId, tls.key) }
}
